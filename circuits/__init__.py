# Fourier structure and progress measures of modular-addition models (Nanda et al. 2023).
from circuits.fourier import (
    fourier_basis,
    fourier_spectrum,
    key_frequencies,
    modadd_answers,
    modadd_inputs,
    neuron_frequencies,
)
from circuits.phases import GrokkingPhases, grokking_phases
from circuits.progress import FourierReport, fourier_report, progress_measures

# Previous-token and induction heads (Olsson et al. 2022; Elhage et al. 2021).
from circuits.ablation import ablation_scores
from circuits.attention import attention_pattern, prefix_matching_scores, previous_token_scores
from circuits.composition import composition_scores
from circuits.copying import copying_scores, ov_copying_scores
from circuits.induction import induction_heads
from circuits.in_context import icl_score_from_losses, in_context_learning_score, per_token_loss
from circuits.probes import repeated_tokens
from circuits.repeat_loss import repeated_token_loss

# Implicit reasoning (Wang et al. 2024): logit lens (nostalgebraist 2020), causal tracing (Meng et al. 2022),
# linear probes (Alain & Bengio 2016).
from circuits.causal_tracing import CausalTrace, causal_trace
from circuits.linear_probe import LinearProbe, fit_linear_probe, probe_score, residual_states_at
from circuits.logit_lens import LogitLens, logit_lens

# Circuit discovery: edge attribution patching (Syed et al. 2023; Hanna et al. 2024) checked against exact
# edge patching, circuits and their faithfulness.
from circuits.edge_attribution import edge_attribution, edge_attribution_refusal
from circuits.faithfulness import CircuitMetrics, FoundCircuit, circuit_faithfulness, circuit_metrics, faithfulness_curve, \
    prune_circuit, smallest_circuit, top_edges
from circuits.induction_contrast import SecondCopyLoss, induction_contrast, second_copy_losses

# Thread policy shared with interp: small CPU work on one intra-op thread.
from circuits._parallel import one_thread

# Model checks shared with interp: the parameters holding a NaN or an infinity.
from circuits._checks import nonfinite_parameters

__all__ = [
    # heads
    "ablation_scores",
    "attention_pattern",
    "composition_scores",
    "copying_scores",
    "icl_score_from_losses",
    "in_context_learning_score",
    "induction_heads",
    "ov_copying_scores",
    "per_token_loss",
    "prefix_matching_scores",
    "previous_token_scores",
    "repeated_token_loss",
    "repeated_tokens",
    # Fourier
    "FourierReport",
    "GrokkingPhases",
    "fourier_basis",
    "fourier_report",
    "fourier_spectrum",
    "grokking_phases",
    "key_frequencies",
    "modadd_answers",
    "modadd_inputs",
    "neuron_frequencies",
    "progress_measures",
    # reasoning
    "CausalTrace",
    "LinearProbe",
    "LogitLens",
    "causal_trace",
    "fit_linear_probe",
    "logit_lens",
    "probe_score",
    "residual_states_at",
    # circuits
    "CircuitMetrics",
    "FoundCircuit",
    "SecondCopyLoss",
    "circuit_faithfulness",
    "circuit_metrics",
    "edge_attribution",
    "edge_attribution_refusal",
    "faithfulness_curve",
    "induction_contrast",
    "prune_circuit",
    "second_copy_losses",
    "smallest_circuit",
    "top_edges",
    # thread policy
    "one_thread",
    # model checks
    "nonfinite_parameters",
]
