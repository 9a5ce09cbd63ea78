"""The progress measures of one modular-addition model (Nanda et al. 2023, section 5.1), by definition.

Gini coefficients of Fourier norms, the total sum of squared weights, and the logits restricted to
(or with removed) the key frequencies' ``cos/sin(w_k (a + b))`` directions, from which
:mod:`circuits.progress` computes the restricted and excluded losses of its report. Logits are
``(p*p, p)`` tables over all inputs ``[a, b, =]`` in the order ``row = a * p + b``, taken in float64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

from circuits._modadd import pair_operands

__all__ = ["check_freqs", "excluded_logits", "gini", "restricted_logits", "sum_directions", "weight_norm"]


def gini(x: torch.Tensor | Sequence[float]) -> float:
    """Gini coefficient of non-negative values (Hurley and Rickard 2009), as in Nanda et al. 2023.

    With ``x`` sorted ascending, ``G = sum_i (2 i - n - 1) x_i / (n sum_i x_i)`` (i = 1..n).
    0 when all values are equal, ``1 - 1/n`` when one value holds everything; 0 for all zeros.
    ``ValueError`` for no values, a negative one, NaN or infinity.
    """
    v = torch.as_tensor(x, dtype=torch.float64).flatten()
    if v.numel() == 0 or bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
        raise ValueError("gini needs a non-empty set of finite non-negative values")
    total = v.sum()
    if total <= 0:
        return 0.0
    n = v.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * v.sort().values).sum() / (n * total))


def weight_norm(model: torch.nn.Module) -> float:
    """Total sum of squared parameters, ``sum_theta theta^2`` over every parameter (float64).

    The "total sum of squared weights" progress measure of Nanda et al. 2023 (section 5.1): weight
    decay drives it down, most steeply during cleanup. Range [0, inf).
    """
    with torch.inference_mode():
        params = [t.detach().reshape(-1) for t in model.parameters()]
        if not params:
            return 0.0
        return float(torch.cat(params).to(torch.float64).pow(2).sum())


def sum_directions(p: int, freqs: Sequence[int]) -> torch.Tensor:
    """Orthonormal columns cos/sin(w_k (a + b)) over the p^2 inputs, ``(p*p, 2 len(freqs))``."""
    a, b = pair_operands(p)
    s = (a + b).to(torch.float64)
    k = torch.as_tensor(list(freqs), dtype=torch.float64)
    angle = 2 * math.pi * s[:, None] * k[None, :] / p
    # each column has squared norm p^2 / 2 over the p^2 inputs (p values of a + b, p times each)
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1) * math.sqrt(2) / p


def check_freqs(freqs: Iterable[int], p: int) -> list[int]:
    if isinstance(freqs, (str, bytes)):  # "12" read digit by digit was [1, 2]
        raise ValueError(f"frequencies must be a list of whole numbers, not the text {freqs!r}")
    freqs = list(freqs)
    fractional = [k for k in freqs if isinstance(k, bool) or not isinstance(k, numbers.Real) or not float(k).is_integer()]
    if fractional:
        raise ValueError(f"frequencies must be whole numbers; got {fractional}")
    out = sorted({int(k) for k in freqs})
    bad = [k for k in out if not 1 <= k <= (p - 1) // 2]
    if bad:
        raise ValueError(f"frequencies must lie in 1..{(p - 1) // 2} for p={p}; got {bad}")
    return out


def _logit_table(logits: torch.Tensor, p: int) -> torch.Tensor:
    if logits.shape != (p * p, p):
        raise ValueError(f"logits must have shape (p*p, p) = ({p * p}, {p}), got {tuple(logits.shape)}")
    return logits.detach().to(torch.float64).cpu()


def restricted_logits(logits: torch.Tensor, p: int, freqs: Sequence[int]) -> torch.Tensor:
    """Logits kept only along the key frequencies' cos/sin(w_k (a + b)) input directions (float64).

    Each answer's logit column is a function on the p^2 inputs; it is projected onto the span of
    cos(w_k (a + b)) and sin(w_k (a + b)) for ``k in freqs`` (w_k = 2 pi k / p) and the column's
    mean over inputs is added back. ``(p*p, p) -> (p*p, p)``. Nanda et al. 2023, section 5.1.
    """
    table = _logit_table(logits, p)
    u = sum_directions(p, check_freqs(freqs, p))
    return table.mean(dim=0, keepdim=True) + u @ (u.T @ table)


def excluded_logits(logits: torch.Tensor, p: int, freqs: Sequence[int]) -> torch.Tensor:
    """Logits with the key frequencies' cos/sin(w_k (a + b)) input directions removed (float64).

    The complement of :func:`restricted_logits` (without re-adding the mean, which is untouched).
    Nanda et al. 2023, section 5.1.
    """
    table = _logit_table(logits, p)
    u = sum_directions(p, check_freqs(freqs, p))
    return table - u @ (u.T @ table)
