"""Whether a loaded model can be scored: finite weights, and a finite forward pass.

A corrupted file can hold finite but huge values (1e38): every weight passes the NaN check, and
the forward pass overflows, so a detector would write NaN scores or mistake the model for one
without the behaviour it measures. :func:`unsound` runs a short probe to catch that.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from circuits import nonfinite_parameters
from interp.base.errors import one_line

__all__ = ["nonfinite_weights", "unsound"]

#: Length of the token probe :func:`unsound` runs (or ``n_ctx``, when shorter).
PROBE_LENGTH = 16


def nonfinite_weights(model: torch.nn.Module) -> str | None:
    """``"NaN or infinite weights in <up to four parameter names>"``, or None when every weight is finite."""
    bad = nonfinite_parameters(model)
    return f"NaN or infinite weights in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}" if bad else None


def unsound(model: HookedTransformer) -> str | None:
    """Why ``model`` cannot be scored, or None: NaN or infinite weights, finite weights whose
    forward pass on a short probe has NaN or infinite activations (a corrupted file can hold 1e38s),
    or a forward pass that raises (a model that loads but cannot run)."""
    bad = nonfinite_weights(model)
    if bad:
        return bad
    cfg = model.cfg
    probe = torch.arange(min(int(cfg.n_ctx), PROBE_LENGTH), device=cfg.device) % int(cfg.d_vocab)
    with torch.no_grad():
        try:
            logits, cache = model.run_with_cache(probe[None])
        except Exception as exc:  # noqa: BLE001 - a reason, never a stopped job
            return f"its forward pass fails: {one_line(exc)}"
    broken = [name for name, x in [*cache.items(), ("logits", logits)] if not _finite(name, x)]
    if not broken:
        return None
    largest = max(float(p.detach().abs().max()) for p in model.parameters() if p.numel())
    return (f"its forward pass is not finite from {broken[0]} on (finite weights, the largest {largest:.3g} in "
            "absolute value)")


def _finite(name: str, x: torch.Tensor) -> bool:
    """No NaN or infinity in an activation; attention scores may hold the causal mask's -inf."""
    if name.endswith("hook_attn_scores"):
        return not bool((x.isnan() | (x == float("inf"))).any())
    return bool(torch.isfinite(x).all())
