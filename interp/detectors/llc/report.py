"""The report section of the ``llc`` detector: a sentence, the LLC figure, the final heads' LLC.

The section receives the run's ``heads``, ``fourier`` and ``text`` rows beside its own
(``Detector.report_rows``) and marks on the LLC curve what those detectors locate on the same
checkpoints: the induction phase change (:func:`interp.phase.locate_phase_change` on the best
prefix-matching head, as the ``heads`` section), the grokking phases
(:func:`circuits.grokking_phases` of the ``fourier`` rows, as the ``fourier`` section) and the
in-context learning change (:func:`interp.icl_change_points`, as the ``text`` section).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from interp.analysis.phase import best_head_curve, curve_change_points, locate_phase_change
from interp.base.page import ReportFigure
from interp.detectors._curves import run_title
from interp.detectors.heads.flags import head_kinds
from interp.detectors.llc.figures import grokking_measures, head_llc_curves, llc_curve, plot_llc

__all__ = ["located_phases", "report"]


def located_phases(rows: pd.DataFrame) -> dict[str, Any]:
    """``phase_change``, ``grokking`` and ``icl_change`` located from one run's other rows (None when absent)."""
    found: dict[str, Any] = {"phase_change": None, "grokking": None, "icl_change": None}
    heads = rows[rows["detector"] == "heads"]
    if not heads.empty:
        best = best_head_curve(heads)
        found["phase_change"] = locate_phase_change(best["step"], best["score"]) if not best.empty else None
    measures = grokking_measures(rows)
    if not measures.empty:
        from circuits import grokking_phases

        try:
            phases = grokking_phases(measures)
        except (ValueError, KeyError):  # no train/test split, or measures of another version
            phases = None
        if phases is not None and phases.memorization_end is not None:
            found["grokking"] = phases
    if (rows["detector"] == "text").any():
        from interp.detectors.text.detector import change_points

        found["icl_change"] = change_points(rows)[3]
    return found


def report(rows: pd.DataFrame) -> list[Any]:
    """The located phases in words, the LLC figure (curve, band, phases, heads by flag), the final heads' LLC."""
    curve = llc_curve(rows).dropna(subset=["llc"])
    if curve.empty:
        return ["<p class='note'>No LLC estimate in the table.</p>"]
    setting = rows[(rows["detector"] == "llc") & rows["metric"].isin(("llc_epsilon", "llc_gamma", "llc_nbeta"))]
    s = setting.drop_duplicates("metric", keep="last").set_index("metric")["value"]
    said = (f"epsilon={s['llc_epsilon']:g}, gamma={s['llc_gamma']:g}, nbeta={s['llc_nbeta']:.3g}, "
            if len(s) == 3 else "")
    plateau = rows[(rows["detector"] == "llc") & (rows["metric"] == "llc_plateau")]["value"]
    if len(plateau) and plateau.iloc[-1] == 0:
        said += "no plateau over step sizes: the values depend on the step size, "
    peak = curve.loc[curve["llc"].idxmax()]
    text = (f"<p class='llc'>Local learning coefficient (SGLD, {said}one setting for the whole run): "
            f"{curve['llc'].iloc[0]:.2f} at step {int(curve['step'].iloc[0])}, highest {peak['llc']:.2f} at step "
            f"{int(peak['step'])}, {curve['llc'].iloc[-1]:.2f}{_spread(curve['llc_std'].iloc[-1])} at step "
            f"{int(curve['step'].iloc[-1])}.")
    marks = located_phases(rows)
    if marks["phase_change"] is not None:
        text += f" Induction phase change (heads) at step {marks['phase_change'].step}."
    if marks["grokking"] is not None:
        g = marks["grokking"]
        text += (f" Grokking phases (fourier): memorisation to step {g.memorization_end}, circuit formation to "
                 f"{_step(g.circuit_formation_end)}, cleanup to {_step(g.cleanup_end)}.")
    if marks["icl_change"] is not None:
        text += f" In-context learning change (text) at step {marks['icl_change'].step}."
    text += _changes(curve, marks)
    heads, flags = head_llc_curves(rows), head_kinds(rows)
    text += _head_changes(heads, flags)
    parts: list[Any] = [text + "</p>"]
    name = run_title(rows)
    figure = plot_llc(curve, heads, flags, title=f"{name}: local learning coefficient over training", **marks)
    parts.append(ReportFigure("local learning coefficient", figure, _caption(marks, heads, flags)))
    if not heads.empty:
        final = heads[heads["step"] == heads["step"].max()].sort_values("llc_head", ascending=False)
        parts.append(f"<p>Refined LLC per head at step {int(final['step'].iloc[0])}: " + ", ".join(
            f"L{r.layer}H{r.head} {r.llc_head:.2f} ({_kind(flags, r.layer, r.head)})"
            for r in final.itertuples()) + ".</p>")
    return parts


