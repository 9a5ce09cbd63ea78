"""Training one memorisation cell to saturation: the cell, the measurement, the plateau rule.

A *cell* (:class:`MemorizationCell`) is one model size trained on one data set of uniformly
random sequences (:mod:`interp.tasks.random_sequences`) until it stops memorising more
(:func:`train_to_saturation`); :func:`measure_memorization` gives the memorised bits of every
sequence. The sweep over cells and the capacity fit are in :mod:`interp.experiments.memorization`.

**Plateau rule** (when a cell stops): every ``eval_every`` steps the total memorised bits ``M``
of the whole data set is measured (model in eval mode). ``M`` is on a plateau when it has grown
by less than ``plateau_tol * M`` over the last ``plateau_window`` steps. At a plateau the
learning rate drops tenfold and a fresh window starts, ``lr_drops`` times; the next plateau
stops the cell. It also stops when ``M`` is within ``complete_tol`` of the most any causal
model can memorise of the data set (its entropy minus
:func:`interp.tasks.random_sequences.unreachable_bits`, what the first tokens cost before a
prefix identifies its sequence): everything is memorised. Or at ``max_steps``. The row
records which rule stopped it; a cell stopped by ``max_steps`` is not saturated, and
:func:`interp.experiments.memorization.capacity_table` says so.

This loop is kept apart from the training loop of runs (:mod:`interp.training.loop`): see
``docs/architecture.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from interp.tasks.fast_forward import logits as fast_logits
from interp.tasks.models import build_model, memorization_config, on_device_of
from interp.tasks.random_sequences import (
    code_length_bits,
    memorized_bits,
    random_sequences,
    sequence_bits,
    unreachable_bits,
)

__all__ = ["MemorizationCell", "measure_memorization", "train_to_saturation"]


@dataclass(frozen=True)
class MemorizationCell:
    """One model size trained on one random data set until it stops memorising more."""

    d_model: int
    n_layers: int
    n_sequences: int
    seq_len: int = 32
    vocab: int = 64
    seed: int = 0
    lr: float = 1e-2
    lr_drops: int = 2
    batch_size: int = 256
    max_steps: int = 20_000
    eval_every: int = 100
    plateau_window: int = 500
    plateau_tol: float = 0.005
    complete_tol: float = 0.01

    @property
    def model(self) -> str:
        """The model's name in the tables: ``1L-d32``."""
        return f"{self.n_layers}L-d{self.d_model}"

    def config(self):
        """The model's ``HookedTransformerConfig`` (:func:`interp.tasks.models.memorization_config`)."""
        return memorization_config(self.d_model, self.n_layers, self.vocab, self.seq_len)


