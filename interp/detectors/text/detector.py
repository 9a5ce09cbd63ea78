"""The ``text`` detector: in-context learning score and held-out loss of a byte-level text model.

Per checkpoint, on the held-out split of the run's corpus (``interp.tasks.text``): the per-token
losses of :meth:`Corpus.chained_contexts` (256 contexts of 501 tokens, the same for every
checkpoint of a run) give ``icl_score`` (:func:`circuits.in_context_learning_score`: loss of the
500th token minus the 50th), ``loss_early`` and ``loss_late`` (the two means) and ``test_loss``
(mean over every token). The definitions are in ``docs/scores.md`` ("Text detector").

Applies to models with the byte vocabulary (``d_vocab == 257``: bytes and BOS = 256) and a context
of at least ``late + 1 = 501`` tokens. The corpus is the one recorded in the run's ``run.json``
(the standard library for loose checkpoints); a corpus whose hash differs from the recorded one
makes every checkpoint an error row saying so, rather than numbers on other text.

Its report section sets the in-context learning score beside the best prefix-matching score of
the ``heads`` rows of the same run, each with its change point located by the same rule
(:func:`interp.phase.locate_phase_change`), then the held-out losses, then the per-token loss of
the final checkpoint with and without its induction heads (zero-ablated).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.detectors.spec import Detector, Row
from interp.base.page import ReportFigure
from interp.detectors._curves import metric_curves
from interp.detectors._final import final_model_with
from interp.analysis.phase import best_head_curve, locate_phase_change
from interp.runs.layout import RunError
from interp.runs.record import read_run

__all__ = ["DETECTOR", "METRICS", "MIN_ICL_DROP", "SKIP_SHARE", "change_points", "icl_curve", "induction_heads_of",
           "run_corpus_tokens"]

METRICS = ("icl_score", "loss_early", "loss_late", "test_loss")
EARLY, LATE = 50, 500
#: A change point of the in-context learning score needs a fall of at least this many nats.
MIN_ICL_DROP = 0.1
#: Change points are located on the checkpoints from this share of the run's steps on.
SKIP_SHARE = 0.05


def applies(model: HookedTransformer) -> str | None:
    from interp.tasks.models import TEXT_VOCAB

    if int(model.cfg.d_vocab) != TEXT_VOCAB:  # a BPE vocabulary's ids 0-256 are not bytes
        return f"d_vocab={model.cfg.d_vocab} is not the byte vocabulary (d_vocab {TEXT_VOCAB}: bytes and BOS)"
    if int(model.cfg.d_vocab_out) < TEXT_VOCAB - 1:  # every byte is a target
        return f"d_vocab_out={model.cfg.d_vocab_out} does not predict every byte (the {TEXT_VOCAB - 1} byte ids)"
    if int(model.cfg.n_ctx) < LATE + 1:
        return f"context n_ctx={model.cfg.n_ctx} shorter than the {LATE + 1} tokens of the in-context learning score"
    return None


def run_corpus_tokens(run_dir: str | Path | None) -> torch.Tensor:
    """The held-out contexts of a run's corpus (``run.json``; the standard library without one).

    Raises :class:`interp.RunError` when the corpus is not the one the run recorded (its hash).
    """
    from interp.tasks.text import EVAL_CHAINS, EVAL_PER_CHAIN, load_corpus

    info = read_run(run_dir) if run_dir is not None else None
    recorded = info.task_entry("text") if info is not None else {}
    source = recorded.get("corpus", "stdlib")
    corpus = load_corpus(None if source == "stdlib" else source)
    if recorded.get("corpus_hash") not in (None, corpus.digest):
        raise RunError(f"the corpus {source} is not the one the run saw (hash {corpus.digest}, run.json "
                       f"{recorded['corpus_hash']}, Python {recorded.get('python')})")
    return corpus.chained_contexts("held_out", EVAL_CHAINS, EVAL_PER_CHAIN, EARLY, LATE)


def prepare(model: HookedTransformer, run_dir: Path | None) -> torch.Tensor | str:
    try:
        return run_corpus_tokens(run_dir)
    except (RunError, OSError, ValueError) as exc:  # each checkpoint becomes an error row with the reason
        return str(exc)


def _rows(model: HookedTransformer, tokens: torch.Tensor) -> dict[str, float]:
    from circuits import icl_score_from_losses, per_token_loss

    losses = per_token_loss(model, tokens)
    # The two means as icl_score takes them (float64, NaN ignored), so icl_score = loss_late - loss_early.
    return {"icl_score": icl_score_from_losses(losses, EARLY, LATE),
            "loss_early": float(losses[:, EARLY - 1].double().nanmean()),
            "loss_late": float(losses[:, LATE - 1].double().nanmean()), "test_loss": float(losses.mean())}


def score(model: HookedTransformer, context: torch.Tensor | str) -> list[Row]:
    if isinstance(context, str):
        raise RunError(context)
    return [{"metric": name, "value": value} for name, value in _rows(model, context).items()]


def summary(model: HookedTransformer, run_dir: Path | None) -> str:
    values = _rows(model, run_corpus_tokens(run_dir))
    return "text (held-out split):\n" + "\n".join(f"  {name:<10} {value:.4f}" for name, value in values.items())


def icl_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """``step, icl_score, loss_early, loss_late, test_loss`` per checkpoint from one run's text rows."""
    return metric_curves(rows, "text", METRICS)


