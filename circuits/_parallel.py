"""Thread use on the CPU: single-threaded small workloads, and small tasks on single-threaded workers.

:func:`one_thread` is the one place that switches torch to a single intra-op thread and back;
everything else here (and in the Fourier analysis) goes through it.

Small forward passes (toy models) are dominated by per-op OpenMP synchronisation, which costs far
more than it gains -- by an order of magnitude on a busy machine -- so they run on one intra-op
thread of the calling thread (:func:`threads_for`); the setting is restored afterwards.

Chunked work (matmul into an L2-sized buffer, then two passes over it) is fastest when each
chunk stays in one core's cache and no OpenMP barrier sits between the steps; with the default
intra-op parallelism every small op becomes a parallel region, which is slow, and very slow on a
shared machine. Here each worker thread runs its ops single-threaded, and there are as many
workers as torch's intra-op threads. Torch ops release the GIL, so the workers run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import torch

__all__ = ["SMALL_WORKLOAD", "one_thread", "parallel_map", "single_threaded", "threads_for"]

#: Largest per-layer activation count (batch x pos x widest of d_model, d_mlp, n_heads x pos) run
#: on a single intra-op thread.
SMALL_WORKLOAD = 1 << 21

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread of the calling thread; its previous count is restored.

    A no-op when the thread already runs on one. Use it for work made of many small ops, where
    each op's OpenMP barrier costs more than the extra threads gain (several times slower on a
    busy machine).
    """
    previous = torch.get_num_threads()
    if previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous > 1:
            torch.set_num_threads(previous)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, device: torch.device) -> list[R]:
    """``[fn(item) for item in items]``, on single-threaded workers when on a multi-core CPU.

    Each call runs under ``torch.inference_mode()`` (a thread-local mode) and, in a worker, under
    :func:`one_thread`, which restores the thread count after each task, so no setting leaks.
    """
    n_workers = min(torch.get_num_threads(), len(items)) if device.type == "cpu" else 1
    if n_workers <= 1:
        with torch.inference_mode():
            return [fn(item) for item in items]

    def run(item: T) -> R:
        with one_thread(), torch.inference_mode():
            return fn(item)

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        return list(pool.map(run, items))


@contextmanager
def threads_for(cfg: object, tokens: torch.Tensor) -> Iterator[None]:
    """Run the block on one intra-op thread when the forward pass is small (CPU only).

    "Small": ``batch * pos * max(d_model, d_mlp, n_heads * pos) <= SMALL_WORKLOAD``. The calling
    thread's previous thread count is restored on exit (:func:`one_thread`).
    """
    with one_thread() if single_threaded(cfg, tokens) else nullcontext():
        yield


def single_threaded(cfg: object, tokens: torch.Tensor) -> bool:
    """Whether a forward pass of ``cfg``'s model on ``tokens`` is small (see :func:`threads_for`)."""
    batch, pos = tokens.shape
    width = max(int(cfg.d_model), int(getattr(cfg, "d_mlp", None) or 0), int(cfg.n_heads) * pos)
    return tokens.device.type == "cpu" and batch * pos * width <= SMALL_WORKLOAD
