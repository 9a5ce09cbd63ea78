"""Linear probes (circuits/linear_probe.py) on hand-built models whose residual stream is known.

The induction-circuit model of tests/handbuilt_models.py writes, at every position p >= 1, the
identity of the previous token into a one-hot subspace of the residual stream in block 0 (its
previous-token head); state 0 holds only the current token and the position. So "the previous
token's class" is linearly decodable from state 1 on and not at state 0, and without the
previous-token head at no state; "the current token's class" is decodable at state 0. The same
holds for the previous token's id read as a number by a scalar probe (R^2 = 1 from state 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits.linear_probe import fit_linear_probe, probe_score, residual_states_at
from tests.handbuilt_models import VOCAB, induction_circuit_model, random_model

N_CTX = 24


def _inputs(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(VOCAB, (n, N_CTX), generator=g), torch.randint(1, N_CTX, (n,), generator=g)


def _token_class(tokens: torch.Tensor, positions: torch.Tensor, offset: int) -> torch.Tensor:
    return tokens[torch.arange(tokens.shape[0]), positions + offset] % 3


@pytest.mark.parametrize("seeds", [(0, 1), (5, 9)])
def test_previous_token_is_decodable_after_the_previous_token_head_only(seeds):
    model = induction_circuit_model()
    (fit, fit_pos), (test, test_pos) = _inputs(seeds[0]), _inputs(seeds[1])
    probe = fit_linear_probe(model, fit, _token_class(fit, fit_pos, -1), fit_pos)
    accuracy = probe_score(model, probe, test, _token_class(test, test_pos, -1), test_pos)
    assert accuracy.shape == (3,)
    assert accuracy[0] < 0.45  # state 0: current token and position only; chance is 1/3
    assert accuracy[1] == 1.0 and accuracy[2] == 1.0  # the previous-token head wrote it; layer 1 leaves it

    current = fit_linear_probe(model, fit, _token_class(fit, fit_pos, 0), fit_pos)
    assert probe_score(model, current, test, _token_class(test, test_pos, 0), test_pos)[0] == 1.0


def test_a_scalar_probe_reads_the_previous_token_id_from_state_1():
    model = induction_circuit_model()
    (fit, fit_pos), (test, test_pos) = _inputs(2), _inputs(3)
    previous = lambda t, p: t[torch.arange(t.shape[0]), p - 1].double()  # noqa: E731
    probe = fit_linear_probe(model, fit, previous(fit, fit_pos), fit_pos, kind="scalar", ridge=1e-4)
    r2 = probe_score(model, probe, test, previous(test, test_pos), test_pos)
    assert probe.n_classes == 1 and r2.dtype == torch.float64
    assert r2[0] < 0.1  # nothing about the previous token at state 0
    assert r2[1] > 0.999 and r2[2] > 0.999
    blind = induction_circuit_model(previous_token_head=False, layer1=False)
    probe = fit_linear_probe(blind, fit, previous(fit, fit_pos), fit_pos, kind="scalar")
    assert float(probe_score(blind, probe, test, previous(test, test_pos), test_pos).max()) < 0.1


def test_without_the_previous_token_head_it_is_never_decodable():
    model = induction_circuit_model(previous_token_head=False, layer1=False)
    (fit, fit_pos), (test, test_pos) = _inputs(0), _inputs(1)
    probe = fit_linear_probe(model, fit, _token_class(fit, fit_pos, -1), fit_pos)
    accuracy = probe_score(model, probe, test, _token_class(test, test_pos, -1), test_pos)
    assert float(accuracy.max()) < 0.45


def test_states_and_positions_are_the_hooked_residual_stream():
    model = random_model(n_layers=2, n_ctx=8, d_vocab=20)
    tokens = torch.randint(20, (5, 8), generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([0, 7, 3, -1, 2])
    states = residual_states_at(model, tokens, positions)
    _, cache = model.run_with_cache(tokens)
    for row, p in enumerate([0, 7, 3, 7, 2]):
        expected = [cache["blocks.0.hook_resid_pre"], cache["blocks.1.hook_resid_pre"], cache["blocks.1.hook_resid_post"]]
        for state, e in enumerate(expected):
            torch.testing.assert_close(states[row, state], e[row, p])
    torch.testing.assert_close(residual_states_at(model, tokens, -1), residual_states_at(model, tokens, 7))


@pytest.mark.parametrize("kind", ["class", "scalar"])
def test_the_probe_is_the_ridge_solution_on_standardised_states(kind):
    model = random_model(n_layers=1, n_ctx=4, d_vocab=20, d_model=16)
    with torch.no_grad():  # feature 0 of state 0 is the same for every input: it keeps sd = 1
        model.embed.W_E[:, 0] = 0.0
        model.pos_embed.W_pos[:, 0] = 0.5
    tokens = torch.randint(20, (60, 4), generator=torch.Generator().manual_seed(1))
    labels = tokens[:, 1] % 4
    targets = labels if kind == "class" else labels.double()
    probe = fit_linear_probe(model, tokens, targets, 1, kind=kind, ridge=0.5)
    y = torch.nn.functional.one_hot(labels, 4).double() if kind == "class" else labels.double()[:, None]
    for state in (0, 1):
        x = residual_states_at(model, tokens, 1)[:, state].double()
        sd = x.std(0, unbiased=False)
        assert (state == 0) == bool(sd[0] == 0)
        z = (x - x.mean(0)) / torch.where(sd > 0, sd, torch.ones_like(sd))
        w = torch.linalg.solve(z.T @ z + 0.5 * 60 * torch.eye(16, dtype=torch.float64), z.T @ (y - y.mean(0)))
        torch.testing.assert_close(probe.weight[state], w)
        torch.testing.assert_close(probe.bias[state], y.mean(0))
    score = probe_score(model, probe, tokens, targets, 1)[1]
    predicted = (z @ w + y.mean(0))
    if kind == "class":
        assert float(score) == pytest.approx(float((predicted.argmax(1) == labels).double().mean()))
    else:
        rss = float(((predicted[:, 0] - targets) ** 2).sum())
        assert float(score) == pytest.approx(1 - rss / float(((targets - targets.mean()) ** 2).sum()))


def test_bad_inputs_are_one_line_errors():
    model = induction_circuit_model()
    tokens, positions = _inputs(0, 20)
    labels = _token_class(tokens, positions, 0)
    cases = [
        (lambda: fit_linear_probe(model, tokens, labels[:5], positions), ValueError, "one per sequence"),
        (lambda: fit_linear_probe(model, tokens, labels.float(), positions), TypeError, "integer"),
        (lambda: fit_linear_probe(model, tokens, torch.zeros(20, dtype=torch.long), positions), ValueError,
         "single class"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, n_classes=2), ValueError, "n_classes=2"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, ridge=0), ValueError, "ridge"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, ridge=None), ValueError, "ridge"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, ridge=float("inf")), ValueError, "ridge"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, n_classes=2.9), ValueError, "n_classes"),
        (lambda: fit_linear_probe(model, tokens, labels, torch.full((20,), N_CTX)), ValueError, "positions"),
        (lambda: fit_linear_probe(model, tokens, labels, 1.5), TypeError, "positions"),
        (lambda: fit_linear_probe(model, torch.zeros(2, N_CTX + 1, dtype=torch.long), labels[:2], 0), ValueError,
         "n_ctx"),
        (lambda: fit_linear_probe(model, tokens, labels, positions, kind="ordinal"), ValueError, "kind"),
        (lambda: fit_linear_probe(model, tokens, torch.ones(20), positions, kind="scalar"), ValueError, "all equal"),
        (lambda: fit_linear_probe(model, tokens, torch.full((20,), float("nan")), positions, kind="scalar"),
         ValueError, "finite"),
    ]
    probe = fit_linear_probe(model, tokens, labels, positions)
    scalar = fit_linear_probe(model, tokens, labels.double(), positions, kind="scalar")
    cases += [
        (lambda: probe_score(model, probe, tokens, labels + 3, positions), ValueError, "the probe's classes"),
        (lambda: probe_score(model, scalar, tokens, torch.ones(20), positions), ValueError, "all equal"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words) as info:
            call()
        assert "\n" not in str(info.value)
    broken = induction_circuit_model()
    with torch.no_grad():
        broken.embed.W_E[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_probe(broken, torch.zeros_like(tokens), labels, positions)


def test_numpy_numbers_are_taken_as_python_ones():
    model = induction_circuit_model()
    tokens, _ = _inputs(0, 40)
    labels = tokens[:, 2] % 3
    plain = fit_linear_probe(model, tokens, labels, 3, n_classes=4, ridge=0.5)
    numpy = fit_linear_probe(model, tokens, labels, np.int64(3), n_classes=np.int64(4), ridge=np.float64(0.5))
    assert numpy.n_classes == 4
    assert torch.equal(plain.weight, numpy.weight) and torch.equal(plain.bias, numpy.bias)
    with pytest.raises(TypeError, match="positions"):
        fit_linear_probe(model, tokens, labels, True)  # a bool is no position