def change_points(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, Any, Any]:
    """``(heads, curve, head_change, icl_change)`` of one run's rows.

    ``heads``: the best prefix-matching head per checkpoint (:func:`interp.phase.best_head_curve`
    of the ``heads`` rows); ``curve``: :func:`icl_curve`. Both change points come from
    :func:`interp.phase.locate_phase_change`, the steepest rise of prefix matching and the
    steepest fall of the in-context learning score (at least :data:`MIN_ICL_DROP` nats), each on
    the checkpoints from :data:`SKIP_SHARE` of the run on: the log-spaced early checkpoints
    cover the first moments of training, where the score moves by a tenth of a nat or more
    between checkpoints a few steps apart while the model learns byte statistics
    (``docs/scores.md``, section 6). Either change point is None when not located.
    """
    heads = best_head_curve(rows[rows["detector"] == "heads"])
    curve = icl_curve(rows)
    last = int(rows["step"].max()) if rows["step"].notna().any() else 0
    late_heads, late_curve = heads[heads["step"] >= SKIP_SHARE * last], curve[curve["step"] >= SKIP_SHARE * last]
    head_change = locate_phase_change(late_heads["step"], late_heads["score"]) if len(late_heads) else None
    icl_change = (locate_phase_change(late_curve["step"], late_curve["icl_score"], falling=True,
                                      min_rise=MIN_ICL_DROP) if len(late_curve) else None)
    return heads, curve, head_change, icl_change


def induction_heads_of(rows: pd.DataFrame) -> list[tuple[int, int]]:
    """Heads flagged ``is_induction`` at the last scored checkpoint of the ``heads`` rows (may be empty)."""
    flags = rows[(rows["detector"] == "heads") & (rows["metric"] == "is_induction")].dropna(subset=["step"])
    if flags.empty:
        return []
    last = flags[(flags["step"] == flags["step"].max()) & (flags["value"] > 0.5)]
    return sorted((int(la), int(h)) for la, h in zip(last["layer"], last["head"]))