def measure_memorization(model, tokens: torch.Tensor, vocab: int, batch_size: int = 1024) -> torch.Tensor:
    """Memorised bits of every sequence of ``tokens`` (``[BOS, x]`` rows) under ``model``.

    Each value is ``mem(x)`` in ``[0, S log2 V]`` with ``V = vocab`` (see the module docstring).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long \
            or tokens.shape[0] < 1 or tokens.shape[1] < 2 or int(tokens.min()) < 0:
        raise ValueError(f"tokens must be int64 [BOS, x] rows of non-negative ids, at least one of 2 or more "
                         f"tokens; got {getattr(tokens, 'dtype', type(tokens).__name__)} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    seq_len = tokens.shape[1] - 1
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed the model's n_ctx {model.cfg.n_ctx}")
    if model.cfg.d_vocab_out != vocab or int(tokens[:, 1:].max()) >= vocab or int(tokens.max()) >= model.cfg.d_vocab:
        raise ValueError(f"tokens and vocab {vocab} do not fit the model (d_vocab {model.cfg.d_vocab}, "
                         f"d_vocab_out {model.cfg.d_vocab_out}): it must predict exactly the {vocab} data ids")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        lengths = torch.cat([code_length_bits(fast_logits(model, chunk), chunk)
                             for chunk in tokens.split(batch_size)])
    model.train(was_training)
    return memorized_bits(lengths, seq_len, vocab)


def train_to_saturation(cell: MemorizationCell, on_eval: Callable[[int, torch.Tensor], None] | None = None,
                        device: str | torch.device | None = None) -> dict[str, Any]:
    """Train ``cell``'s model on its data set until the plateau rule stops it; one result row.

    Adam (no weight decay, which would erase stored bits) with a 100-step warm-up to ``lr``, on
    minibatches of ``batch_size`` sequences drawn by a seeded shuffle each epoch. At each
    plateau the learning rate drops tenfold, ``lr_drops`` times, before the run stops: a constant
    rate leaves the loss hovering above what the weights could reach. ``on_eval(step, bits)``
    receives the memorised bits of every sequence at each evaluation. ``device``: where it trains
    (:func:`interp.base.device.resolve_device`; None: the CPU).
    """
    start = time.perf_counter()
    tokens = random_sequences(cell.n_sequences, cell.seq_len, cell.vocab, seed=cell.seed)
    model = build_model(cell.config(), seed=cell.seed, device=device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.lr, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(cell.seed)
    entropy = cell.n_sequences * sequence_bits(cell.seq_len, cell.vocab)
    reachable = entropy - unreachable_bits(tokens)
    (tokens,) = on_device_of(model, tokens)
    history: dict[int, float] = {}
    order, cursor, step, lr, drops = torch.randperm(cell.n_sequences, generator=generator), 0, 0, cell.lr, 0
    while True:
        if step % cell.eval_every == 0 or step == cell.max_steps:
            per_sequence = measure_memorization(model, tokens, cell.vocab)
            history[step] = per_sequence.sum().item()
            if not math.isfinite(history[step]):  # an error row, not a finished cell of no number
                raise ValueError(f"training diverged: the memorised bits are not finite at step {step} (lr {lr:g})")
            if on_eval is not None:
                on_eval(step, per_sequence)
            stopped_by = _stop_reason(cell, step, history, reachable)
            if stopped_by == "plateau" and drops < cell.lr_drops:
                lr, drops, history = lr / 10, drops + 1, {step: history[step]}  # a fresh window
            elif stopped_by:
                break
        if cursor >= cell.n_sequences:
            order, cursor = torch.randperm(cell.n_sequences, generator=generator), 0
        batch = tokens[order[cursor:cursor + cell.batch_size]]
        cursor += cell.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        logits = fast_logits(model, batch)[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, cell.vocab), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    memorized = history[step]
    return {
        "model": cell.model, "d_model": cell.d_model, "n_layers": cell.n_layers, "params": params,
        "n_sequences": cell.n_sequences, "seq_len": cell.seq_len, "vocab": cell.vocab, "seed": cell.seed,
        "max_steps": cell.max_steps, "plateau_window": cell.plateau_window, "entropy_bits": entropy,
        "reachable_bits": reachable, "memorized_bits": memorized,
        "fraction": memorized / reachable if reachable > 0 else float("nan"),
        "bits_per_parameter": memorized / params, "steps": step, "stopped_by": stopped_by,
        "seconds": time.perf_counter() - start, "error": "",
    }


def _stop_reason(cell: MemorizationCell, step: int, history: dict[int, float], reachable: float) -> str:
    """``complete``, ``plateau``, ``max_steps`` or "" (go on); ``history``: step -> memorised bits."""
    memorized = history[step]
    if memorized >= (1 - cell.complete_tol) * reachable:
        return "complete"
    earlier = [s for s in history if s <= step - cell.plateau_window]  # evaluations come every eval_every steps
    before = history[max(earlier)] if earlier else None  # the latest one at least a window back
    if before is not None and memorized - before < cell.plateau_tol * memorized:
        return "plateau"
    if step >= cell.max_steps:
        return "max_steps"
    return ""
