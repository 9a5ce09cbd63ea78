"""Shared input validation, so every detector fails the same clear way on the same bad input."""

from __future__ import annotations

import math
import numbers

import torch
from transformer_lens import HookedTransformer

__all__ = ["check_finite_weights", "check_model", "check_tokens", "model_device", "nonfinite_parameters", "positive_int",
           "seed_int", "unpadded", "vocab_out"]


def check_model(model: object, *, weights: bool = True) -> HookedTransformer:
    """Return ``model`` if it is a ``HookedTransformer`` whose attention exposes the hooks we read.

    Raises ``TypeError`` for anything that is not a ``HookedTransformer`` and ``ValueError`` when a
    layer lacks its ``attn.hook_pattern`` or ``attn.hook_z`` hook point, or (unless ``weights`` is
    False: for callers that read only the config) when a weight holds a NaN or an infinity, naming
    the parameters: scores of such a model would be NaN or, through the hooked forward's zeroing
    of NaN patterns, silently wrong.
    """
    if not isinstance(model, HookedTransformer):
        raise TypeError(
            f"expected a transformer_lens HookedTransformer, got {type(model).__module__}.{type(model).__name__}"
        )
    n_layers = int(model.cfg.n_layers)
    if n_layers < 1 or int(model.cfg.n_heads) < 1:
        raise ValueError(f"model has no attention heads (n_layers={n_layers}, n_heads={model.cfg.n_heads})")
    hook_dict = model.hook_dict
    missing = [
        name
        for layer in range(n_layers)
        for name in (f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_z")
        if name not in hook_dict
    ]
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise ValueError(f"model has no attention-pattern hooks needed by the head detectors: missing {shown}")
    if weights:
        check_finite_weights(model)
    return model


def unpadded(tokens: torch.Tensor) -> torch.Tensor:
    """The attention mask every forward of the detectors passes: all ones, so that ``tokens`` are
    read as given. Without it a model whose tokenizer pads on the left takes leading tokens equal to
    its pad token (often its BOS) for padding, hides them and shifts the positions."""
    return torch.ones_like(tokens)


def is_int(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A Python or numpy real number (integers included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int when it is a Python or numpy integer >= 1 (not a bool), else a one-line ``ValueError``."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def seed_int(value: object) -> int:
    """A seed ``torch.Generator.manual_seed`` takes: an int in ``[0, 2**63)``, else a one-line ``ValueError``."""
    if not is_int(value) or not 0 <= value < 2 ** 63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {value!r}")
    return int(value)


def check_finite_weights(model: torch.nn.Module) -> None:
    """``ValueError`` naming (up to four of) the parameters that hold a NaN or an infinity."""
    bad = nonfinite_parameters(model)
    if bad:
        raise ValueError(f"model has NaN or infinite weights in: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters holding a NaN or an infinity (empty for a healthy model).

    One min/max reduction per parameter: a NaN propagates to both, an infinity is one of them. No
    copy of the weights is made (~4x faster than ``isfinite(t).all()``).
    """
    bad = []
    for name, weight in model.named_parameters():
        if weight.numel() and weight.is_floating_point():
            low, high = torch.aminmax(weight.detach())
            if not (math.isfinite(float(low)) and math.isfinite(float(high))):
                bad.append(name)
    return bad


def model_device(model: HookedTransformer) -> torch.device:
    """Device of the model's embedding weights (where probe tokens must live)."""
    return model.W_E.device


def vocab_out(model: HookedTransformer) -> int:
    """Number of output logits (``d_vocab_out``, which may be smaller than ``d_vocab``)."""
    d_out = getattr(model.cfg, "d_vocab_out", -1)
    return int(d_out) if d_out is not None and int(d_out) > 0 else int(model.cfg.d_vocab)


def check_tokens(model: HookedTransformer, tokens: object, *, repeated: bool) -> tuple[torch.Tensor, int]:
    """Validate caller-made probe tokens; return them as int64 on the model's device and ``N``.

    ``tokens`` must be an integer tensor of shape ``(batch, pos)`` with ``batch >= 1``,
    ``pos <= n_ctx`` and ids in ``[0, d_vocab)``. With ``repeated`` the rows must have the probe
    layout ``[x0, r_1..r_N, r_1..r_N]`` (odd length ``2N + 1 >= 3``, second half equal to the
    first), and ``N`` is returned; otherwise ``pos >= 2`` is enough and ``N`` is 0.
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise TypeError(f"tokens must be an integer tensor (torch.long), got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (batch, pos), got shape {tuple(tokens.shape)}")
    batch, pos = tokens.shape
    if batch < 1:
        raise ValueError("tokens has an empty batch")
    n_ctx = int(model.cfg.n_ctx)
    if pos > n_ctx:
        raise ValueError(f"tokens are {pos} positions long, longer than the model's context n_ctx={n_ctx}")
    if pos < 2:
        raise ValueError(f"tokens must be at least 2 positions long, got {pos}")
    d_vocab = int(model.cfg.d_vocab)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        raise ValueError(f"token ids must lie in [0, d_vocab={d_vocab}), got ids in [{low}, {high}]")
    tokens = tokens.to(device=model_device(model), dtype=torch.long)
    if not repeated:
        return tokens, 0
    if pos % 2 == 0 or pos < 3:
        raise ValueError(
            f"tokens must be repeated sequences [x0, r_1..r_N, r_1..r_N] of odd length 2N+1 >= 3, got length {pos}"
        )
    half = (pos - 1) // 2
    if not torch.equal(tokens[:, 1 : half + 1], tokens[:, half + 1 :]):
        raise ValueError("tokens are not repeated sequences [x0, r_1..r_N, r_1..r_N]: the two halves differ")
    return tokens, half
