"""The ``heads`` detector: previous-token, prefix-matching, copying and OV-copying scores of every head.

:func:`circuits.induction_heads` on the repeated-token probe; one row per head and metric in
:data:`METRICS` (``is_previous_token`` and ``is_induction`` as 0/1). The probe is built once per
run (``circuits.repeated_tokens(model)`` with its defaults: 64 sequences, seed 0) and the same
tensor is used for every checkpoint of the run, so the scores of a checkpoint equal
``circuits.prefix_matching_scores(model)`` etc. with default arguments. The definitions are in
``docs/scores.md``.

Applies to models whose probe halves can hold at least :data:`MIN_HALF_LEN` tokens
(``n_ctx >= 9``). With very short halves the prefix-matching offset ``q - k = N - 1`` falls on
(N = 2: the previous token; N = 1: the token itself) or next to the offsets other heads attend
to, and a probe of a few positions averages over too little to separate head types; halves of
at least 4 tokens keep the prefix-matching offset 3 or more positions back. So the
modular-addition model (n_ctx = 3) is skipped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors import Detector, Row
from interp.phase import best_head_curve, locate_phase_change

__all__ = ["DETECTOR", "METRICS", "MIN_HALF_LEN", "final_heads"]

METRICS = ("previous_token", "prefix_matching", "copying", "ov_copying", "is_previous_token", "is_induction")
#: Shortest probe half (see the module docstring): needs ``n_ctx >= 2N + 1 = 9``.
MIN_HALF_LEN = 4
_FLAGS = ("is_previous_token", "is_induction")


def applies(model: HookedTransformer) -> str | None:
    n_ctx = int(model.cfg.n_ctx)
    if (n_ctx - 1) // 2 < MIN_HALF_LEN:
        return f"context n_ctx={n_ctx} too short for a repeated-token probe (needs >= {2 * MIN_HALF_LEN + 1})"
    if int(model.cfg.n_heads) < 1:
        return "model has no attention heads"
    return None


def prepare(model: HookedTransformer, run_dir: Path | None) -> torch.Tensor:
    from circuits import repeated_tokens

    return repeated_tokens(model)


def score(model: HookedTransformer, tokens: torch.Tensor) -> list[Row]:
    from circuits import induction_heads

    table = induction_heads(model, tokens=tokens)
    return [{"layer": int(rec["layer"]), "head": int(rec["head"]), "metric": metric, "value": float(rec[metric])}
            for rec in table.to_dict("records") for metric in METRICS]


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    from circuits import induction_heads

    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        return "heads:\n" + induction_heads(model).to_string(index=False)


def final_heads(rows: pd.DataFrame) -> pd.DataFrame:
    """Head table (``layer, head`` + the head metrics) of the last scored checkpoint of one run."""
    rows = rows[(rows["detector"] == "heads") & rows["layer"].notna() & rows["metric"].isin(METRICS)]
    if rows.empty:
        return pd.DataFrame()
    last = rows[rows["step"] == rows["step"].max()]
    wide = last.pivot_table(index=["layer", "head"], columns="metric", values="value", aggfunc="first")
    wide = wide[[m for m in METRICS if m in wide.columns]].reset_index()
    for col in _FLAGS:
        if col in wide:
            wide[col] = wide[col].astype(bool)
    return wide.astype({"layer": int, "head": int}).sort_values(["layer", "head"], ignore_index=True)


def report(rows: pd.DataFrame) -> list[Any]:
    """The phase-change sentence, the head scores over training and the final head table."""
    from interp.plots import plot_head_scores

    curve = best_head_curve(rows)
    pc = locate_phase_change(curve["step"], curve["score"]) if not curve.empty else None
    if pc is None:
        parts: list[Any] = ["<p class='phase'>No induction phase change located (best prefix-matching score "
                            "never rises by 0.1).</p>"]
    else:
        parts = [f"<p class='phase' data-phase-change-step='{pc.step}'>Induction phase change at "
                 f"<b>step {pc.step}</b>: best prefix-matching score {pc.before:.3f} &rarr; "
                 f"{pc.after:.3f} between steps {pc.start_step} and {pc.end_step}.</p>"]
    name = html.escape(Path(str(rows["run"].iloc[0])).name)
    parts.append(plot_head_scores(rows, pc, title=f"{name}: head scores over training"))
    parts.append(f"<h3>Heads at the final checkpoint (step {int(rows['step'].max())})</h3>")
    parts.append(final_heads(rows).to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="heads"))
    return parts


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
