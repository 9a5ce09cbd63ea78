"""In-context loss on repeated random tokens: how well a model predicts the second copy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from circuits._checks import check_model, unpadded, vocab_out
from circuits._hooks import overflow_checked
from circuits.probes import DEFAULT_N_SEQS, DEFAULT_SEED, resolve_probe


def second_copy_loss(model: HookedTransformer, final_resid: torch.Tensor, tokens: torch.Tensor, half_len: int) -> torch.Tensor:
    """Mean next-token loss on ``r_2..r_N`` of the second half, per copy of the batch.

    ``final_resid``: ``(copies * batch, L, d_model)`` residual after the last block; returns
    ``(copies,)``. Logits are computed only at the positions ``N+1..2N-1`` that predict them.
    """
    n = half_len
    resid = final_resid[:, n + 1 : 2 * n]
    if getattr(model, "ln_final", None) is not None and model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    logits = model.unembed(resid).float()
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
    if cap is not None and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    batch = tokens.shape[0]
    targets = tokens[:, n + 2 :].repeat(logits.shape[0] // batch, 1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return loss.view(-1, batch * (n - 1)).mean(dim=-1)


@torch.inference_mode()
def repeated_token_loss(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
) -> float:
    """Mean loss (nats) on the second copy of ``[x0, r_1..r_N, r_1..r_N]``, its first token excepted.

    loss = mean over the batch and ``k = 2..N`` of ``-ln p(r_k | x0, r, r_1..r_{k-1})``, the
    prediction made at position ``N + k - 1``. ``r_1`` of the second copy is left out: nothing
    in the context predicts it. Range ``[0, inf)``: 0 for perfect copying, ``ln(d_vocab_out)``
    for a model that predicts uniformly over its outputs, ignoring its context.
    This is the in-context loss on repeated random tokens that falls when induction heads form
    (Olsson et al. 2022, "In-context learning and induction heads"). ``tokens`` must have the
    probe's layout; by default the seeded probe ``repeated_tokens(model, n_seqs, half_len,
    seed)``. Needs ``N >= 2``. One forward pass. ``circuits.ablation_scores`` measures its
    ``loss_increase`` on the same loss.
    """
    model = check_model(model)
    tokens, n = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=True)
    if n < 2:
        raise ValueError(f"repeated_token_loss needs repeats of at least 2 tokens, got half_len={n}")
    if int(tokens[:, n + 2 :].max()) >= vocab_out(model):
        raise ValueError(f"probe tokens must be below d_vocab_out={vocab_out(model)} to be scored by the loss")
    with overflow_checked(model):
        final = model(tokens, stop_at_layer=int(model.cfg.n_layers), attention_mask=unpadded(tokens))
    return second_copy_loss(model, final, tokens, n).item()
