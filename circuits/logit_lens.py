"""Logit lens: where in depth a token becomes decodable from the residual stream.

Definition (docs/scores.md, "Logit lens"): for input ``tokens`` and a target id ``t``, at each
residual state ``l = 0..L`` (``l < L``: before block ``l``, state 0 being the embeddings;
``l = L``: after the last block) and position ``p``, read the state through the model's final
norm and unembedding, ``logits = unembed(ln_final(resid_l[p]))`` (``b_U`` included), and take

    rank = 1 + #{v : logits[v] > logits[t]}        in [1, d_vocab_out]; 1 = the top token
    reciprocal rank = 1 / rank                      in [1/d_vocab_out, 1]

Ties count in the target's favour. At ``l = L`` and the read position the rank is that of the
model's own output. A token that is decodable early (rank 1 at a low ``l``) is computed there;
Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv 2405.15071, section 3)
find the bridge entity of a two-hop query decodable at the ``r1`` position from the middle
layers of a grokked model, on ID queries only. The method is nostalgebraist's (2020,
"interpreting GPT: the logit lens"); the paper's code counts ranks from 0, this one from 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from circuits._checks import unpadded
from circuits._hooks import overflow_checked
from circuits._residual import check_model, check_positions, check_targets, check_tokens, read_logits, \
    state_names, target_ranks

__all__ = ["LogitLens", "logit_lens"]


@dataclass(frozen=True)
class LogitLens:
    """Ranks of the target at every state and position.

    ``ranks``: int64 (batch, n_layers + 1, len(positions)), 1 = top (module docstring);
    ``positions``: the positions read, non-negative, in the order of the last axis.
    """

    ranks: torch.Tensor
    positions: tuple[int, ...]

    @property
    def reciprocal_ranks(self) -> torch.Tensor:
        """``1 / ranks``, float (batch, n_layers + 1, positions), in [1/d_vocab_out, 1]."""
        return 1.0 / self.ranks.double()

    def mean_reciprocal_rank(self) -> torch.Tensor:
        """Mean over the batch of the reciprocal rank: float (n_layers + 1, positions)."""
        return self.reciprocal_ranks.mean(0)


def logit_lens(model: HookedTransformer, tokens: torch.Tensor, targets: torch.Tensor | int,
               positions: list[int] | int | None = None) -> LogitLens:
    """Rank of ``targets`` at every residual state of ``model`` on ``tokens``, at ``positions``.

    Args:
        model: any ``HookedTransformer`` (its final norm, if any, and unembedding read the states).
        tokens: int64 (batch, pos), ids in ``[0, d_vocab)``, ``pos <= n_ctx``.
        targets: the id to rank: an int, a (batch,) tensor (one per sequence, at every position)
            or a (batch, len(positions)) tensor (one per sequence and position); ids in
            ``[0, d_vocab_out)``.
        positions: positions to read (negative counts from the end); default all.

    Raises ``TypeError``/``ValueError`` (one line) for non-integer tokens, ids outside the
    vocabularies, positions outside the sequence, or targets of the wrong shape.
    """
    model = check_model(model)
    tokens = check_tokens(model, tokens)
    batch, n_pos = tokens.shape
    pos = check_positions(positions, n_pos)
    if isinstance(targets, torch.Tensor) and targets.ndim == 1:
        targets = check_targets(model, targets, (batch,), "targets").unsqueeze(1).expand(batch, len(pos))
    else:
        targets = check_targets(model, targets, (batch, len(pos)), "targets")
    names = state_names(model)
    with torch.inference_mode(), overflow_checked(model):
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, attention_mask=unpadded(tokens))
        states = torch.stack([cache[name][:, pos] for name in names], dim=1)  # (batch, L + 1, P, d_model)
        logits = read_logits(model, states)
        ranks = target_ranks(logits, targets.unsqueeze(1).expand(-1, len(names), -1))
    return LogitLens(ranks.cpu(), tuple(pos))
