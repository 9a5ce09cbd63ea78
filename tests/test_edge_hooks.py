"""Edge attribution on a model carrying hooks of the caller's own (circuits/edge_attribution.py).

A hook of the caller's is part of the model: an edge is patched (``exact``, the faithfulness
runs) or read (``eap``, ``eap-ig``) where its input enters the graph, before the caller's hook at
that point, which then transforms the patched input as it transforms the clean one. The
references here are written apart from the code under test: a central finite difference of the
metric along one source's difference, added to one input by a hook that runs before the caller's
(``add_hook(..., prepend=True)``), and single-edge patched runs (``patched_metrics``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits import circuit_metrics, edge_attribution
from circuits._edge_graph import build_graph, run_sources, split_inputs
from circuits._edge_patching import patched_metrics
from handbuilt_models import offset_biases_and_gains, random_model

SHAPE = dict(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=20, n_ctx=8, dtype=torch.float64)


def tokens_and_metric(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean, corrupted = torch.randint(0, 20, (3, 8), generator=gen), torch.randint(0, 20, (3, 8), generator=gen)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 2:].log_softmax(-1)[..., 3].mean()

    return clean, corrupted, metric


def caller_hooks(model, hooks) -> None:
    for name, hook in hooks:
        model.add_hook(name, hook, is_permanent=True)


def directional_derivative(model, clean, delta, hook_name, head, metric, eps=1e-4) -> float:
    """d metric / d t of the clean run with ``t * delta`` added to one input (head ``head`` of a
    q/k/v input, or an MLP's or the logits' input), before the caller's hooks there."""
    values = []
    for sign in (1, -1):
        def add(x, hook):
            x = x.clone()
            if head is None:
                x += sign * eps * delta
            else:
                x[:, :, head] += sign * eps * delta
            return x

        with split_inputs(model):
            model.add_hook(hook_name, add, prepend=True)
            try:
                with torch.no_grad():
                    values.append(float(metric(model(clean))))
            finally:
                model.reset_hooks(including_permanent=False)
    return (values[0] - values[1]) / (2 * eps)


def exact_against_single_edge_runs(model, clean, corrupted, metric):
    """``exact``'s scores, checked against the faithfulness runs of each edge alone patched."""
    graph = build_graph(model)
    exact = edge_attribution(model, clean, corrupted, metric, "exact")
    single = np.zeros((len(exact), len(graph.sources), len(graph.inputs)), dtype=bool)
    s_idx, i_idx = graph.edge_index()
    single[np.arange(len(exact)), s_idx, i_idx] = True
    with torch.no_grad():
        m_clean = float(metric(model(clean)))
    _, corrupted_out = run_sources(model, graph, corrupted)
    reference = np.asarray(patched_metrics(model, graph, clean, corrupted_out, single, metric)) - m_clean
    assert np.allclose(exact.score, reference, rtol=1e-9, atol=1e-12)
    return exact


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_eap_reads_each_input_before_the_callers_hooks(norm):
    # hooks between an input and its head (on hook_q, on the norm's scale) and on the input itself
    model = offset_biases_and_gains(random_model(normalization_type=norm, seed=4, **SHAPE))
    caller_hooks(model, [("blocks.1.attn.hook_q", lambda q, hook: 3 * q),
                         ("blocks.1.attn.hook_k", lambda k, hook: k + 0.1 * k ** 2),
                         ("blocks.1.ln1.hook_scale", lambda s, hook: 2 * s),
                         ("blocks.1.hook_resid_post", lambda x, hook: x + 0.2 * torch.tanh(x))])
    clean, corrupted, metric = tokens_and_metric()
    scores = edge_attribution(model, clean, corrupted, metric, "eap").set_index(["source", "target", "input"]).score
    graph = build_graph(model)
    deltas = run_sources(model, graph, corrupted, logits=False)[1] - run_sources(model, graph, clean)[1]
    checked = 0
    for (source, target, kind), score in scores.items():
        if target not in ("L1H0", "L1H1", "logits"):
            continue
        s = graph.sources.index(source)
        if target == "logits":
            name, head = "blocks.1.hook_resid_post", None
        else:
            name, head = f"blocks.1.hook_{kind}_input", int(target[-1])
        expected = directional_derivative(model, clean, deltas[s], name, head, metric)
        assert score == pytest.approx(expected, rel=1e-5, abs=1e-9), (source, target, kind)
        checked += 1
    assert checked == 2 * 3 * 4 + 7  # 4 sources into each q/k/v of layer 1; 7 into the logits


def test_exact_and_the_patched_runs_patch_before_the_callers_hooks():
    model = offset_biases_and_gains(random_model(seed=5, **SHAPE))

    def drop_head_0(x, hook):
        x = x.clone()
        x[:, :, 0] = 0.0
        return x

    # nonlinear hooks at the points exact restarts from (a second application would show) and one
    # that discards head 0's query input of layer 1 (so no edge into it can matter), which runs in
    # the caller's own forward too
    model.cfg.use_split_qkv_input = True
    caller_hooks(model, [("blocks.1.hook_resid_pre", lambda x, hook: x + 0.3 * torch.tanh(x)),
                         ("blocks.1.hook_resid_post", lambda x, hook: x + 0.2 * torch.tanh(x)),
                         ("blocks.1.hook_q_input", drop_head_0)])
    clean, corrupted, metric = tokens_and_metric(1)
    exact = exact_against_single_edge_runs(model, clean, corrupted, metric)
    into_dropped = (exact.target == "L1H0") & (exact.input == "q")
    assert into_dropped.sum() == 4 and (exact.score[into_dropped] == 0).all()
    assert exact.score[~into_dropped].abs().max() > 1e-3
    eap = edge_attribution(model, clean, corrupted, metric, "eap")
    assert (eap.score[into_dropped] == 0).all()
    everything = circuit_metrics(model, exact[["source", "target", "input"]], clean, corrupted, metric)
    assert everything.circuit == pytest.approx(everything.clean, rel=1e-12)


