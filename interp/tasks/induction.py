"""Training data for induction heads: BOS + random tokens in which spans of every length recur.

Every sequence is ``[BOS, t_1 .. t_{n-1}]``, built left to right from segments. A segment is
either 1..``max_gap`` *fresh* tokens or, with probability ``copy_prob`` (once at least two
tokens are there), a *copy* of an earlier span: a uniformly chosen start, a length drawn
log-uniformly from ``min_span..max_span`` (so short and long repeats are equally common on a log
scale), cut to what precedes the copy and what fits. Copies may copy copies, and the distance
between a span and its copy is anything the sequence allows: induction in Olsson et al. 2022
("In-context learning and induction heads") works after a repeat of any length and at any
distance, and a model only learns that from data that has both.

Fresh tokens never repeat within a sequence (they are drawn without replacement from the
non-BOS vocabulary, cycling only when a sequence needs more than the vocabulary holds), so every
earlier occurrence of a token is a true copy, as in the ``[BOS, r, r]`` probes. With tokens
drawn with replacement, about a fifth of the tokens of a 64-token sequence over 127 ids recur by
chance, and the heads learn to hedge by keeping attention on BOS (docs/training.md, "Induction").

Batches are a pure function of ``(seed, step)``, so a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from interp.tasks.fast_forward import logits as fast_logits
from interp.tasks.models import INDUCTION_BOS, induction_config, on_device_of

#: Version of the data generator, recorded in run.json: a run resumes only on the data it began with.
DATA_VERSION = "copied-spans-v1"


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator whose state depends only on (seed, step)."""
    return torch.Generator().manual_seed((seed * 2_654_435_761 + step * 40_503 + 1) % (2**63 - 1))


