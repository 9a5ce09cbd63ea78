import torch

from interp import build_model, load_model, modadd_config
from interp.tasks.fast_forward import last_position_logits, supports_fast_forward
from interp.tasks.modular import all_pairs


def test_fast_logits_equal_full_forward_on_fresh_model():
    model = build_model(modadd_config(), seed=3)
    x = all_pairs(113)
    with torch.no_grad():
        fast, full = last_position_logits(model, x), model(x)[:, -1]
    assert supports_fast_forward(model)
    assert (fast - full).abs().max().item() < 1e-5


def test_fast_logits_equal_full_forward_on_published_model(published_path):
    model = load_model(published_path).double()  # its logits reach ~250: compare in float64
    x = all_pairs(113)
    with torch.no_grad():
        fast, full = last_position_logits(model, x), model(x)[:, -1]
    assert (fast - full).abs().max().item() < 1e-5


def test_fast_forward_gradients_match():
    model = build_model(modadd_config(), seed=0).double()
    x = all_pairs(113)[:500]
    grads = []
    for fn in (lambda: last_position_logits(model, x), lambda: model(x)[:, -1]):
        model.zero_grad()
        fn().pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name, g in grads[1].items():
        assert torch.allclose(grads[0][name], g, atol=1e-8), name


def test_falls_back_for_other_models():
    from interp.tasks.models import induction_config

    model = build_model(induction_config(), seed=0)
    assert not supports_fast_forward(model)
    x = torch.randint(1, 128, (2, 10))
    with torch.no_grad():
        assert torch.equal(last_position_logits(model, x), model(x)[:, -1])


def test_fused_attention_forward_equals_model_forward():
    from interp.tasks.fast_forward import logits
    from interp.tasks.models import induction_config, memorization_config

    for cfg in (induction_config(), modadd_config(), memorization_config(d_model=32, n_layers=2)):
        model = build_model(cfg, seed=1)
        with torch.no_grad():  # LayerNorm starts at w = 1, b = 0: move it so it is really tested
            for name, param in model.named_parameters():
                if ".ln" in name or name.startswith("ln_final"):
                    param.add_(0.3 * torch.randn_like(param))
        x = torch.randint(0, cfg.d_vocab, (4, cfg.n_ctx))
        with torch.no_grad():
            assert (logits(model, x) - model(x)).abs().max().item() < 1e-5


def test_fast_forward_gradients_are_reproducible():
    """Same weights, same batch: bit-identical gradients (an indexed lookup's backward was not)."""
    from interp.tasks.fast_forward import logits
    from interp.tasks.models import induction_config

    for cfg, forward in ((modadd_config(), last_position_logits), (induction_config(), logits)):
        model = build_model(cfg, seed=0)
        x = all_pairs(113) if cfg.n_ctx == 3 else torch.randint(0, cfg.d_vocab, (64, cfg.n_ctx))
        grads = []
        for _ in range(3):
            model.zero_grad()
            forward(model, x).logsumexp(-1).sum().backward()
            grads.append(model.embed.W_E.grad.clone())
        assert all(torch.equal(grads[0], g) for g in grads[1:]), cfg.model_name


def test_plain_forward_pieces_equal_the_modules():
    """circuits.plain_forward's pieces compute what TransformerLens's modules compute."""
    from circuits import plain_forward
    from tests.handbuilt_models import random_model

    model = random_model(seed=2, n_layers=1).double()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 7), generator=generator)
    _, cache = model.run_with_cache(tokens)
    block, x = model.blocks[0], cache["blocks.0.hook_resid_mid"]
    with torch.no_grad():
        embedded = plain_forward.embed(tokens, model.W_E, model.W_pos[:7])
        torch.testing.assert_close(embedded, cache["blocks.0.hook_resid_pre"])
        torch.testing.assert_close(plain_forward.layer_norm(x, block.ln2, model.cfg), block.ln2(x))
        torch.testing.assert_close(plain_forward.add_mlp(x, block, model.cfg), cache["blocks.0.hook_resid_post"])
        final = cache["blocks.0.hook_resid_post"]
        torch.testing.assert_close(plain_forward.unembed(final, model), model.unembed(model.ln_final(final)))
        tok, pos = plain_forward.qkv_tables(block.attn, model.W_E, model.W_pos[:7])
        q = tok[tokens, 0] + pos[:, 0]  # what a first layer without LayerNorm would read: W_E[t] + W_pos[i]
        expected = torch.einsum("bpd,hde->bphe", embedded, block.attn.W_Q) + block.attn.b_Q
        torch.testing.assert_close(q, expected)


def test_the_raw_weight_pieces_are_written_once():
    """LayerNorm and fused attention from the raw weights live in circuits.plain_forward alone."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    written = ("F.layer_norm(", "functional.layer_norm(", "scaled_dot_product_attention(")
    found = [
        str(path.relative_to(root))
        for package in ("circuits", "interp")
        for path in sorted((root / package).rglob("*.py"))
        if path.name != "plain_forward.py" and any(s in path.read_text() for s in written)
    ]
    assert not found