def _kind(flags: dict, layer: int, head: int) -> str:
    """The head's flag in words; a head the heads rows do not score is named so (olive in the figure)."""
    return flags.get((layer, head), "not scored by heads" if flags else "not flagged")


def _spread(std: float) -> str:
    """`` &plusmn; std`` (nothing where the table holds no spread over chains)."""
    return f" &plusmn; {std:.2f}" if pd.notna(std) else ""


def _changes(curve: pd.DataFrame, marks: dict[str, Any]) -> str:
    """Where the LLC changes (:func:`interp.curve_change_points`), and how far from the located phase change."""
    changes = curve_change_points(curve["step"], curve["llc"])
    if not changes:
        return " The LLC curve has no change point (no segment stands out of its smoothed range)."
    said = ", ".join(f"{'rise' if c.slope > 0 else 'fall'} between steps {c.start_step} and {c.end_step}"
                     for c in changes)
    text = f" Where the LLC changes (steepest rise and fall of the curve smoothed over 3 checkpoints): {said}"
    located = marks["phase_change"] or marks["icl_change"]
    span = int(curve["step"].max()) - int(curve["step"].min())
    if located is not None and span > 0:
        nearest = min(changes, key=lambda c: abs(c.step - located.step))
        text += f"; the nearest lies {100 * abs(nearest.step - located.step) / span:.0f} % of the run from the " + (
            "induction phase change" if marks["phase_change"] is not None else "in-context learning change")
    return text + "."


def _head_changes(heads: pd.DataFrame, flags: dict) -> str:
    """The heads ranked by the change of their refined LLC from their first scored checkpoint to their last."""
    if heads.empty or heads["step"].nunique() < 2:
        return ""
    wide = heads.pivot_table(index=["layer", "head"], columns="step", values="llc_head")
    first, last = wide.columns.min(), wide.columns.max()
    change = (wide[last] - wide[first]).dropna().sort_values(ascending=False)
    return (f" Heads by the rise of their refined LLC from step {first} to step {last}: " + ", ".join(
        f"L{layer}H{head} {value:+.2f} ({_kind(flags, layer, head)})"
        for (layer, head), value in change.items()) + ".")


def _step(value: int | None) -> str:
    return f"step {value}" if value is not None else "not reached"


def _caption(marks: dict[str, Any], heads: pd.DataFrame, flags: dict) -> str:
    where = []
    if marks["phase_change"] is not None:
        where.append("the induction phase change of the heads detector (dashed, its segment shaded)")
    if marks["grokking"] is not None:
        where.append("the grokking phases of the fourier detector (shaded)")
    if marks["icl_change"] is not None:
        where.append("the in-context learning change of the text detector (dashed)")
    text = ("The whole model's LLC at each scored checkpoint, the band one standard deviation over SGLD chains; "
            + ("marked: " + ", ".join(where) if where else "no other detector's phase is located in this table") + ".")
    if heads.empty:
        return text
    how = ("coloured by the heads detector's flags at its last checkpoint (red induction, blue previous-token, "
           "grey other, olive not scored by heads)" if flags else "grey: no heads rows to flag them")
    return text + f" Below, each head's refined LLC, {how}."
