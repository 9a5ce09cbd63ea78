"""Fast training forwards for the toy models: :mod:`circuits.plain_forward` where it applies.

``logits`` runs LayerNorm-free and pre-LayerNorm models of any depth with fused causal attention,
``last_position_logits`` one-layer models such as the modular-addition model at the last position
only (:mod:`circuits.plain_forward` says how, and why that is enough). Both equal the model's own
forward (tested to 1e-5), gradients flow into the model's parameters, and any other architecture
takes the model's own forward.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from circuits import plain_forward
from circuits.architecture import plain_forward_supported


def supports_fast_forward(model: HookedTransformer, n_layers: int | None = 1, layer_norm: bool = False) -> bool:
    """True for models with standard positions and plain MLPs of an elementwise activation (if any),
    without LayerNorm.

    ``n_layers`` additionally requires that many layers (``None``: any number); ``layer_norm``
    also admits pre-LayerNorm models with learned weights (``normalization_type="LN"``). The
    conditions are :func:`circuits.architecture.plain_forward_supported`'s.
    """
    return plain_forward_supported(model, n_layers=n_layers, layer_norm=layer_norm)


def logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, pos, d_vocab_out), equal to ``model(tokens)``; falls back to it if unsupported.

    Handles LayerNorm-free and pre-LayerNorm (``"LN"``) models of any depth.
    """
    if not supports_fast_forward(model, n_layers=None, layer_norm=True):
        return model(tokens)
    return plain_forward.logits(model, tokens)


def last_position_logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, d_vocab_out) at the last position; falls back to the full forward."""
    if not supports_fast_forward(model):
        return model(tokens)[:, -1]
    return plain_forward.last_position_logits(model, tokens)
