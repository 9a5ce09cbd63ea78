"""Logit lens and causal tracing (circuits/logit_lens.py, circuits/causal_tracing.py).

The hand-built model: vocabulary V = 8, context 3, residual = one-hot token (dims 0..7) + one-hot
position (dims 8..10). Layer 0 writes nothing; layer 1 has one head that attends (almost
exactly) to position 0 from every query and writes 2 x the one-hot of the token there. W_U reads
the token dims, ``b_U[v] = -0.01 v`` breaks ties. So at position p the final logits are
``[v == x_p] + 2 [v == x_0] - 0.01 v``, and before layer 1 they are ``[v == x_p] - 0.01 v``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits import one_thread
from circuits.causal_tracing import causal_trace
from circuits.logit_lens import logit_lens
from tests.handbuilt_models import random_model

V, N_CTX = 8, 3


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # tiny models: one thread is several times faster on a busy machine
        yield


def copy_first_token_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=V + N_CTX, n_ctx=N_CTX, d_head=V, n_heads=1, d_vocab=V,
                                  attn_only=True, act_fn=None, normalization_type=None,
                                  positional_embedding_type="standard", default_prepend_bos=False)
    model = HookedTransformer(cfg, move_to_device=False)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :V] = torch.eye(V)
        model.pos_embed.W_pos[:, V:] = torch.eye(N_CTX)
        model.unembed.W_U[:V, :] = torch.eye(V)
        model.unembed.b_U[:] = -0.01 * torch.arange(V)
        attn = model.blocks[1].attn
        attn.W_Q[0, V:, 0] = 100.0  # every query: (100, 0, ...)
        attn.W_K[0, V, 0] = 1.0  # only position 0 has a key
        attn.W_V[0, :V, :] = torch.eye(V)
        attn.W_O[0, :, :V] = 2.0 * torch.eye(V)
    return model


def test_logit_lens_ranks_on_the_handbuilt_model():
    model = copy_first_token_model()
    tokens = torch.tensor([[5, 2, 3]])
    lens = logit_lens(model, tokens, torch.tensor([5]))
    # before layer 1 (states 0 and 1) position p holds x_p only: token 5 is ranked below x_p and
    # every smaller id (tie-breaker): 1 + 1 + #{0, 1, 3 or 2, 4} = 6; at position 0 it is x_0 itself.
    expected = torch.tensor([[1, 6, 6], [1, 6, 6], [1, 1, 1]])
    assert torch.equal(lens.ranks[0], expected)
    assert lens.positions == (0, 1, 2)
    assert torch.allclose(lens.mean_reciprocal_rank(), 1.0 / expected.double())
    # per-position targets: the current token x_p is rank 1 at every state before layer 1 and
    # loses the top spot to x_0 (2 > 1) after it, except at position 0
    per_pos = logit_lens(model, tokens, tokens[:, [0, 2]], positions=[0, -1])
    assert torch.equal(per_pos.ranks[0], torch.tensor([[1, 1], [1, 1], [1, 2]]))
    assert per_pos.positions == (0, 2)


def test_logit_lens_final_state_is_the_model_output_and_reads_through_layer_norm():
    model = random_model(n_layers=3, d_vocab=40, d_model=24, n_ctx=6, seed=1)
    tokens = torch.randint(40, (5, 6), generator=torch.Generator().manual_seed(0))
    target = torch.randint(40, (5,), generator=torch.Generator().manual_seed(1))
    lens = logit_lens(model, tokens, target)
    assert lens.ranks.shape == (5, 4, 6) and lens.ranks.min() >= 1 and lens.ranks.max() <= 40
    with torch.no_grad():
        logits = model(tokens)
        _, cache = model.run_with_cache(tokens)
    own = logits.gather(-1, target[:, None, None].expand(5, 6, 1))
    assert torch.equal(lens.ranks[:, -1], 1 + (logits > own).sum(-1))
    # a middle state, read by hand: LayerNorm with ln_final's weights, then W_U + b_U
    resid = cache["blocks.1.hook_resid_pre"]
    ln = model.ln_final
    by_hand = torch.nn.functional.layer_norm(resid, (24,), ln.w, ln.b, ln.eps) @ model.W_U + model.b_U
    own = by_hand.gather(-1, target[:, None, None].expand(5, 6, 1))
    assert torch.equal(lens.ranks[:, 1], 1 + (by_hand > own).sum(-1))


def test_causal_trace_on_the_handbuilt_model():
    model = copy_first_token_model()
    # row 0: answer x_0 = 5 read at the last position; row 1: x_0 = 4 read at position 1
    tokens = torch.tensor([[5, 2, 3], [4, 6, 1]])
    corrupted = torch.tensor([[7, 2, 3], [0, 6, 1]])
    trace = causal_trace(model, tokens, corrupted, torch.tensor([5, 4]), read_position=torch.tensor([2, 1]))
    assert torch.equal(trace.clean, torch.tensor([1.0, 1.0]))
    # corrupted row 0: logits 7 -> 1.93, 3 -> 0.97, then ids 0, 1, 2, 4 above 5: rank 7;
    # row 1: 0 -> 2, 6 -> 0.94, then 1, 2, 3 above 4: rank 6
    assert torch.equal(trace.corrupted, torch.tensor([7.0, 6.0]))
    change = torch.zeros(2, 3, 3, dtype=torch.float64)
    change[0, 0, 0] = change[0, 1, 0] = change[0, 2, 2] = 6  # x_0 before layer 1; the read state after it
    change[1, 0, 0] = change[1, 1, 0] = change[1, 2, 1] = 5
    assert torch.equal(trace.change, change)
    assert torch.equal(trace.mean_change(), change.mean(0))
    logit = causal_trace(model, tokens[:1], corrupted[:1], 5, metric="logit", positions=[0, 1])
    assert logit.positions == (0, 1)
    assert logit.clean.item() == pytest.approx(1.95, abs=1e-5)
    assert torch.allclose(logit.change[0], torch.tensor([[-2.0, 0], [-2.0, 0], [0, 0]], dtype=torch.float64),
                          atol=1e-5)


def test_causal_trace_equals_one_patched_forward_and_nothing_changes_without_corruption():
    model = random_model(n_layers=2, d_vocab=30, d_model=16, n_ctx=4, seed=2)
    g = torch.Generator().manual_seed(3)
    tokens, corrupted = torch.randint(30, (4, 4), generator=g), torch.randint(30, (4, 4), generator=g)
    target = torch.randint(30, (4,), generator=g)
    trace = causal_trace(model, tokens, corrupted, target, metric="logit")
    assert trace.patched.shape == (4, 3, 4)
    _, cache = model.run_with_cache(corrupted)

    def hook(resid, hook):
        resid = resid.clone()
        resid[:, 1] = cache["blocks.1.hook_resid_pre"][:, 1]
        return resid

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", hook)])
    assert torch.allclose(trace.patched[:, 1, 1], logits[torch.arange(4), -1, target].double(), atol=1e-5)
    same = causal_trace(model, tokens, tokens, target)
    assert torch.equal(same.change, torch.zeros_like(same.change))


def test_bad_inputs_are_one_line_errors():
    model, broken = copy_first_token_model(), copy_first_token_model()
    with torch.no_grad():
        broken.unembed.W_U[0, 0] = float("inf")
    tokens = torch.tensor([[5, 2, 3]])
    cases = [
        (lambda: logit_lens(model, tokens, 5, positions=[3]), ValueError, "outside a sequence of 3"),
        (lambda: logit_lens(model, tokens, 5, positions=np.int64(3)), ValueError, "outside a sequence of 3"),
        (lambda: logit_lens(model, tokens, 5, positions=[1.0]), TypeError, "must be ints"),
        (lambda: logit_lens(model, torch.tensor([[5, 8, 3]]), 5), ValueError, r"d_vocab=8"),
        (lambda: logit_lens(model, tokens, 9), ValueError, r"d_vocab_out=8"),
        (lambda: logit_lens(model, tokens, torch.tensor([[1, 2]])), ValueError, "shape"),
        (lambda: logit_lens(model, tokens.float(), 5), TypeError, "integer"),
        (lambda: logit_lens(model, torch.zeros(1, 4, dtype=torch.long), 5), ValueError, "n_ctx=3"),
        (lambda: causal_trace(model, tokens, torch.tensor([[5, 2]]), 5), ValueError, "shape of tokens"),
        (lambda: causal_trace(model, tokens, tokens, 5, read_position=-4), ValueError, "read_position"),
        (lambda: causal_trace(model, tokens, tokens, 5, metric="prob"), ValueError, "metric"),
        (lambda: causal_trace(model, tokens, tokens, torch.tensor([5, 5])), ValueError, "shape"),
        (lambda: logit_lens("model", tokens, 5), TypeError, "HookedTransformer"),
        (lambda: logit_lens(broken, tokens, 5), ValueError, "NaN or infinite weights in: unembed.W_U"),
        (lambda: causal_trace(broken, tokens, tokens, 5), ValueError, "NaN or infinite weights in: unembed.W_U"),
        # a bool is no token id (it used to be read as token 1 or 0)
        (lambda: logit_lens(model, tokens, True), TypeError, "must be an int"),
        (lambda: causal_trace(model, tokens, tokens, False), TypeError, "must be an int"),
        (lambda: causal_trace(model, tokens, tokens, 5, read_position=True), TypeError, "read_position"),
    ]
    for call, kind, match in cases:
        with pytest.raises(kind, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_numpy_integers_are_taken_as_ints():
    model = copy_first_token_model()
    tokens = torch.tensor([[5, 2, 3], [1, 4, 6]])
    lens = logit_lens(model, tokens, np.int64(5), positions=np.int64(-1))
    assert torch.equal(lens.ranks, logit_lens(model, tokens, 5, positions=-1).ranks)
    trace = causal_trace(model, tokens, tokens.flip(0), np.int64(5), read_position=np.int32(-1))
    assert torch.equal(trace.patched, causal_trace(model, tokens, tokens.flip(0), 5, read_position=-1).patched)
