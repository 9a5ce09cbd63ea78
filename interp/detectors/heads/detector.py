"""The ``heads`` detector: previous-token, prefix-matching, copying and OV-copying scores of every head.

:func:`circuits.induction_heads` on the repeated-token probe; one row per head and metric in
:data:`METRICS` (``is_previous_token`` and ``is_induction`` as 0/1). The probe is built once per
run (``circuits.repeated_tokens(model)`` with its defaults: 64 sequences, seed 0) and the same
tensor is used for every checkpoint of the run, so the scores of a checkpoint equal
``circuits.prefix_matching_scores(model)`` etc. with default arguments. A run whose task records
its own probe alphabet in ``run.json`` (``task.probe``: the text task's BOS 256 and printable
ASCII) gets ``repeated_tokens(model, bos=..., ids=...)`` instead (:func:`probe_options`). The definitions are in
``docs/scores.md``.

Applies to models whose probe halves can hold at least :data:`MIN_HALF_LEN` tokens
(``n_ctx >= 9`` and at least 4 ordinary token ids). With very short halves the prefix-matching offset ``q - k = N - 1`` falls on
(N = 2: the previous token; N = 1: the token itself) or next to the offsets other heads attend
to, and a probe of a few positions averages over too little to separate head types; halves of
at least 4 tokens keep the prefix-matching offset 3 or more positions back. So the
modular-addition model (n_ctx = 3) is skipped.

Its report section reads the run's final checkpoint to draw the attention of the strongest
flagged previous-token and induction heads on one repeated sequence
(:func:`circuits.attention_pattern`), then layer x head heatmaps of the scores around the located
phase change, the score curves and the final head table.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.spec import Detector, Row
from interp.base.page import ReportFigure
from interp.detectors._curves import run_title
from interp.detectors._final import final_model
from interp.analysis.phase import MIN_RISE, MIN_SEGMENT_SHARE, best_head_curve, locate_phase_change
from interp.runs.layout import RUN_FILE, RunError
from interp.runs.record import read_run

__all__ = ["ATTENTION_HALF_LEN", "DETECTOR", "METRICS", "MIN_HALF_LEN", "final_heads"]

METRICS = ("previous_token", "prefix_matching", "copying", "ov_copying", "is_previous_token", "is_induction")
#: Shortest probe half (see the module docstring): needs ``n_ctx >= 2N + 1 = 9``.
MIN_HALF_LEN = 4
_FLAGS = ("is_previous_token", "is_induction")
#: Half length N of the one repeated sequence whose attention the report draws (shorter contexts: less).
ATTENTION_HALF_LEN = 20


def applies(model: HookedTransformer) -> str | None:
    from circuits import repeated_tokens

    n_ctx = int(model.cfg.n_ctx)
    if (n_ctx - 1) // 2 < MIN_HALF_LEN:
        return f"context n_ctx={n_ctx} too short for a repeated-token probe (needs >= {2 * MIN_HALF_LEN + 1})"
    if int(model.cfg.n_heads) < 1:
        return "model has no attention heads"
    try:
        half = (repeated_tokens(model, n_seqs=1).shape[1] - 1) // 2  # the default half: capped by the vocabulary too
    except ValueError as exc:
        return str(exc)
    if half < MIN_HALF_LEN:
        return f"vocabulary too small for the repeated-token probe: halves of {half} tokens (needs >= {MIN_HALF_LEN})"
    return None


def probe_options(run_dir: str | Path | None) -> dict[str, Any]:
    """``bos`` and ``ids`` of the probe when the run's task records its own (``run.json``:
    ``task.probe``, e.g. the text task: BOS 256 and the printable-ASCII bytes); else none."""
    info = read_run(run_dir) if run_dir is not None else None
    probe = info.task.get("probe") if info is not None and isinstance(info.task, dict) else None
    if not isinstance(probe, dict):
        return {}
    try:
        return {"bos": int(probe["bos"]), "ids": [i for lo, hi in probe["ids"] for i in range(int(lo), int(hi) + 1)]}
    except (KeyError, TypeError, ValueError):  # a run.json edited by hand, or written by other code
        raise RunError(f"{Path(run_dir) / RUN_FILE}: task.probe must be {{\"bos\": ID, \"ids\": [[FIRST, LAST], ...]}}, "
                       f"got {json.dumps(probe)[:80]}") from None


def prepare(model: HookedTransformer, run_dir: Path | None) -> torch.Tensor:
    from circuits import repeated_tokens

    return repeated_tokens(model, **probe_options(run_dir))


def score(model: HookedTransformer, tokens: torch.Tensor) -> list[Row]:
    from circuits import induction_heads

    table = induction_heads(model, tokens=tokens)
    values = table[list(METRICS)].to_numpy(dtype=float).tolist()
    return [{"layer": layer, "head": head, "metric": metric, "value": value}
            for layer, head, row in zip(table["layer"].tolist(), table["head"].tolist(), values)
            for metric, value in zip(METRICS, row)]


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    """The head table on the probe ``score`` reads (the run's own, :func:`probe_options`)."""
    from circuits import induction_heads

    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        return "heads:\n" + induction_heads(model, tokens=prepare(model, run_dir)).to_string(index=False)


def final_heads(rows: pd.DataFrame) -> pd.DataFrame:
    """Head table (``layer, head`` + the head metrics) of the last scored checkpoint of one run."""
    rows = rows[(rows["detector"] == "heads") & rows["layer"].notna() & rows["metric"].isin(METRICS)]
    if rows.empty:
        return pd.DataFrame()
    last = rows[rows["step"] == rows["step"].max()]
    wide = last.pivot_table(index=["layer", "head"], columns="metric", values="value", aggfunc="first")
    wide = wide[[m for m in METRICS if m in wide.columns]].reset_index()
    wide.columns.name = None
    for col in _FLAGS:
        if col in wide:
            wide[col] = wide[col] == 1  # a NaN flag (not scored) is not a flag
    return wide.astype({"layer": int, "head": int}).sort_values(["layer", "head"], ignore_index=True)


def report(rows: pd.DataFrame) -> list[Any]:
    """The phase-change sentence, the detected heads' attention, score heatmaps and curves, the final head table."""
    from interp.detectors.heads.figures import plot_head_scores

    curve = best_head_curve(rows)
    pc = locate_phase_change(curve["step"], curve["score"]) if not curve.empty else None
    if pc is None:
        span = curve["score"].max() - curve["score"].min() if not curve.empty else float("nan")
        why = ("no prefix-matching scores" if curve.empty
               else "one checkpoint: a change needs a curve" if curve["step"].nunique() < 2
               else "best prefix-matching score never rises by 0.1" if not span >= MIN_RISE
               else f"the best prefix-matching score moves by {span:.2f} but falls: it never rises by "
                    f"{MIN_SEGMENT_SHARE:.0%} of that")
        parts: list[Any] = [f"<p class='phase'>No induction phase change located ({why}).</p>"]
    else:
        parts = [f"<p class='phase' data-phase-change-step='{pc.step}'>Induction phase change at "
                 f"<b>step {pc.step}</b>: best prefix-matching score {pc.before:.3f} &rarr; "
                 f"{pc.after:.3f} between steps {pc.start_step} and {pc.end_step}.</p>"]
    heads = final_heads(rows)
    parts += _attention_figure(rows, heads)
    parts.append(_heatmap_figure(rows, pc))
    name = run_title(rows)
    where = ("The dashed line and the shaded band mark the located phase change, the steepest rise of the best "
             "prefix-matching score." if pc is not None else "No phase change was located on these checkpoints.")
    curves = plot_head_scores(rows, pc, title=f"{name}: head scores over training")
    parts.append(ReportFigure("head scores over training", curves,
                              f"One line per head: its score at every scored checkpoint. {where}"))
    scored = rows.loc[rows["metric"].isin(METRICS), "step"]  # an error row may come after the last scores
    parts.append(f"<h3>Heads at the last scored checkpoint (step {int(scored.max())})</h3>")
    parts.append(heads.to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="heads"))
    return parts


