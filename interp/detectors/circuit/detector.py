"""The ``circuit`` detector: the final checkpoint's induction circuit, followed back over training.

Once per run (``prepare``, on the run's latest sound checkpoint): the induction contrast of
:func:`circuits.induction_contrast` (:data:`N_SEQS` probes ``[x0, r, r]``, the first copy re-drawn
as the corrupted input, metric = loss on the second copy; that module's docstring says why the
first copy) and :func:`circuits.smallest_circuit`: every edge scored by ``eap-ig``
(:data:`METHOD`, 5 steps), the smallest top-k circuit with faithfulness >= :data:`TARGET`. Found
without being told which heads to look for. Then, for every checkpoint of the run, on the same
tokens:

- ``clean_loss``, ``corrupted_loss``: the second-copy loss of the clean and corrupted runs (nats);
  their gap is the behaviour a circuit is asked to keep;
- ``circuit_loss``: the second-copy loss of the circuit's run, the clean input with every edge
  outside the circuit patched from the corrupted run (:func:`circuits.circuit_metrics`). It stays at
  the corrupted loss while the circuit carries nothing and follows the clean loss down once it
  carries the behaviour: the circuit forming, at every checkpoint;
- ``faithfulness``: ``(circuit_loss - corrupted_loss) / (clean_loss - corrupted_loss)``, that
  circuit's faithfulness at this checkpoint; NaN where the corrupted loss exceeds the clean one by
  less than :data:`MIN_GAP` nats (no induction to keep, the criterion of ``applies``): at the
  first checkpoints the gap is nearly zero and the ratio of two such numbers is
  noise (its range on the default runs: BENCHMARKS.md, "Circuit detector");
- ``circuit_size``: the number of edges of the circuit (the same at every checkpoint);
- one row per circuit edge, metric ``edge:SOURCE->TARGET.INPUT`` (``edge:L0H2->L1H1.k``,
  ``edge:L1H1->logits``; ``search.edge_metric``, ``search.parse_edge_metric``): the edge's ``eap-ig``
  score at this checkpoint (the change of the loss when the edge alone is patched; positive
  when the edge carries induction).

Ranges: ``faithfulness`` any real (1: the circuit keeps the whole gap, 0: no more than the
corrupted run; section 8 of ``docs/scores.md``) or NaN, losses in ``[0, inf)``, edge scores any real, in
nats. Papers: edge attribution patching, Syed et al. 2023; EAP-IG and faithfulness as the measure
of a circuit, Hanna et al. 2024; the graph of ACDC, Conmy et al. 2023; the probe and induction,
Olsson et al. 2022.

Applies to models with attention heads whose context holds the probe (``n_ctx >= 9``) and that
show induction at the checkpoint it is given (for scoring: the run's latest): the corrupted
loss exceeds the clean one by at least :data:`MIN_GAP` nats. Anything else is refused in one line.
Opt-in (``catalog.OPT_IN``, ``--detectors circuit``); cost in ``docs/scores.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.circuit.report import report_items
from interp.detectors.circuit.search import EDGE_PREFIX, METHOD, METRICS, MIN_GAP, MIN_HALF_LEN, contrast, \
    edge_metric, find_run_circuit
from interp.detectors.spec import Detector, Row
from interp.runs.layout import RunError

__all__ = ["DETECTOR", "CircuitContext"]


@dataclass(frozen=True)
class CircuitContext:
    """What ``prepare`` fixes for a run (picklable): the contrast and the final checkpoint's circuit."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    metric: Any  # circuits.SecondCopyLoss
    edges: tuple[tuple[str, str, str, float], ...] = ()
    faithfulness: float = float("nan")
    reason: str | None = None  # why no checkpoint of the run gets a number


