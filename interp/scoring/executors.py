"""Executors for batch scoring: one interface over in-process, multi-process and Dask runs.

An executor has one method that matters, ``map_unordered(fn, items, lost=None)``, yielding
``fn(item)`` for every item in the order the results come back, and ``close()``. ``fn`` must be a
module-level function and items and results picklable (they may travel to other processes or
machines).

A worker can die under an item (killed for memory, a crash in native code). The item it was
running (where that cannot be told, every item in flight with it) is then tried again alone on a
fresh worker; an item whose worker dies again is the culprit, and ``lost(item, exc)`` is yielded
in place of its result (without ``lost``, the error is raised). So a batch job records the
failure and goes on.

- :class:`SerialExecutor`: in this process, one item after another.
- :class:`ProcessExecutor`: ``N`` local worker processes, each on one intra-op thread. On Linux
  workers are forked with the items in memory (:mod:`interp.fork_pool`), so they start in
  milliseconds with everything already imported (a spawned worker would pay the ~10 s import of
  transformer_lens); ``fn`` and the items then need not be picklable, only the results.
- :class:`DaskExecutor`: a ``dask.distributed`` scheduler (``tcp://HOST:PORT``) or ``Client``;
  install with ``pip install "interp-circuits[dask]"``. The workers need this package installed.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

import torch

from circuits import one_thread
from interp.base.allocator import reuse_freed_memory
from interp.base.errors import one_line
from interp.scoring.fork_pool import ForkPool

__all__ = ["DaskExecutor", "Executor", "ProcessExecutor", "SerialExecutor", "make_executor"]

T = TypeVar("T")
R = TypeVar("R")
#: ``lost(item, exc)``: the result to yield for an item whose worker died under it.
Lost = Callable[[Any, BaseException], Any]


class Executor(Protocol):
    """Runs ``fn`` over items somewhere and yields the results as they complete."""

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], lost: Lost | None = None) -> Iterator[R]: ...

    def close(self, wait: bool = True) -> None:
        """Release the workers; ``wait=False``: without waiting for them to finish exiting."""


class SerialExecutor:
    """Every item in this process, in order, on one intra-op thread like a worker process.

    One thread per worker everywhere makes ``--workers N`` use N cores, and gives the same
    floating-point reductions (hence the same table) whichever executor runs the items.
    """

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], lost: Lost | None = None) -> Iterator[R]:
        for item in items:  # no worker to lose: this process is the worker
            with one_thread():
                result = fn(item)
            yield result

    def close(self, wait: bool = True) -> None:
        """Nothing to release: the items ran in this process."""


def _init_worker() -> None:
    # One intra-op thread per worker: N workers on N cores, no OpenMP oversubscription.
    torch.set_num_threads(1)
    reuse_freed_memory()


#: Workers are forked with the work in memory (:mod:`interp.fork_pool`) where fork is safe with
#: torch (Linux); elsewhere (macOS, Windows) a ``ProcessPoolExecutor`` spawns them.
FORK_WORKERS = sys.platform.startswith("linux")


class ProcessExecutor:
    """``workers`` local processes, each on one intra-op thread.

    On Linux a :class:`interp.fork_pool.ForkPool` per call; elsewhere, or with ``spawn=True``, a
    spawned ``ProcessPoolExecutor`` with the same rule for a dead worker (at most ``2 * workers``
    items in flight, so memory stays bounded). Spawn for work on a CUDA device: a forked child
    cannot use CUDA once its parent has touched it; spawned workers pay the package import
    (seconds) and need picklable functions and items.
    """

    def __init__(self, workers: int, spawn: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ForkPool | _SpawnedPool = (ForkPool(workers) if FORK_WORKERS and not spawn
                                                 else _SpawnedPool(workers, "spawn" if spawn else None))

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], lost: Lost | None = None) -> Iterator[R]:
        return self._pool.map_unordered(fn, items, lost)

    def close(self, wait: bool = True) -> None:
        self._pool.close(wait)


class _SpawnedPool:
    """A ``ProcessPoolExecutor``; the items in flight when a worker died are tried again one at a time."""

    def __init__(self, workers: int, start_method: str | None = None) -> None:
        self.workers = workers
        self._context = None if start_method is None else multiprocessing.get_context(start_method)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker,
                                   mp_context=self._context)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], lost: Lost | None = None) -> Iterator[R]:
        pending: dict[Future, tuple[Any, bool, ProcessPoolExecutor]] = {}  # future -> item, alone, pool
        suspects: list[Any] = []  # items in flight when a worker died: any of them may have killed it
        source = iter(items)

        def refill() -> None:
            if suspects:  # one suspect at a time, alone in the pool, so a second death names its item
                if not pending:
                    item = suspects.pop(0)
                    pending[self._pool.submit(fn, item)] = (item, True, self._pool)
                return
            for item in itertools.islice(source, max(0, 2 * self.workers - len(pending))):
                pending[self._pool.submit(fn, item)] = (item, False, self._pool)

        refill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item, alone, pool = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:  # a worker died; every item in flight fails with it
                    if pool is self._pool:
                        self._pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = self._new_pool()
                    if not alone:
                        suspects.append(item)
                        continue
                    if lost is None:
                        raise
                    result = lost(item, exc)
                yield result
            refill()

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class DaskExecutor:
    """Items as tasks on a ``dask.distributed`` cluster.

    ``scheduler`` is an address such as ``tcp://SCHEDULER_HOST:8786`` (a client is opened and closed
    by this executor) or an existing ``distributed.Client`` (left open). At most ``max_in_flight``
    tasks are submitted at a time (default: twice the cluster's threads, at least 4), so
    thousands of checkpoints never sit in the scheduler's memory at once.
    """

    def __init__(self, scheduler: Any, max_in_flight: int | None = None) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ValueError(
                'a Dask scheduler needs dask.distributed: pip install "interp-circuits[dask]"'
            ) from None
        if isinstance(scheduler, str):
            self.client, self._owns = _connect(Client, scheduler, CONNECT_TIMEOUT), True
        else:
            self.client, self._owns = scheduler, False
        threads = sum(self.client.nthreads().values()) or 1
        self.max_in_flight = max_in_flight or max(4, 2 * threads)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T], lost: Lost | None = None) -> Iterator[R]:
        """Dask re-runs a task whose worker died (its ``allowed-failures`` setting) before giving up."""
        from distributed import KilledWorker, as_completed

        source = iter(items)
        items_of = {}
        for item in itertools.islice(source, self.max_in_flight):
            items_of[self.client.submit(fn, item, pure=False)] = item
        if not items_of:
            return
        queue = as_completed(list(items_of), loop=self.client.loop)
        for future in queue:
            for item in source:
                nxt = self.client.submit(fn, item, pure=False)
                items_of[nxt] = item
                queue.add(nxt)
                break
            item = items_of.pop(future)
            try:
                result = future.result()
            except KilledWorker as exc:
                if lost is None:
                    raise
                result = lost(item, exc)
            future.release()
            yield result

    def close(self, wait: bool = True) -> None:
        if self._owns:
            self.client.close()


#: Seconds to reach a Dask scheduler and complete its handshake before giving up.
CONNECT_TIMEOUT = 20.0


def _connect(client_class: Any, address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for ``address``, or ``ValueError`` (one line) within ``timeout`` s.

    A bare connection and handshake come first, bounded by ``timeout``: a server that accepts the
    connection but does not speak Dask's protocol (an HTTP server, say) otherwise holds a
    ``Client`` for minutes, or answers with bytes that Dask reads as a huge frame length. Only a
    server that completes the handshake gets a client.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)  # no scheme: tcp, as distributed.Client does
        get_backend(scheme).get_address_host_port(location)
    except (ValueError, NotImplementedError) as exc:
        raise ValueError(f"not a Dask scheduler address: {address} ({exc})") from None

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout + 1.0)
        await comm.close()

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: the usual case
            asyncio.run(handshake())
        else:  # inside a running loop (Jupyter): probe from a thread of its own
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, handshake()).result()
        return client_class(address, timeout=f"{timeout}s", set_as_default=False)
    except (asyncio.TimeoutError, TimeoutError):
        why = f"no Dask handshake within {timeout:.0f} s; is it a Dask scheduler?"
    except (MemoryError, OverflowError, ValueError):  # a foreign server's bytes read as frame lengths
        why = "it answered in another protocol; is it a Dask scheduler?"
    except Exception as exc:  # refused, unreachable, a bad address, ...
        why = one_line(exc)
    raise ValueError(f"cannot connect to the Dask scheduler at {address} ({why})")


def make_executor(workers: int = 1, scheduler: Any = None, spawn: bool = False
                  ) -> SerialExecutor | ProcessExecutor | DaskExecutor:
    """The executor for ``--workers N`` / ``--scheduler ADDRESS`` (the scheduler wins when given);
    ``spawn``: local workers are spawned, not forked (work on a CUDA device, :class:`ProcessExecutor`)."""
    if scheduler is not None:
        return DaskExecutor(scheduler)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers, spawn=spawn)