def report(rows: pd.DataFrame) -> list[Any]:
    """The two change points, the in-context learning score beside prefix matching, losses, the ablation."""
    from interp.detectors.text.figures import plot_icl_curves

    heads, curve, pm, icl = change_points(rows)
    parts: list[Any] = [_sentence(curve, pm, icl, int(rows["step"].max()))]
    top = ("Top: the best prefix-matching score over heads (repeated random tokens; the heads detector). "
           if not heads.empty else
           "Top: empty (no heads rows: score the run with the heads detector too to draw prefix matching). ")
    caption = (top + f"Middle: the in-context learning score, held-out loss of token {LATE} minus token {EARLY} "
               "(negative: later tokens are predicted better than early ones; read it against step 0, where an "
               "untrained model is already off 0). Bottom: held-out losses. Dashed lines: each curve's change point, located "
               f"by the same rule (the steepest segment, from {SKIP_SHARE:.0%} of the run on).")
    figure = plot_icl_curves(curve, heads, pm, icl, title="In-context learning and induction heads over training")
    parts.append(ReportFigure("in-context learning beside the heads", figure, caption))
    parts += _ablation_figure(rows)
    return parts


def _sentence(curve: pd.DataFrame, pm: Any, icl: Any, last: int) -> str:
    said = []
    if pm is not None:
        said.append(f"induction heads (best prefix matching {pm.before:.2f} &rarr; {pm.after:.2f}) at "
                    f"<b>step {pm.step}</b>")
    if icl is not None:
        said.append(f"the in-context learning score ({icl.before:.2f} &rarr; {icl.after:.2f} nats) at "
                    f"<b>step {icl.step}</b>")
    text = "Change points: " + ("; ".join(said) if said else "none located") + "."
    if pm is not None and icl is not None and last > 0:
        gap = abs(pm.step - icl.step)
        text += f" They are {gap} steps apart ({100 * gap / last:.0f} % of the run's {last} steps)."
    if not curve.empty:
        text += f" Final in-context learning score {curve['icl_score'].iloc[-1]:.3f} nats."
    return f"<p class='phase' data-icl-change-step='{icl.step if icl else ''}'>{text}</p>"


def _ablation_figure(rows: pd.DataFrame) -> list[Any]:
    """Per-token held-out loss of the final checkpoint, clean and with its induction heads zero-ablated."""
    from circuits import per_token_loss
    from interp.detectors.text.figures import plot_token_losses

    heads = induction_heads_of(rows)
    if not heads:
        scored = "heads" in set(rows["detector"])
        return ["<p class='note'>Ablation not drawn: no head is flagged as an induction head at the final "
                f"checkpoint{'' if scored else ' (score the run with the heads detector too)'}.</p>"]
    model, step, tokens, why = final_model_with(rows, run_corpus_tokens)
    if why:
        return [f"<p class='note'>Ablation not drawn: {html.escape(why)}.</p>"]
    clean, ablated = per_token_loss(model, tokens), per_token_loss(model, tokens, ablate=heads)
    names = ", ".join(f"L{la}H{h}" for la, h in heads)
    figure = plot_token_losses(clean, ablated, (EARLY, LATE), title=f"Held-out loss by token index at step {step}")
    rise = [float(ablated[:, t - 1].mean() - clean[:, t - 1].mean()) for t in (EARLY, LATE)]
    verdict = ("the heads serve the late tokens, whose context holds earlier copies" if rise[1] > rise[0] + 0.1
               else "here the late tokens do not depend on them much more than the early ones")
    caption = (f"Mean held-out loss of the token at each index, clean and with the induction heads {names} "
               f"zero-ablated. Ablation changes the loss of token {EARLY} by {rise[0]:+.2f} nats and of token {LATE} "
               f"by {rise[1]:+.2f}: {verdict}.")
    return [ReportFigure("loss by token index, induction heads ablated", figure, caption)]


DETECTOR = Detector(
    name="text",
    help=f"in-context learning score (loss of token {LATE} minus token {EARLY}) and held-out loss on the run's corpus",
    metrics=METRICS,
    applies=applies,
    prepare=prepare,
    score=score,
    summary=summary,
    report=report,
    report_rows=("heads",),
)
