"""Progress measures of grokking (Nanda et al. 2023, section 5): losses, report, curves, phases.

Restricted loss, excluded loss, Gini coefficients of the Fourier norms and the total sum of squared
weights, for one modular-addition model (:func:`fourier_report`) or a series of checkpoints
(:func:`progress_measures`). The measures' definitions (:func:`gini`, :func:`weight_norm`,
:func:`restricted_logits`, :func:`excluded_logits`) live in :mod:`circuits._measures` and the three
phases of grokking located on those curves (:func:`grokking_phases`) in :mod:`circuits.phases`;
both are re-exported here. Losses are computed in float64 from the model's logits over all p^2
inputs ``[a, b, =]`` in the order ``row = a * p + b``. The Fourier analysis itself is shared with
:mod:`circuits.fourier` through :mod:`circuits._modadd` and :mod:`circuits._fourier_analysis`.

``MEMORISED_LOSS`` is the deprecated name of :data:`MEMORIZED_LOSS` (``DeprecationWarning``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._fourier_analysis import analyze, key_rule, spectrum_frame
from circuits._measures import check_freqs, excluded_logits, gini, restricted_logits, sum_directions, weight_norm
from circuits._modadd import modadd_answers
from circuits._parallel import one_thread, parallel_map
from circuits.phases import (  # also importable from here, as before the split
    CIRCUIT_LOSS,
    CLEAN_ACCURACY,
    CLEAN_FRACTION,
    GROKKED_ACCURACY,
    MEMORIZED_LOSS,
    GrokkingPhases,
    grokking_phases,
)

__all__ = [
    "FourierReport",
    "GrokkingPhases",
    "fourier_report",
    "gini",
    "grokking_phases",
    "progress_measures",
    "restricted_logits",
    "excluded_logits",
    "weight_norm",
]


def __getattr__(name: str) -> object:
    """The deprecated constant ``MEMORISED_LOSS``: warns and returns :data:`MEMORIZED_LOSS`."""
    if name == "MEMORISED_LOSS":
        warnings.warn(
            "MEMORISED_LOSS is deprecated; use MEMORIZED_LOSS (American spelling, as in TransformerLens)",
            DeprecationWarning,
            stacklevel=2,
        )
        return MEMORIZED_LOSS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Scalar fields of :class:`FourierReport`, in the column order of :func:`progress_measures`.
SCALARS = (
    "loss",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
    "restricted_loss",
    "excluded_loss",
    "gini_embed",
    "gini_unembed",
    "weight_norm",
)


@dataclass(frozen=True, eq=False)
class FourierReport:
    """Fourier structure and progress measures of one modular-addition model.

    Attributes:
        p: the modulus (``d_vocab_out``).
        key_frequencies: this model's key frequencies (:func:`circuits.key_frequencies`), sorted.
        spectrum: one row per frequency ``freq = 1..(p-1)/2`` with ``embed``, ``unembed`` (shares
            of the squared Fourier norm of ``W_E[:p]`` and of ``W_L = W_out W_U``), ``neurons``
            (neurons >= 85 % explained by the frequency) and ``neurons_majority`` (>= 50 %).
        loss: cross-entropy over all p^2 pairs. [0, inf); ln p ~ 4.73 at chance for p = 113.
        train_loss, train_accuracy: over the training pairs (``train_mask``); over all p^2 pairs
            when no mask was given.
        test_loss, test_accuracy: over the pairs outside ``train_mask``; NaN when no mask was
            given or the mask holds every pair.
        restricted_loss: cross-entropy over all p^2 pairs of the logits restricted to the
            cos/sin(w_k (a + b)) directions of ``loss_frequencies`` plus the mean logits (see
            :func:`restricted_logits`). Low only once the Fourier circuit alone solves the task.
        excluded_loss: cross-entropy over the training pairs of the logits with those directions
            removed (:func:`excluded_logits`). Rises during circuit formation: the memorised
            solution is being replaced by the Fourier circuit. Both from Nanda et al. 2023, 5.1.
        gini_embed, gini_unembed: :func:`gini` of the per-frequency Fourier norms of ``W_E[:p]``
            and of ``W_L`` (Nanda et al. 2023, 5.1; Hurley and Rickard 2009). [0, 1 - 2/(p-1)];
            rises as the weights concentrate on the key frequencies during cleanup.
        weight_norm: :func:`weight_norm`, total sum of squared parameters; falls during cleanup.
        loss_frequencies: the frequencies used for the restricted and excluded losses (this
            model's key frequencies unless the caller chose others, e.g. a final model's).
    """

    p: int
    key_frequencies: list[int]
    spectrum: pd.DataFrame
    loss: float
    train_loss: float
    test_loss: float
    train_accuracy: float
    test_accuracy: float
    restricted_loss: float
    excluded_loss: float
    gini_embed: float
    gini_unembed: float
    weight_norm: float
    loss_frequencies: list[int] = field(default_factory=list)

    def scalars(self) -> dict[str, float]:
        """The scalar measures as a dict, plus ``n_key_frequencies``."""
        out = {name: getattr(self, name) for name in SCALARS}
        out["n_key_frequencies"] = len(self.key_frequencies)
        return out


# ---------------------------------------------------------------------------------------------
# report


def fourier_report(
    model: HookedTransformer,
    p: int | None = None,
    train_mask: torch.Tensor | None = None,
    *,
    key_freqs: Sequence[int] | None = None,
) -> FourierReport:
    """Fourier spectra, key frequencies and progress measures of one model (Nanda et al. 2023).

    Args:
        model: a one-layer modular-addition ``HookedTransformer`` (not modified).
        p: modulus; defaults to ``model.cfg.d_vocab_out`` (a mismatch raises ``ValueError``).
        train_mask: BoolTensor ``(p*p,)`` of training pairs in row order ``a*p + b`` (e.g.
            ``interp.tasks.modular.train_mask``). Without it, "training" means all p^2 pairs
            (train_loss = loss, excluded loss over all pairs) and test_loss/accuracy are NaN.
        key_freqs: frequencies for the restricted/excluded losses; default: this model's own key
            frequencies. ``progress_measures`` passes the final checkpoint's, as in the paper.

    See :class:`FourierReport` for every field's definition and range. ``ValueError`` for
    ``p < 23`` (``MIN_KEY_P``), where the key-frequency rule does not hold, ``key_freqs`` given or not.
    """
    with one_thread():
        return _report(model, p, train_mask, key_freqs)


def _report(
    model: HookedTransformer, p: int | None, train_mask: torch.Tensor | None, key_freqs: Sequence[int] | None
) -> FourierReport:
    an = analyze(model, p)
    p = an.p
    mask = _check_mask(train_mask, p)
    own = key_rule(an)
    freqs = own if key_freqs is None else check_freqs(key_freqs, p)
    labels = modadd_answers(p)
    table = an.logits.detach().to(torch.float64)
    u = sum_directions(p, freqs)
    along = u @ (u.T @ table)
    losses = _row_losses(table, labels)
    correct = (table.argmax(dim=-1) == labels).to(torch.float64)
    test_rows = None if mask is None else ~mask
    restricted = _mean(_row_losses(table.mean(dim=0, keepdim=True) + along, labels), None)
    excluded = _mean(_row_losses(table - along, labels), mask)
    return FourierReport(
        p=p,
        key_frequencies=own,
        spectrum=spectrum_frame(an),
        loss=_mean(losses, None),
        train_loss=_mean(losses, mask),
        test_loss=math.nan if test_rows is None else _mean(losses, test_rows),
        train_accuracy=_mean(correct, mask),
        test_accuracy=math.nan if test_rows is None else _mean(correct, test_rows),
        restricted_loss=restricted,
        excluded_loss=excluded,
        gini_embed=gini(an.embed_norms),
        gini_unembed=gini(an.unembed_norms),
        weight_norm=weight_norm(model),
        loss_frequencies=freqs,
    )


def _row_losses(logits64: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits64, labels, reduction="none")


def _mean(x: torch.Tensor, rows: torch.Tensor | None) -> float:
    if rows is not None:
        x = x[rows]
    return float(x.mean()) if x.numel() else math.nan


def _check_mask(train_mask: torch.Tensor | np.ndarray | None, p: int) -> torch.Tensor | None:
    if train_mask is None:
        return None
    mask = torch.as_tensor(train_mask)
    if mask.dtype != torch.bool or mask.shape != (p * p,):
        raise ValueError(
            f"train_mask must be a bool tensor of shape (p*p,) = ({p * p},) in row order a*p+b; "
            f"got dtype {mask.dtype}, shape {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise ValueError("train_mask selects no training pairs")
    return mask.cpu()


# ---------------------------------------------------------------------------------------------
# progress measures over checkpoints


def progress_measures(
    models: Mapping[int, HookedTransformer] | Iterable[tuple[int, HookedTransformer]],
    *,
    key_freqs: Sequence[int] | None = None,
    train_mask: torch.Tensor | None = None,
    p: int | None = None,
) -> pd.DataFrame:
    """The progress measures of Nanda et al. 2023 over a training run, one row per checkpoint.

    Args:
        models: ``{step: model}`` or an iterable of ``(step, model)`` pairs (consumed once; with
            ``key_freqs`` given it is streamed in small batches, so a generator that loads one
            checkpoint at a time keeps only a few models in memory). On a multi-core CPU the
            checkpoints of a batch are scored in parallel, one single-threaded worker per core.
        key_freqs: frequencies for the restricted/excluded losses at *every* checkpoint; default:
            the key frequencies of the last checkpoint (highest step), as in the paper.
        train_mask: training pairs, as in :func:`fourier_report`.
        p: modulus; defaults to each model's ``d_vocab_out``.

    Returns a DataFrame sorted by ``step`` with columns ``step, n_key_frequencies`` and the
    scalar fields of :class:`FourierReport` (``loss, train_loss, test_loss, train_accuracy,
    test_accuracy, restricted_loss, excluded_loss, gini_embed, gini_unembed, weight_norm``);
    ``df.attrs["key_frequencies"]`` holds the frequencies used for the losses.
    """
    items: Iterable[tuple[int, HookedTransformer]] = models.items() if isinstance(models, Mapping) else models
    if key_freqs is None:
        items = sorted(((int(s), m) for s, m in items), key=lambda sm: sm[0])
        if not items:
            raise ValueError("progress_measures needs at least one (step, model) checkpoint")
        freqs = fourier_report(items[-1][1], p).key_frequencies
    else:
        freqs = [key_freqs] if isinstance(key_freqs, (str, bytes)) else list(key_freqs)  # text: refused as one value

    def score(item: tuple[int, HookedTransformer]) -> dict[str, float]:
        step, model = item
        return {"step": step, **fourier_report(model, p, train_mask, key_freqs=freqs).scalars()}

    rows: list[dict[str, float]] = []
    seen: set[int] = set()
    for chunk in _chunks(items, max(1, 2 * torch.get_num_threads())):
        for step, _ in chunk:
            if step in seen:
                raise ValueError(f"duplicate checkpoint step {step}")
            seen.add(step)
        device = next(iter(chunk[0][1].parameters()), torch.empty(0)).device
        rows.extend(parallel_map(score, chunk, device=device))
    if not rows:
        raise ValueError("progress_measures needs at least one (step, model) checkpoint")
    columns = ["step", "n_key_frequencies", *SCALARS]
    frame = pd.DataFrame(rows)[columns].sort_values("step", ignore_index=True)
    frame["step"] = frame["step"].astype(int)
    frame["n_key_frequencies"] = frame["n_key_frequencies"].astype(int)
    frame.attrs["key_frequencies"] = sorted({int(k) for k in freqs})  # as the losses took them (checked, once each)
    return frame


def _chunks(items: Iterable[tuple[int, HookedTransformer]], size: int) -> Iterable[list[tuple[int, HookedTransformer]]]:
    """Consecutive lists of ``size`` (step, model) pairs, steps as ints; a stream stays a stream."""
    chunk: list[tuple[int, HookedTransformer]] = []
    for step, model in items:
        chunk.append((int(step), model))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