def _pick(heads: pd.DataFrame, flag: str, metric: str) -> tuple[int, int, float, bool]:
    """(layer, head, score, flagged) of the flagged head with the highest ``metric``, else of the best head."""
    flagged = heads[heads[flag]] if flag in heads else heads.iloc[:0]
    pool = flagged if not flagged.empty else heads
    best = pool.loc[pool[metric].idxmax()]
    return int(best["layer"]), int(best["head"]), float(best[metric]), not flagged.empty


def _attention_figure(rows: pd.DataFrame, heads: pd.DataFrame) -> list[Any]:
    """The attention of the strongest previous-token and induction heads on one repeated sequence."""
    from circuits import attention_pattern, repeated_tokens
    from interp.detectors.heads.figures import plot_attention_patterns

    if heads.empty or not {"previous_token", "prefix_matching"} <= set(heads.columns):
        missing = " and ".join(m for m in ("previous_token", "prefix_matching") if m not in heads.columns)
        return ["<p class='note'>Attention patterns not drawn: no "
                + (f"{missing} scores" if not heads.empty else "head scores") + " at the final checkpoint.</p>"]
    model, step, why = final_model(rows)
    why = why or (applies(model) or "")
    if why:
        return [f"<p class='note'>Attention patterns not drawn: {html.escape(why)}.</p>"]
    half = min(ATTENTION_HALF_LEN, (int(model.cfg.n_ctx) - 1) // 2)
    tokens = repeated_tokens(model, n_seqs=1, half_len=half, **probe_options(str(rows["run"].iloc[0])))
    panels = []
    for kind, flag, metric in (("previous-token", "is_previous_token", "previous_token"),
                               ("induction", "is_induction", "prefix_matching")):
        layer, head, value, flagged = _pick(heads, flag, metric)
        label = f"{kind} head L{layer}H{head} ({metric.replace('_', ' ')} {value:.2f})"
        panels.append((label if flagged else f"best {kind} candidate L{layer}H{head}, not flagged ({value:.2f})",
                       attention_pattern(model, layer, head, tokens).numpy()))
    figure = plot_attention_patterns(panels, half_len=half, title=f"Attention of the detected heads at step {step}")
    caption = (f"Rows are query positions, columns key positions, on one sequence of {half} random tokens after a first token (BOS where the model has one) "
               "repeated once (dotted lines: where the copy starts). A previous-token head fills the diagonal just "
               f"below the main one; an induction head, in the second half, the diagonal {half - 1} positions back: "
               "the token after the earlier copy of the current one.")
    return [ReportFigure("attention of the detected heads", figure, caption)]


def _heatmap_figure(rows: pd.DataFrame, pc: Any) -> ReportFigure:
    """Layer x head score heatmaps just before and after the phase change and at the final checkpoint."""
    from interp.detectors.heads.figures import plot_head_heatmaps

    last = int(rows["step"].max())
    steps = [(pc.start_step, "before"), (pc.end_step, "after")] if pc is not None else []
    steps = [(s, label) for s, label in steps if s != last] + [(last, "final")]
    figure = plot_head_heatmaps(rows, steps, title="Head scores by layer and head")
    when = ("at the checkpoints just before and just after the phase change and at the final one" if pc is not None
            else "at the final checkpoint")
    caption = (f"Each cell is one head's score (layers down, heads across) {when}. Previous-token heads light up "
               "in the previous-token row, induction heads in the prefix-matching row.")
    return ReportFigure("head scores by layer and head", figure, caption)


DETECTOR = Detector(
    name="heads",
    help="previous-token, prefix-matching, copying and OV-copying score of every head (repeated-token probe)",
    metrics=METRICS,
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
)
