"""Plumbing shared by the fact tasks (composition, comparison): query tensors, batches, evaluation.

A *fact* is a query of 2 or 3 tokens whose answer the model predicts at the query's last
position, as in Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv
2405.15071), where a decoder-only model reads ``h r`` -> ``t`` (an atomic fact) and
``h r1 r2`` -> ``t`` (an inferred one). Queries are stored padded to :data:`N_CTX` = 3 tokens
with the task's PAD id; ``answer_pos`` is the last real position (1 for 2-token queries, 2 for
3-token ones). The model is causal, so the padding after an atomic query never reaches its
answer, and a 2-token query is answered at position 1 exactly as the first two tokens of a
3-token query are processed: the bridge entity of ``h r1 r2`` can be read at the ``r1`` position.
The loss is the cross-entropy of the answer token alone.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from interp.tasks.fast_forward import logits as fast_logits
from interp.tasks.induction import step_generator
from interp.tasks.models import on_device_of

#: Longest query (``h r1 r2``, ``attr e1 e2``); every query is padded to it.
N_CTX = 3
#: At most this many queries of each split are evaluated (a fixed seeded sample of larger splits).
EVAL_CAP = 4096


@dataclass(frozen=True)
class Facts:
    """Queries and their answers: ``tokens`` (n, 3) int64 padded with PAD, ``answer_pos`` (n,)
    (1 or 2: the last real position), ``answer`` (n,) token ids."""

    tokens: torch.Tensor
    answer_pos: torch.Tensor
    answer: torch.Tensor

    def __len__(self) -> int:
        return int(self.answer.shape[0])

    def take(self, index: torch.Tensor) -> Facts:
        return Facts(self.tokens[index], self.answer_pos[index], self.answer[index])

    @staticmethod
    def cat(parts: list[Facts]) -> Facts:
        return Facts(torch.cat([p.tokens for p in parts]), torch.cat([p.answer_pos for p in parts]),
                     torch.cat([p.answer for p in parts]))


def given(value, default):
    """``value`` unless it is None (an option left unset), else ``default``; a 0 stays 0 (and is then checked)."""
    return default if value is None else value


def queries(columns: list[torch.Tensor], answer: torch.Tensor, pad: int) -> Facts:
    """Facts from 2 or 3 token columns (each (n,)) and the answers, padded to 3 tokens with ``pad``."""
    n = answer.shape[0]
    tokens = torch.full((n, N_CTX), pad, dtype=torch.long)
    for i, column in enumerate(columns):
        tokens[:, i] = column
    return Facts(tokens, torch.full((n,), len(columns) - 1, dtype=torch.long), answer.long())


def check_request(phi: float, **sizes: object) -> None:
    """``ValueError`` (one line) for a size that is not a whole number or a ``phi`` that is not a
    finite number > 0 (infinity reached ``round`` as an ``OverflowError``)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real) or not (phi > 0 and math.isfinite(phi)):
        raise ValueError(f"phi (inferred/atomic ratio) must be a finite number > 0, got {phi!r}")


def choose(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)`` drawn uniformly, in increasing order."""
    return torch.randperm(n, generator=generator)[:k].sort().values


def check_vocabulary(cfg, d_vocab: int) -> None:
    """Raise ``ValueError`` (one line) when a model config cannot read or write ``d_vocab`` ids in 3 positions."""
    d_out = cfg.d_vocab_out if cfg.d_vocab_out and cfg.d_vocab_out > 0 else cfg.d_vocab
    if cfg.d_vocab < d_vocab or d_out < d_vocab:
        raise ValueError(f"the model's vocabulary (d_vocab={cfg.d_vocab}, d_vocab_out={d_out}) is smaller than "
                         f"the task's {d_vocab} token ids")
    if cfg.n_ctx < N_CTX:
        raise ValueError(f"the model's context n_ctx={cfg.n_ctx} is shorter than the task's {N_CTX}-token queries")


def answer_logits(model, facts: Facts) -> torch.Tensor:
    """Logits (n, d_vocab_out) at each query's answer position."""
    tokens, answer_pos = on_device_of(model, facts.tokens, facts.answer_pos)
    out = fast_logits(model, tokens)
    return out[torch.arange(len(facts), device=out.device), answer_pos]


def loss_and_accuracy(model, facts: Facts) -> tuple[float, float]:
    """Mean cross-entropy (nats) of the answers and the share of queries whose argmax is the answer."""
    if len(facts) == 0:
        return float("nan"), float("nan")
    logits = answer_logits(model, facts)
    (answer,) = on_device_of(model, facts.answer)
    loss = torch.nn.functional.cross_entropy(logits, answer).item()
    return loss, (logits.argmax(-1) == answer).float().mean().item()


class FactsTask:
    """The training protocol of a fact task (``interp/training/loop.py``); subclasses build ``self.data``.

    ``self.data`` must have ``train`` (every trained query: atomic facts then inferred ones),
    ``n_atomic`` (how many of ``train`` are atomic), ``ood_atomic`` (the OOD atomic facts),
    ``test_id``, ``test_ood`` (:class:`Facts`) and ``d_vocab``. Batches of ``batch_size`` queries are
    drawn uniformly with replacement from ``train`` by a generator seeded with (seed, step).
    """

    name = ""

    def _setup(self, options, cfg) -> None:
        check_vocabulary(cfg, self.data.d_vocab)
        self.options, self.cfg = options, cfg
        self.batch_size = given(options.batch_size, 512)
        data, g = self.data, torch.Generator().manual_seed(options.seed + 1)
        n_inferred = len(data.train) - data.n_atomic
        atomic = data.train.take(torch.arange(data.n_atomic))
        inferred = data.train.take(torch.arange(data.n_atomic, len(data.train)))
        self._shares = (data.n_atomic / len(data.train), n_inferred / len(data.train))
        self.eval_sets = {name: facts.take(choose(len(facts), min(len(facts), EVAL_CAP), g)) for name, facts in (
            ("train_atomic", atomic), ("train_inferred", inferred), ("train_ood_atomic", data.ood_atomic),
            ("test_id", data.test_id), ("test_ood", data.test_ood))}

    def model_config(self):
        return self.cfg

    def train_loss(self, model, step: int) -> torch.Tensor:
        g = step_generator(self.options.seed, step)
        batch = self.data.train.take(torch.randint(len(self.data.train), (self.batch_size,), generator=g))
        return torch.nn.functional.cross_entropy(answer_logits(model, batch), *on_device_of(model, batch.answer))

    def evaluate(self, model, step: int) -> dict[str, float]:
        """Losses and accuracies of the training set (atomic and inferred), the OOD atomic facts
        and the two test sets; ``train_*`` weights the atomic and inferred parts by their sizes."""
        res = {name: loss_and_accuracy(model, facts) for name, facts in self.eval_sets.items()}
        (la, aa), (li, ai) = res["train_atomic"], res["train_inferred"]
        wa, wi = self._shares
        return {
            "train_loss": wa * la + wi * li,
            "train_acc": wa * aa + wi * ai,
            "train_atomic_acc": aa,
            "train_inferred_acc": ai,
            "train_ood_atomic_acc": res["train_ood_atomic"][1],
            "test_id_loss": res["test_id"][0],
            "test_id_acc": res["test_id"][1],
            "test_ood_loss": res["test_ood"][0],
            "test_ood_acc": res["test_ood"][1],
        }
