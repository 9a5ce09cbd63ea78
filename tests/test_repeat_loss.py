import math

import pytest
from handbuilt_models import VOCAB, induction_circuit_model, random_model

from circuits import repeated_token_loss, repeated_tokens


def test_an_induction_circuit_predicts_the_second_copy():
    # the hand-built circuit adds 5 - 1 = 4 to the copied token's logit; the residual stream's own
    # embedding adds 1 to the current token's, and 0 goes to the VOCAB - 2 others
    model = induction_circuit_model()
    expected = math.log(1 + (VOCAB - 2) * math.exp(-4.0) + math.exp(-3.0))
    assert repeated_token_loss(model, half_len=8) == pytest.approx(expected, abs=0.02)


def test_without_the_circuit_the_loss_is_near_chance():
    # no layer 1: only the embedding's +1 on the current token, never the target
    no_heads = induction_circuit_model(layer1=False)
    assert repeated_token_loss(no_heads, half_len=8) == pytest.approx(math.log(math.e + VOCAB - 1), abs=1e-4)
    # no previous-token head: layer 1 attends evenly to everything seen, so it cannot copy
    assert repeated_token_loss(induction_circuit_model(previous_token_head=False), half_len=8) > 2.0


def test_caller_tokens_and_errors():
    model = random_model()
    tokens = repeated_tokens(model, n_seqs=4, half_len=5, seed=3)
    assert repeated_token_loss(model, tokens) == pytest.approx(repeated_token_loss(model, n_seqs=4, half_len=5, seed=3))
    with pytest.raises(ValueError, match="at least 2"):
        repeated_token_loss(model, half_len=1)
    with pytest.raises(ValueError):
        repeated_token_loss(model, tokens[:, :-1])  # not [x0, r, r]
