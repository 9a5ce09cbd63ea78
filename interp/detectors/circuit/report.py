"""The report section of the ``circuit`` detector: the run's circuit (found on its latest checkpoint
when scored) as a graph, the faithfulness curve recomputed on the table's last scored checkpoint,
and the circuit over training with the phase change located on the ``heads`` rows when the run
has them."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from interp.base.page import ReportFigure
from interp.detectors._final import final_model
from interp.detectors.circuit.search import METHOD, MIN_GAP, TARGET, circuit_rows, find_run_circuit
from interp.detectors.circuit.figures import plot_circuit_graph, plot_circuit_over_training, plot_faithfulness_curve
from interp.detectors.heads.flags import head_kinds

__all__ = ["report_items"]


def report_items(rows: pd.DataFrame) -> list[Any]:
    curves, edges = circuit_rows(rows)
    if curves.empty or edges.empty:
        return ["<p class='note'>No circuit rows in the table.</p>"]
    # rows of the detector's version 1 (tables scored before it) hold a faithfulness below the gap too
    gap = curves["corrupted_loss"] - curves["clean_loss"]
    curves["faithfulness"] = curves["faithfulness"].where(gap >= MIN_GAP)
    last = int(curves["step"].max())
    final = edges[edges["step"] == last]
    at_last = curves[curves["step"] == last].iloc[0]
    heads = rows[rows["detector"] == "heads"]
    n_layers = int(heads["layer"].max()) + 1 if not heads.empty else None
    n_heads = int(heads["head"].max()) + 1 if not heads.empty else None
    listed = ", ".join(html.escape(f"{s}") + "&rarr;" + html.escape(f"{t}{'.' + i if i else ''}") for s, t, i in
                       final[["source", "target", "input"]].itertuples(index=False, name=None))
    parts: list[Any] = [
        f"<p class='circuit' data-circuit-size='{len(final)}'>The run's circuit, found once on its latest checkpoint "
        f"when the table was scored and followed over every checkpoint: <b>{len(final)} edges</b> ({METHOD} scores, "
        f"the smallest top-k with faithfulness &ge; {TARGET:g}, less the edges on no path from the embeddings to the "
        f"logits). At step {last}, the last in this table: faithfulness {_faithfulness(at_last['faithfulness'])}; "
        f"second-copy loss {at_last['clean_loss']:.2f} nats, {at_last['corrupted_loss']:.2f} with the first copy "
        f"re-drawn. Edges: {listed}.</p>"]
    kinds = head_kinds(rows)
    if kinds:
        parts.append(_flags_sentence(final, kinds))
    graph = plot_circuit_graph(final, n_layers, n_heads, title=f"The run's circuit, its edges' scores at step {last}")
    parts.append(ReportFigure(
        "the circuit", graph,
        "Layers are columns, from the embeddings to the logits; each line is one edge of the circuit, its width "
        "the edge's score. Colour and dash tell which input of the target head it enters: query, key or value "
        "(a previous-token head feeding an induction head's key is K-composition)."))
    parts += _curve_figure(rows, final)
    phase = _phase_change(rows)
    over = plot_circuit_over_training(curves, edges, phase, title="The circuit over training")
    when = ("The dashed line and band mark the induction phase change located on the head scores."
            if phase is not None else "No phase change was located (or the run has no heads rows).")
    circuit_loss = curves["circuit_loss"].notna().any()
    losses = ("of the clean run, of the corrupted run (first copy re-drawn) and of the circuit's run (every edge "
              "outside the final circuit patched from the corrupted run)" if circuit_loss else
              "of the clean run and of the corrupted run (first copy re-drawn; this table has no circuit loss: score "
              "it again to add it)")
    forms = " The circuit forms where its loss leaves the corrupted one for the clean one." if circuit_loss else ""
    parts.append(ReportFigure(
        "the circuit over training", over,
        f"Top: the second-copy loss {losses}, and the circuit's faithfulness where the corrupted loss exceeds the "
        f"clean one by {MIN_GAP:g} nats or more (below that there is no induction to keep, and the ratio of two small "
        f"numbers is noise).{forms} Bottom: each circuit edge's score. " + when))
    return parts


def _faithfulness(value: float) -> str:
    return f"{value:.3f}" if pd.notna(value) else f"undefined (the loss gap is below {MIN_GAP:g} nats)"


def _flags_sentence(final: pd.DataFrame, kinds: dict[tuple[int, int], str]) -> str:
    """Which heads the circuit joins against what the ``heads`` detector flags them as (it was found
    without those flags), and its K-composition edges."""
    kind = {f"L{layer}H{head}": k for (layer, head), k in kinds.items()}
    joined = sorted({n for n in set(final["source"]) | set(final["target"]) if n in kind})

    def named(names: list[str]) -> str:
        return ", ".join(names) or "none"

    by_kind = "; ".join(f"{k}s {named([n for n in joined if kind[n] == k])}"
                        for k in ("previous-token head", "induction head", "other"))
    outside = [n for n in sorted(kind) if kind[n] != "other" and n not in joined]
    k_comp = [f"{s}&rarr;{t}.k" for s, t, i in final[["source", "target", "input"]].itertuples(index=False, name=None)
              if i == "k" and kind.get(s) == "previous-token head" and kind.get(t) == "induction head"]
    unflagged = sum(kind[n] == "other" for n in joined)
    return (f"<p class='circuit-heads' data-unflagged-heads='{unflagged}' data-k-composition='{len(k_comp)}'>"
            f"The circuit was found from the edge scores alone; its heads, as the heads detector flags them at its "
            f"last checkpoint: {by_kind}. Flagged heads outside the circuit: {named(outside)}. K-composition edges "
            f"(a flagged previous-token head into a flagged induction head's key): {named(k_comp)}.</p>")


def _curve_figure(rows: pd.DataFrame, final: pd.DataFrame) -> list[Any]:
    """The faithfulness curve of the last scored checkpoint; ``final``: the run's circuit (its rows)."""
    model, step, why = final_model(rows[rows["detector"] == "circuit"])
    if why:
        return [f"<p class='note'>Faithfulness curve not drawn: {html.escape(why)}.</p>"]
    try:
        found = find_run_circuit(model)
    except ValueError as exc:  # a table that stops before induction: no gap to keep there
        return [f"<p class='note'>Faithfulness curve not drawn: at step {step}, the last in this table, "
                f"{html.escape(str(exc))}.</p>"]
    figure = plot_faithfulness_curve(found.curve, found.k, TARGET,
                                     title=f"Faithfulness against circuit size at step {step}")
    pruned = found.k - found.size
    rest = (f"the circuit above is those edges less the {pruned} on no path from the embeddings to the logits"
            if pruned else "the circuit above is those edges (none lies off the paths from the embeddings to the logits)")
    columns = ["source", "target", "input"]
    if set(found.edges[columns].itertuples(index=False, name=None)) != set(final[columns].itertuples(index=False, name=None)):
        rest = (f"here that gives {found.size} edges, not the circuit above: that one was found on a later "
                "checkpoint than this table reaches")
    return [ReportFigure(
        "faithfulness against circuit size", figure,
        f"The top-k edges by |score| kept at step {step}, every other edge patched from the corrupted run: the share "
        f"of the loss gap they keep. The star is the first size at or above {TARGET:g}; {rest}.")]


def _phase_change(rows: pd.DataFrame) -> Any:
    from interp.analysis.phase import best_head_curve, locate_phase_change

    heads = rows[rows["detector"] == "heads"]
    if heads.empty:
        return None
    curve = best_head_curve(heads)
    return locate_phase_change(curve["step"], curve["score"]) if not curve.empty else None
