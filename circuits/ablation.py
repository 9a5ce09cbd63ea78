"""Zero-ablation of single heads: how much each head matters for in-context copying."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import check_model, unpadded, vocab_out
from circuits._hooks import head_frame, overflow_checked
from circuits._parallel import threads_for
from circuits.probes import DEFAULT_N_SEQS, DEFAULT_SEED, resolve_probe
from circuits.repeat_loss import second_copy_loss

__all__ = ["ablation_scores"]

#: Largest number of activations (batch copies x positions x width) per ablated forward pass.
_CHUNK_ELEMENTS = 1 << 24


def _ablated_losses(model: HookedTransformer, tokens: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_layers, n_heads)`` losses with each head zero-ablated, and the clean loss."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    batch, length = tokens.shape
    resid, _, shortformer, attention_mask = model.input_to_embed(tokens, attention_mask=unpadded(tokens))
    width = max(int(model.cfg.d_model), int(model.cfg.d_mlp or 0), n_heads * length)
    per_pass = max(1, min(n_heads, _CHUNK_ELEMENTS // (batch * length * width)))
    ablated = torch.zeros(n_layers, n_heads)

    def repeat(x: torch.Tensor | None, copies: int) -> torch.Tensor | None:
        return None if x is None else x.repeat(copies, *([1] * (x.ndim - 1)))

    def zero_heads(first: int, copies: int) -> Callable[[torch.Tensor, object], torch.Tensor]:
        keep = torch.ones(copies, n_heads, dtype=resid.dtype, device=resid.device)
        heads = torch.arange(copies, device=resid.device)
        keep[heads, first + heads] = 0.0

        def hook(z: torch.Tensor, hook: object) -> torch.Tensor:
            view = z.view(copies, batch, *z.shape[1:])  # (copies, batch, pos, n_heads, d_head)
            return (view * keep[:, None, None, :, None]).view(z.shape)

        return hook

    for layer in range(n_layers):
        for h0 in range(0, n_heads, per_pass):
            copies = min(n_heads, h0 + per_pass) - h0
            final = model.run_with_hooks(
                repeat(resid, copies),
                start_at_layer=layer,
                stop_at_layer=n_layers,
                shortformer_pos_embed=repeat(shortformer, copies),
                attention_mask=repeat(attention_mask, copies),
                fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_heads(h0, copies))],
            )
            ablated[layer, h0 : h0 + copies] = second_copy_loss(model, final, tokens, n).cpu()
        resid = model(
            resid,
            start_at_layer=layer,
            stop_at_layer=layer + 1,
            shortformer_pos_embed=shortformer,
            attention_mask=attention_mask,
        )
    clean = second_copy_loss(model, resid, tokens, n).cpu()
    return ablated, clean


@torch.inference_mode()
def ablation_scores(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Loss increase when one head's output is zero-ablated: columns ``layer, head, loss_increase``.

    For every head, its ``z`` (hook ``attn.hook_z``, hence its whole output ``z @ W_O``) is set to
    zero and the mean next-token cross-entropy on the repeated half of ``[x0, r, r]`` is compared
    with the clean one: ``loss_increase = loss_ablated - loss_clean`` (nats; > 0 = the head helps,
    < 0 = it hurts). The loss is taken on ``r_2..r_N`` of the second copy (positions ``N+2..2N``),
    the tokens an induction circuit can predict; ``r_1`` follows the random first half and cannot
    be. Requires ``N >= 2``. Induction heads show large increases (Olsson et al. 2022, "In-context
    learning and induction heads"). Each layer's ablations start from the clean residual stream
    at that layer and are batched over heads; hooks are temporary and the model is unchanged.
    """
    model = check_model(model)
    tokens, n = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=True)
    if n < 2:
        raise ValueError(f"ablation needs half_len >= 2 (a predictable repeated token), got half_len={n}")
    if int(tokens[:, n + 2 :].max()) >= vocab_out(model):
        raise ValueError(f"probe tokens must be below d_vocab_out={vocab_out(model)} to be scored by the loss")
    with threads_for(model.cfg, tokens), overflow_checked(model):
        ablated, clean = _ablated_losses(model, tokens, n)
    if not (bool(torch.isfinite(ablated).all()) and math.isfinite(float(clean))):  # inf - inf: NaN
        raise ValueError("the loss is not finite (with or without a head ablated): the model's logits overflow their "
                         "dtype on these tokens (finite weights too large)")
    increase = ablated - clean
    return head_frame(int(model.cfg.n_layers), int(model.cfg.n_heads), {"loss_increase": increase})
