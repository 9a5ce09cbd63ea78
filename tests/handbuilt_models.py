"""Tiny attention-only transformers with hand-set weights and known heads, for the head detectors.

Residual stream (d_model = 2V + n_ctx), three one-hot subspaces:
    TOK  dims [0, V)          token identity (written by W_E, read by W_U)
    PREV dims [V, 2V)         identity of the previous token (written by the previous-token head)
    POS  dims [2V, 2V+n_ctx)  position (written by W_pos)

Heads of :func:`induction_circuit_model`:
    L0H0  previous-token head: Q reads POS (position p), K reads POS shifted by one, so position p
          attends to p-1; OV copies TOK into PREV.
    L0H1  all-zero weights: uniform attention, writes nothing.
    L1H0  induction head: Q reads the current token (TOK), K reads PREV (K-composition with L0H0),
          so a second-half query attends to the token after the earlier copy of itself; OV copies
          the attended token into TOK, which W_U reads (identity-like OV, scale ``induction_scale``).
    L1H1  anti-induction head: same QK as L1H0, OV negated (scale ``anti_scale`` < 0).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

VOCAB = 12
N_CTX = 24


def induction_circuit_model(
    vocab: int = VOCAB,
    n_ctx: int = N_CTX,
    *,
    strength: float = 100.0,
    induction_scale: float = 5.0,
    anti_scale: float = -1.0,
    previous_token_head: bool = True,
    layer1: bool = True,
) -> HookedTransformer:
    """The 2-layer, 2-head model described in the module docstring.

    ``previous_token_head=False`` zeroes L0H0 (then nothing can form induction attention);
    ``layer1=False`` zeroes both layer-1 heads.
    """
    d_head = max(vocab, n_ctx)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=2 * vocab + n_ctx,
        n_ctx=n_ctx,
        d_head=d_head,
        n_heads=2,
        d_vocab=vocab,
        attn_only=True,
        act_fn=None,
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,
    )
    model = HookedTransformer(cfg, move_to_device=False)
    model.eval()
    tok = slice(0, vocab)
    prev = slice(vocab, 2 * vocab)
    pos0 = 2 * vocab
    eye_v = torch.eye(vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, tok] = eye_v
        model.pos_embed.W_pos[:, pos0 : pos0 + n_ctx] = torch.eye(n_ctx)
        model.unembed.W_U[tok, :] = eye_v
        if previous_token_head:
            a0 = model.blocks[0].attn
            a0.W_Q[0, pos0 : pos0 + n_ctx, :n_ctx] = strength * torch.eye(n_ctx)
            for p in range(n_ctx - 1):
                a0.W_K[0, pos0 + p, p + 1] = 1.0  # key at p matches query at p + 1
            a0.W_V[0, tok, :vocab] = eye_v
            a0.W_O[0, :vocab, prev] = eye_v
        if layer1:
            a1 = model.blocks[1].attn
            for head, scale in ((0, induction_scale), (1, anti_scale)):
                a1.W_Q[head, tok, :vocab] = strength * eye_v
                a1.W_K[head, prev, :vocab] = eye_v
                a1.W_V[head, tok, :vocab] = eye_v
                a1.W_O[head, :vocab, tok] = scale * eye_v
    return model


def random_model(
    *,
    n_layers: int = 2,
    n_heads: int = 3,
    d_model: int = 32,
    d_head: int = 8,
    d_vocab: int = 50,
    d_vocab_out: int = -1,
    n_ctx: int = 32,
    attn_only: bool = False,
    normalization_type: str | None = "LN",
    act_fn: str = "gelu",
    seed: int = 0,
    **extra: object,
) -> HookedTransformer:
    """A randomly initialised model (MLPs and LayerNorm by default), in eval mode."""
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=None if attn_only else 4 * d_model,
        d_vocab=d_vocab,
        d_vocab_out=d_vocab_out,
        attn_only=attn_only,
        act_fn=None if attn_only else act_fn,
        normalization_type=normalization_type,
        default_prepend_bos=False,
        **extra,
    )
    torch.manual_seed(seed)
    model = HookedTransformer(cfg, move_to_device=False)
    model.eval()
    return model


def offset_biases_and_gains(model: HookedTransformer) -> HookedTransformer:
    """Set every bias to random values and the norms' gains and biases off 1 and 0 (in place), so
    that a score that drops a bias, a norm's gain or its centring reads a different model."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("ln1.w", "ln2.w", "ln_final.w")):
                param.copy_(torch.linspace(0.5, 1.5, param.numel()))
            elif name.endswith(("ln1.b", "ln2.b", "ln_final.b")):
                param.copy_(torch.linspace(-0.3, 0.3, param.numel()))
            elif name.split(".")[-1].startswith("b_"):
                param.copy_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    return model


def set_left_padding_tokenizer(model: HookedTransformer) -> None:
    """Give ``model`` a word-level tokenizer over its vocabulary that pads on the left, with token 0
    as its pad (and BOS) token: TransformerLens then takes leading 0s for padding unless told not to."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{f"t{i}": i for i in range(1, int(model.cfg.d_vocab))}}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")),
                                        eos_token="<|endoftext|>")
    model.set_tokenizer(tokenizer, default_padding_side="left")
    assert model.tokenizer.padding_side == "left" and model.tokenizer.pad_token_id == model.tokenizer.bos_token_id == 0