@dataclass(frozen=True)
class CopiedSpans:
    """Sequences of fresh tokens and copies of earlier spans (see the module docstring)."""

    d_vocab: int = 128
    n_ctx: int = 64
    min_span: int = 2
    max_span: int | None = None  # default: as long as fits twice, (n_ctx - 1) // 2
    copy_prob: float = 0.5
    max_gap: int = 8
    bos: int = INDUCTION_BOS

    def __post_init__(self) -> None:
        longest = (self.n_ctx - 1) // 2
        if not 2 <= self.min_span <= (self.max_span or longest) <= longest:
            raise ValueError(
                f"span lengths must satisfy 2 <= min_span <= max_span <= (n_ctx-1)//2 = {longest}, "
                f"got min_span={self.min_span}, max_span={self.max_span}"
            )
        if not 0.0 <= self.copy_prob < 1.0 or self.max_gap < 1 or self.d_vocab < 3:
            raise ValueError(
                f"need 0 <= copy_prob < 1, max_gap >= 1 and d_vocab >= 3; got copy_prob={self.copy_prob}, "
                f"max_gap={self.max_gap}, d_vocab={self.d_vocab}"
            )

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` (batch, n_ctx) and ``repeated`` (batch, n_ctx) bool.

        ``repeated[i, j]`` is True when token j of sequence i is in a copy and is not the copy's
        first token: positions an induction head can predict (target j, predicted from position
        j - 1). Not all of them: a copy's first token is predictable too where that copy goes on
        from a copy of the span just before its own source (about 1.5 % of the predictable
        positions are of this kind; they count as not repeated).
        """
        n, g = self.n_ctx, generator
        pos = torch.arange(n).expand(batch_size, n)
        source = pos.clone()  # source[i, j] = j for fresh tokens, an earlier position for copies
        repeated = torch.zeros(batch_size, n, dtype=torch.bool)
        filled = torch.ones(batch_size, 1, dtype=torch.long)  # position 0 is BOS
        lo, hi = math.log(self.min_span), math.log((self.max_span or (n - 1) // 2) + 1)
        while (filled < n).any():
            u = torch.rand(batch_size, 4, generator=g)
            copy = (u[:, :1] < self.copy_prob) & (filled > 2)
            span = torch.exp(lo + u[:, 1:2] * (hi - lo)).floor().long()
            start = 1 + (u[:, 2:3] * (filled - 2).clamp(min=1)).floor().long()
            gap = 1 + (u[:, 3:4] * self.max_gap).floor().long()
            length = torch.where(copy, torch.minimum(span, filled - start), gap).clamp(max=n - filled)
            segment = (pos >= filled) & (pos < filled + length)
            source = torch.where(segment & copy, start + pos - filled, source)
            repeated |= segment & copy & (pos > filled)
            filled = filled + length
        fresh = torch.rand(batch_size, self.d_vocab - 1, generator=g).argsort(dim=1)
        fresh += (fresh >= self.bos).long()  # ids other than BOS, in a random order per sequence
        is_fresh = source == pos
        order = (is_fresh.long().cumsum(dim=1) - 1) % fresh.shape[1]
        tokens = torch.where(is_fresh, fresh.gather(1, order), 0)
        tokens[:, 0] = self.bos
        while (~is_fresh).any():  # resolve copies of copies: a source is always earlier
            tokens = torch.where(is_fresh, tokens, tokens.gather(1, source))
            is_fresh = is_fresh | is_fresh.gather(1, source)
        return tokens, repeated


class InductionTask:
    """Next-token prediction on :class:`CopiedSpans`, for the 2-layer attention-only model."""

    name = "induction"
    #: The task-specific fields of ``TrainOptions`` it reads (``interp sweep`` checks grid keys against them).
    option_names = ("batch_size",)
    eval_seqs = 256

    def __init__(self, options) -> None:  # options: interp.presets.TrainOptions
        self.options = options
        self.cfg = induction_config()
        self.data = CopiedSpans(d_vocab=self.cfg.d_vocab, n_ctx=self.cfg.n_ctx)
        # A fixed held-out set, drawn from a stream no training step uses.
        self.eval_tokens, self.eval_repeated = self.data.sample(self.eval_seqs, step_generator(options.seed, -1))

    def model_config(self):
        return self.cfg

    def describe(self) -> dict:
        d = self.data
        return {"name": self.name, "data": DATA_VERSION, "d_vocab": d.d_vocab, "n_ctx": d.n_ctx,
                "min_span": d.min_span, "max_span": d.max_span or (d.n_ctx - 1) // 2,
                "copy_prob": d.copy_prob, "max_gap": d.max_gap, "bos": d.bos}

    def train_batch(self, step: int) -> torch.Tensor:
        """The token batch that training step ``step`` uses (the same for a seed and step)."""
        return self.data.sample(self.options.batch_size, step_generator(self.options.seed, step))[0]

    def batch_loss(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of ``model`` on a batch of :meth:`train_batch`."""
        return _next_token_losses(model, tokens).mean()

    def train_loss(self, model, step: int) -> torch.Tensor:
        return self.batch_loss(model, self.train_batch(step))

    def evaluate(self, model, step: int) -> dict[str, float]:
        """Loss of the batch the next step trains on, and held-out losses (all / repeated tokens)."""
        train_loss = self.train_loss(model, step).item()
        losses, correct = _next_token_losses(model, self.eval_tokens, with_correct=True)
        (rep,) = on_device_of(model, self.eval_repeated[:, 1:])
        return {
            "train_loss": train_loss,
            "test_loss": losses.mean().item(),
            "test_acc": correct.float().mean().item(),
            "repeat_loss": losses[rep].mean().item(),
            "repeat_acc": correct[rep].float().mean().item(),
            "nonrepeat_loss": losses[~rep].mean().item(),
        }


def _next_token_losses(model, tokens: torch.Tensor, with_correct: bool = False):
    """Per-position loss (batch, n_ctx - 1) of predicting token j+1 at position j."""
    (tokens,) = on_device_of(model, tokens)
    logits = fast_logits(model, tokens)[:, :-1]
    targets = tokens[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    if with_correct:
        return losses, logits.argmax(-1) == targets
    return losses
