"""The shared modular-addition plumbing (circuits._modadd, circuits._fourier_analysis): inputs, forward pass,
one-thread analysis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuits
from circuits import _fourier_analysis, _modadd, fourier, modadd_answers, modadd_inputs, progress
from circuits._parallel import one_thread
from circuits.architecture import plain_forward_supported
from interp.tasks.modular import all_pairs, answers


def _model(**changes: object) -> HookedTransformer:
    """A one-layer modular-addition model for p = 23 in float64, with attention made less uniform."""
    cfg = dict(
        n_layers=1, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=24, d_vocab_out=23, n_ctx=3,
        act_fn="relu", normalization_type=None, dtype=torch.float64,
    )
    cfg.update(changes)
    torch.manual_seed(1)
    model = HookedTransformer(HookedTransformerConfig(**cfg), move_to_device=False)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.mul_(6.0)
        for name, param in model.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")):
                param.normal_(0.0, 0.1)
    return model


def test_inputs_and_answers():
    p = 7
    x, y = modadd_inputs(p), modadd_answers(p)
    assert x.shape == (p * p, 3) and x.dtype == y.dtype == torch.long
    for a, b in ((0, 0), (2, 5), (6, 6)):
        assert x[a * p + b].tolist() == [a, b, p]
        assert int(y[a * p + b]) == (a + b) % p
    a, b = _modadd.pair_operands(p)
    assert torch.equal(x[:, 0], a) and torch.equal(x[:, 1], b)
    assert torch.equal(all_pairs(p), x) and torch.equal(answers(p), y)  # interp's task data is the same grid
    assert circuits.modadd_inputs is modadd_inputs and "modadd_answers" in circuits.__all__


@pytest.mark.parametrize(
    "changes",
    [{}, {"act_fn": "gelu"}, {"n_heads": 1, "d_head": 32}, {"n_key_value_heads": 4}],
    ids=["relu", "gelu", "one-head", "grouped-kv"],
)
def test_fast_path_and_fallback_agree(changes, monkeypatch):
    model = _model(**changes)
    assert plain_forward_supported(model, n_layers=1, require_mlp=True)
    fast_logits, fast_post = _modadd.last_position_outputs(model)
    monkeypatch.setattr(_modadd, "plain_forward_supported", lambda *args, **kwargs: False)
    logits, post = _modadd.last_position_outputs(model)
    assert fast_logits.dtype == logits.dtype == torch.float64
    torch.testing.assert_close(fast_logits, logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast_post, post, rtol=1e-10, atol=1e-10)
    with torch.inference_mode():
        reference = model(modadd_inputs(23))[:, -1]
    torch.testing.assert_close(logits, reference, rtol=1e-10, atol=1e-10)


def test_unsupported_models_take_the_model_forward(monkeypatch):
    model = _model(act_fn="solu")  # an activation the fast path does not admit

    def fail(*args, **kwargs):
        raise AssertionError("the closed form was used")

    monkeypatch.setattr(_modadd, "_fast_forward", fail)
    logits, _ = _modadd.last_position_outputs(model)
    with torch.inference_mode():
        torch.testing.assert_close(logits, model(modadd_inputs(23))[:, -1], rtol=0, atol=0)


def test_analysis_runs_on_one_thread_and_restores_it(monkeypatch):
    seen = []
    original = _fourier_analysis.neuron_block_fractions

    def spy(acts, p):
        seen.append(torch.get_num_threads())
        return original(acts, p)

    monkeypatch.setattr(_fourier_analysis, "neuron_block_fractions", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        an = _fourier_analysis.analyze(_model(), None)
        assert seen == [1] and torch.get_num_threads() == 2
        with one_thread():
            assert torch.get_num_threads() == 1
            with one_thread():  # nested: a no-op
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert an.p == 23 and an.logits.shape == (23 * 23, 23) and an.neuron_frac.shape == (11, 64)
    assert _fourier_analysis.key_rule(an) == fourier.key_frequencies(_model())
    assert list(_fourier_analysis.spectrum_frame(an)["freq"]) == list(range(1, 12))


def test_public_names_stay_importable():
    assert fourier.check_modadd_model is _modadd.check_modadd_model
    assert fourier.last_position_outputs is _modadd.last_position_outputs
    assert progress.grokking_phases is circuits.grokking_phases


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_fourier_and_progress_share_only_modadd():
    assert "circuits.progress" not in _imports(fourier)
    assert "circuits.fourier" not in _imports(progress)
    assert "circuits._modadd" in _imports(fourier) & _imports(progress)
    assert "circuits._fourier_analysis" in _imports(fourier) & _imports(progress)


def test_circuits_does_not_import_interp():
    """No module of circuits imports interp, at any depth of its code (docs/architecture.md, Layers)."""
    found = []
    for path in sorted(Path(circuits.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names if n == "interp" or n.startswith("interp.")]
    assert not found


def test_a_modulus_or_split_nothing_can_train_on_is_refused():
    # frac_train inside (0, 1) that rounds to no training pair (or no test pair) trained with NaN
    # losses and left a run every analysis refused; an even or tiny p no Fourier analysis reads.
    from interp.tasks.modular import ModAddTask, train_mask
    from interp.tasks.presets import preset

    with pytest.raises(ValueError, match="frac_train=1e-05 leaves no training pair of the 12769"):
        train_mask(113, 0.00001)
    with pytest.raises(ValueError, match="frac_train=0.99999 leaves no test pair"):
        train_mask(113, 0.99999)
    assert int(train_mask(113, 1 / 12769).sum()) == 1
    for p in (1, 2, 4):
        with pytest.raises(ValueError, match=f"p must be an odd int >= 3 .*got {p}"):
            ModAddTask(preset("modadd", p=p))
    with pytest.raises(ValueError, match="p=100003 is above 2047: its 10,000,600,009 pairs"):  # torch asked for 80 GB
        ModAddTask(preset("modadd", p=100003))