def test_hooks_the_split_inputs_would_skip_are_refused():
    model = random_model(**SHAPE)
    model.cfg.use_attn_in = True
    model.add_hook("blocks.1.hook_attn_in", lambda x, hook: 2 * x, is_permanent=True)
    clean, corrupted, metric = tokens_and_metric()
    for call in (lambda: edge_attribution(model, clean, corrupted, metric, "eap"),
                 lambda: circuit_metrics(model, [], clean, corrupted, metric)):
        with pytest.raises(ValueError, match="hooks on blocks.1.hook_attn_in would not run"):
            call()


@pytest.mark.parametrize("hooked", [False, True])
def test_a_metric_no_edge_reaches_scores_zero(hooked):
    model = random_model(**SHAPE)
    if hooked:  # a hook that cuts layer 0's heads off: their inputs take no part in the metric
        caller_hooks(model, [("blocks.0.attn.hook_pattern", lambda p, hook: torch.ones_like(p) / p.shape[-1])])
    clean, corrupted, metric = tokens_and_metric()
    for method in ("exact", "eap", "eap-ig"):
        nothing = edge_attribution(model, clean, corrupted, lambda logits: model.W_U.norm(), method)  # reads no logits
        assert (nothing.score.abs() < 1e-12).all(), method
        cut = edge_attribution(model, clean, corrupted, metric, method)
        into_layer_0 = cut.target.str.startswith("L0H") & cut.input.isin(["q", "k"])
        assert (cut.score[into_layer_0] == 0).all() == hooked, method


def test_a_norm_of_another_class_takes_autograds_product():
    # torch's own LayerNorm, or a subclass of TransformerLens's, in place of ln1: the closed-form
    # vector-Jacobian product (read by class) is not theirs; autograd's gives the scores
    model = offset_biases_and_gains(random_model(normalization_type="RMS", seed=6, **SHAPE))
    torch_ln = torch.nn.LayerNorm(16, dtype=torch.float64)
    with torch.no_grad():
        torch_ln.weight.copy_(torch.linspace(0.5, 1.5, 16))
    model.blocks[1].ln1 = torch_ln

    class Doubled(type(model.blocks[0].ln1)):
        def forward(self, x):
            return 2 * super().forward(x)

    model.blocks[0].ln1.__class__ = Doubled
    clean, corrupted, metric = tokens_and_metric(2)
    scores = edge_attribution(model, clean, corrupted, metric, "eap").set_index(["source", "target", "input"]).score
    graph = build_graph(model)
    deltas = run_sources(model, graph, corrupted, logits=False)[1] - run_sources(model, graph, clean)[1]
    for layer, source in ((0, "embed"), (1, "L0H1"), (1, "mlp0")):
        for head in range(2):
            for kind in "qkv":
                expected = directional_derivative(model, clean, deltas[graph.sources.index(source)],
                                                  f"blocks.{layer}.hook_{kind}_input", head, metric)
                got = scores[(source, f"L{layer}H{head}", kind)]
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), (source, layer, head, kind)


def test_hooks_that_write_in_place_and_their_contexts():
    # TransformerLens hooks usually write into their activation: a steering vector added to the
    # residual a restart begins from, a head's query input zeroed; the caller's hook.ctx is theirs
    model = offset_biases_and_gains(random_model(seed=7, **SHAPE))
    model.cfg.use_split_qkv_input = True
    steer = torch.linspace(-1, 1, 16, dtype=torch.float64)

    def steered(x, hook):
        hook.ctx["calls"] = hook.ctx.get("calls", 0) + 1
        x += steer

    def drop_head_0(x, hook):
        x[:, :, 0] = 0.0

    caller_hooks(model, [("blocks.1.hook_resid_pre", steered), ("blocks.1.hook_q_input", drop_head_0)])
    clean, corrupted, metric = tokens_and_metric(3)
    exact = exact_against_single_edge_runs(model, clean, corrupted, metric)
    into_dropped = (exact.target == "L1H0") & (exact.input == "q")
    for method in ("eap", "eap-ig"):
        scores = edge_attribution(model, clean, corrupted, metric, method)
        assert (scores.score[into_dropped] == 0).all() and scores.score.abs().max() > 1e-3, method
    assert model.mod_dict["blocks.1.hook_resid_pre"].ctx["calls"] > 3  # counted on, never cleared


def test_hooks_on_points_the_model_never_runs_are_no_reason_to_refuse():
    model = random_model(**SHAPE)
    model.add_caching_hooks()  # a hook on every point, hook_attn_in too, which runs only with use_attn_in
    clean, corrupted, metric = tokens_and_metric()
    assert len(edge_attribution(model, clean, corrupted, metric, "eap")) == 46
