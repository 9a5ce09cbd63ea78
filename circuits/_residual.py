"""Residual-stream plumbing of the logit lens and causal tracing: input checks, states, ranks.

State ``l`` of a model with ``L`` layers is the residual stream before block ``l``
(``blocks.{l}.hook_resid_pre``; state 0 is the token plus position embedding) for ``l < L``, and
after the last block (``blocks.{L-1}.hook_resid_post``) for ``l = L``: ``L + 1`` states in all.
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_finite_weights, is_int, model_device, vocab_out


def state_names(model: HookedTransformer) -> list[str]:
    """Hook names of the ``n_layers + 1`` residual states (module docstring)."""
    n = int(model.cfg.n_layers)
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]


def check_model(model: object) -> HookedTransformer:
    """``model`` if it is a ``HookedTransformer`` with layers and finite weights (else one line)."""
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"expected a transformer_lens HookedTransformer, got {type(model).__name__}")
    if int(model.cfg.n_layers) < 1:
        raise ValueError("model has no layers")
    check_finite_weights(model)
    return model


def check_tokens(model: HookedTransformer, tokens: object, name: str = "tokens") -> torch.Tensor:
    """``tokens`` as int64 on the model's device: shape (batch >= 1, 1 <= pos <= n_ctx), ids in [0, d_vocab)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype == torch.bool or tokens.is_floating_point() \
            or tokens.is_complex():
        got = f"a tensor of {tokens.dtype}" if isinstance(tokens, torch.Tensor) else \
            f"{type(tokens).__module__.split('.')[0]}.{type(tokens).__name__}".removeprefix("builtins.")
        raise TypeError(f"{name} must be an integer torch.Tensor of token ids, got {got}")
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(f"{name} must have shape (batch, pos) with batch, pos >= 1, got {tuple(tokens.shape)}")
    if tokens.shape[1] > int(model.cfg.n_ctx):
        raise ValueError(f"{name} are {tokens.shape[1]} positions long, longer than n_ctx={model.cfg.n_ctx}")
    d_vocab = int(model.cfg.d_vocab)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        raise ValueError(f"{name} ids must lie in [0, d_vocab={d_vocab}), got ids in [{low}, {high}]")
    return tokens.to(device=model_device(model), dtype=torch.long)


def check_targets(model: HookedTransformer, targets: object, shape: tuple[int, ...], name: str = "target"
                  ) -> torch.Tensor:
    """Output token ids of the given shape, in [0, d_vocab_out), as int64 on the model's device."""
    if is_int(targets):
        targets = torch.full(shape, int(targets), dtype=torch.long, device=model_device(model))
    if not isinstance(targets, torch.Tensor) or targets.dtype == torch.bool or targets.is_floating_point():
        raise TypeError(f"{name} must be an int or an integer torch.Tensor of token ids")
    if tuple(targets.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(targets.shape)}")
    d_out = vocab_out(model)
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= d_out):
        raise ValueError(f"{name} ids must lie in [0, d_vocab_out={d_out}), got ids in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    return targets.to(device=model_device(model), dtype=torch.long)


def check_positions(positions: object, n_pos: int, name: str = "positions") -> list[int]:
    """Positions as non-negative ints (negative ones count from the end); all by default."""
    if positions is None:
        return list(range(n_pos))
    if isinstance(positions, (int, np.integer)):
        positions = [positions]
    if isinstance(positions, (torch.Tensor, np.ndarray)):
        positions = positions.tolist()
    out = []
    for p in positions:
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool):
            raise TypeError(f"{name} must be ints, got {p!r}")
        p = int(p)
        if not -n_pos <= p < n_pos:
            raise ValueError(f"{name} entry {p} is outside a sequence of {n_pos} positions")
        out.append(p % n_pos)
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def read_logits(model: HookedTransformer, resid: torch.Tensor) -> torch.Tensor:
    """Logits of residual vectors ``(..., d_model)`` through the final norm (if any) and the unembedding.

    Each vector is normalised on its own, as the final position's would be; ``b_U`` is included,
    a logit soft cap (monotone) is not.
    """
    shape = resid.shape
    x = resid.reshape(-1, 1, shape[-1])
    ln_final = getattr(model, "ln_final", None)
    if ln_final is not None:
        x = ln_final(x)
    return model.unembed(x).reshape(*shape[:-1], -1)


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 +`` the number of ids whose logit is strictly above the target's (ties favour the target)."""
    own = logits.gather(-1, targets.unsqueeze(-1))
    return 1 + (logits > own).sum(-1)
