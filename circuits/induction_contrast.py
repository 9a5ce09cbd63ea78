"""The clean and corrupted inputs that isolate induction, for patching and circuit discovery.

Definition (docs/scores.md, "Circuit over training"). Clean: the repeated-token probe
``[x0, r_1..r_N, r_1..r_N]`` of Olsson et al. 2022 (:func:`circuits.repeated_tokens`). Corrupted: the same with the
*first* copy re-drawn, ``[x0, r'_1..r'_N, r_1..r_N]`` (``r'`` a probe of another seed). Metric:
the loss on the second copy, ``-mean ln p(r_k | ...)`` for ``k = 2..N`` at positions ``N+1..2N-1``
(:func:`circuits.repeated_token_loss`'s loss, as a function of the logits, :class:`SecondCopyLoss`).

Why the first copy: induction reads the earlier copy. A previous-token head writes, at ``r_{k}``
of the first copy, which token came before it; the induction head's *key* there reads it
(K-composition, Elhage et al. 2021) and its *value* reads ``r_k`` itself. Re-drawing the first copy
changes exactly what those edges carry, while the second-copy tokens (the queries) stay the same,
so the K-composition edge and the value edges show up in the scores. Re-drawing the second copy
instead changes the *queries* and leaves the first copy's keys as they were: patching the previous
token head's output into the induction head's key then changes nothing, and that edge, the heart
of the circuit, scores near zero (on the default induction run the circuit found with that
corruption is the query edges and the induction heads' outputs alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from circuits._checks import check_model, check_tokens, model_device, unpadded
from circuits._hooks import overflow_checked
from circuits.probes import repeated_tokens

__all__ = ["SecondCopyLoss", "induction_contrast", "second_copy_losses"]

#: Sequences of the contrast by default; the corrupted copy is drawn with seed ``seed + 1``.
DEFAULT_SEQS = 16


@dataclass(frozen=True, eq=False)
class SecondCopyLoss:
    """``metric(logits)``: mean loss of ``tokens``'s second copy ``r_2..r_N`` (0-dim tensor, nats).

    ``tokens``: the clean probe ``(batch, 2N + 1)``; ``half_len``: N. Picklable (a run's
    context ships it to worker processes).
    """

    tokens: torch.Tensor
    half_len: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        n = self.half_len
        if tuple(logits.shape[:2]) != tuple(self.tokens.shape):  # else a sub-batch fails in torch, a half_len lies
            raise ValueError(f"the second-copy metric was made for tokens of shape {tuple(self.tokens.shape)}, got "
                             f"logits of {tuple(logits.shape[:2])}: pass what one induction_contrast call returns")
        predicted = logits[:, n + 1: 2 * n].float()
        targets = self.tokens[:, n + 2:].to(predicted.device)
        return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1))


def induction_contrast(model: HookedTransformer, n_seqs: int = DEFAULT_SEQS, half_len: int | None = None,
                       seed: int = 0, *, redraw: str = "first") -> tuple[torch.Tensor, torch.Tensor, SecondCopyLoss]:
    """``(clean, corrupted, metric)`` of the module docstring, on the model's device.

    ``redraw="second"`` re-draws the second copy instead (``[x0, r, r']``, the metric still
    scores ``r``): the corruption that hides the K-composition edge (module docstring), kept
    for comparison. ``ValueError`` (one line) when the probe does not fit the model (see
    :func:`circuits.repeated_tokens`) or ``half_len < 2``.
    """
    if redraw not in ("first", "second"):
        raise ValueError(f"redraw must be 'first' or 'second', got {redraw!r}")
    model = check_model(model, weights=False)
    clean = repeated_tokens(model, n_seqs, half_len, seed)
    n = (clean.shape[1] - 1) // 2
    if n < 2:
        raise ValueError(f"the induction contrast needs copies of at least 2 tokens, got half_len={n}")
    other = repeated_tokens(model, n_seqs, n, seed + 1)
    corrupted = clean.clone()
    part = slice(1, n + 1) if redraw == "first" else slice(n + 1, 2 * n + 1)
    corrupted[:, part] = other[:, 1: n + 1]
    return clean, corrupted.to(model_device(model)), SecondCopyLoss(clean.cpu(), n)


@torch.no_grad()
def second_copy_losses(model: HookedTransformer, clean: torch.Tensor, corrupted: torch.Tensor,
                       metric: SecondCopyLoss) -> tuple[float, float]:
    """``(clean loss, corrupted loss)``: the metric on both runs (one forward each). Their gap is the
    behaviour a circuit is asked to keep: about 0 before induction forms, ``ln(d_vocab)``-ish after.
    ``TypeError``/``ValueError`` (one line) for tokens the model cannot read, or a metric made for
    tokens of another shape."""
    model = check_model(model)
    if not isinstance(metric, SecondCopyLoss):
        raise TypeError(f"metric must be the SecondCopyLoss induction_contrast returns, got {type(metric).__name__}")
    clean, corrupted = (check_tokens(model, t, repeated=False)[0] for t in (clean, corrupted))
    if clean.shape != corrupted.shape or clean.shape != metric.tokens.shape:
        raise ValueError(f"clean {tuple(clean.shape)}, corrupted {tuple(corrupted.shape)} and the metric's tokens "
                         f"{tuple(metric.tokens.shape)} must have one shape: pass what one induction_contrast call returns")
    with overflow_checked(model):
        return float(metric(model(clean, attention_mask=unpadded(clean)))), \
            float(metric(model(corrupted, attention_mask=unpadded(corrupted))))