def applies(model: HookedTransformer) -> str | None:
    from circuits import edge_attribution_refusal, one_thread, second_copy_losses

    n_ctx = int(model.cfg.n_ctx)
    if int(model.cfg.n_heads) < 1:
        return "model has no attention heads"
    refused = edge_attribution_refusal(model)  # grouped-query attention: every checkpoint an error row
    if refused is not None:
        return refused
    if (n_ctx - 1) // 2 < MIN_HALF_LEN:
        return f"context n_ctx={n_ctx} too short for the repeated-token contrast (needs >= {2 * MIN_HALF_LEN + 1})"
    try:
        clean, corrupted, metric = contrast(model)
        with one_thread():
            clean_loss, corrupted_loss = second_copy_losses(model, clean, corrupted, metric)
    except ValueError as exc:
        return str(exc)
    if not math.isfinite(clean_loss) or not math.isfinite(corrupted_loss):
        return f"the second-copy losses are not finite ({clean_loss} nats clean, {corrupted_loss} corrupted)"
    if not corrupted_loss - clean_loss >= MIN_GAP:
        return (f"no induction to find a circuit for: second-copy loss {clean_loss:.2f} nats, {corrupted_loss:.2f} "
                f"with the first copy re-drawn (needs a gap of at least {MIN_GAP:g})")
    return None


def prepare(model: HookedTransformer, run_dir: Path | None) -> CircuitContext:
    clean, corrupted, metric = contrast(model)
    try:
        found = find_run_circuit(model)
    except (ValueError, TypeError, RuntimeError) as exc:  # every checkpoint's error row, not a stopped job
        return CircuitContext(clean.cpu(), corrupted.cpu(), metric, reason=f"{type(exc).__name__}: {exc}")
    edges = tuple((s, t, i, float(v)) for s, t, i, v in found.edges[["source", "target", "input", "score"]]
                  .itertuples(index=False, name=None))
    return CircuitContext(clean.cpu(), corrupted.cpu(), metric, edges, found.faithfulness)


def score(model: HookedTransformer, context: CircuitContext) -> list[Row]:
    from circuits import circuit_metrics, edge_attribution, one_thread

    if context.reason:
        raise RunError(context.reason)
    clean, corrupted, metric = context.clean, context.corrupted, context.metric
    circuit = [(s, t, i) for s, t, i, _ in context.edges]
    with one_thread():
        scores = edge_attribution(model, clean, corrupted, metric, METHOD)
        losses = circuit_metrics(model, circuit, clean, corrupted, metric)
    shows_induction = losses.corrupted - losses.clean >= MIN_GAP
    by_edge = {(s, t, i): float(v) for s, t, i, v in scores.itertuples(index=False, name=None)}
    rows: list[Row] = [{"metric": "faithfulness", "value": losses.faithfulness if shows_induction else float("nan")},
                       {"metric": "clean_loss", "value": losses.clean},
                       {"metric": "corrupted_loss", "value": losses.corrupted},
                       {"metric": "circuit_loss", "value": losses.circuit},
                       {"metric": "circuit_size", "value": float(len(circuit))}]
    return rows + [{"metric": edge_metric(*edge), "value": by_edge[edge]} for edge in circuit]


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    """The smallest circuit of this checkpoint (a few seconds: every edge scored, the faithfulness curve)."""
    found = find_run_circuit(model)
    lines = [f"circuit ({METHOD}, first copy re-drawn, loss on the second copy): {found.size} edges, "
             f"faithfulness {found.faithfulness:.3f}"]
    lines += [f"  {s} -> {t}{'.' + i if i else ''}  {v:+.3f}"
              for s, t, i, v in found.edges[["source", "target", "input", "score"]].itertuples(index=False, name=None)]
    return "\n".join(lines)


def report(rows: pd.DataFrame) -> list[Any]:
    """The circuit as a graph, its faithfulness against size, and the circuit over training."""
    return report_items(rows)


DETECTOR = Detector(
    name="circuit",
    help="the final checkpoint's induction circuit (eap-ig, faithfulness >= 0.9): its loss, faithfulness and "
         "edges' scores at every checkpoint",
    metrics=(*METRICS, f"{EDGE_PREFIX}SOURCE->TARGET.INPUT"),
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
    report_rows=("heads",),
    version=2,  # 2: circuit_loss added, faithfulness NaN below MIN_GAP
)
