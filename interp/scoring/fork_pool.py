"""Worker processes forked with the work already in their memory (Linux): the local pool of batch jobs.

:class:`ForkPool` runs ``fn(items[i])`` on ``N`` forked workers. A worker inherits ``fn`` and the
item list from the fork, so nothing is pickled on the way out and the first worker starts on its
first item as soon as it exists; an index (8 bytes) is all a worker is sent, one item at a time
(the next index goes out as soon as a result arrives, before the caller sees that result), and
each result comes back pickled through the worker's own pipe. No manager or feeder thread
competes with the workers for the cores. On one 26-checkpoint scoring job on 2 cores
(``benchmarks/bench_scoring.py``'s run, ~0.5 s with 2 workers) this took a median 45-65 ms less
per job than ``concurrent.futures.ProcessPoolExecutor``, measured side by side.

A worker that dies (killed for memory, a crash in native code) costs only the item it was
running: that item is tried again on a fresh worker, alone once nothing else runs, and if that
worker dies too the item is reported to ``lost`` (without ``lost``, ``BrokenProcessPool`` is
raised). An exception raised by ``fn`` is raised in the caller. Ctrl-C reaches the caller only:
workers ignore SIGINT (it is held back during each fork, so it is not lost there) and are killed
when the caller stops early. Workers exit once nothing is left for them; each call reaps the
workers of the calls before it, and :meth:`ForkPool.close` the rest (or, told not to wait, a
background thread: a worker's exit takes ~20 ms of its core, which the caller need not wait for).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from interp.base.allocator import reuse_freed_memory

__all__ = ["ForkPool"]

#: This process's ends of every live worker's pipes, of every pool and call: a new worker closes
#: its copies, else a sibling would never see its task pipe close.
_PARENT_ENDS: set[Connection] = set()


@dataclass(eq=False)
class _Worker:
    pid: int
    tasks: Connection  # the parent sends item indices; closing it tells the worker to exit
    results: Connection  # the worker sends ``(ok, value)`` for its item
    running: int | None = None  # the index it was sent and has not answered
    alone: bool = False  # runs a suspect item, nothing else in flight


class ForkPool:
    """``workers`` forked processes per :meth:`map_unordered` call; :meth:`close` reaps them."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._exited: list[int] = []  # pids of workers told to exit, not reaped yet

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], lost: Callable | None = None) -> Iterator:
        """``fn(item)`` for every item, as results arrive; see the module docstring."""
        self.close()  # the workers of earlier calls have been told to exit: no zombies pile up
        items = list(items)
        queue = deque(range(len(items)))
        suspects: deque[int] = deque()  # running when their worker died: tried again alone
        pool: list[_Worker] = []
        try:
            self._feed(fn, items, pool, queue, suspects)
            while pool:
                for conn in wait([w.results for w in pool if w.running is not None]):
                    worker = next(w for w in pool if w.results is conn)
                    index, alone = worker.running, worker.alone
                    worker.running, worker.alone = None, False
                    try:
                        ok, value = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        how = self._retire(worker, pool, wait_exit=True)
                        if not alone:
                            suspects.append(index)
                            self._feed(fn, items, pool, queue, suspects)
                            continue
                        self._feed(fn, items, pool, queue, suspects)
                        exc = BrokenProcessPool(f"worker process {worker.pid} {how} running item {index}")
                        if lost is None:
                            raise exc from None
                        yield lost(items[index], exc)
                        continue
                    except Exception as exc:  # the result arrived but cannot be rebuilt here
                        raise RuntimeError(f"cannot read the result of item {index} back from its worker: "
                                           f"{type(exc).__name__}: {exc}") from exc
                    self._feed(fn, items, pool, queue, suspects)  # the worker's next item before the caller's turn
                    if not ok:
                        raise value
                    yield value
        finally:
            for worker in list(pool):  # none left after a full run; after an error or an early stop, killed
                if worker.running is not None:
                    _kill(worker.pid)
                self._retire(worker, pool)

    def _feed(self, fn, items, pool: list[_Worker], queue: deque[int], suspects: deque[int]) -> None:
        """Give idle workers work, start workers up to ``workers``, let the idle rest exit.

        A suspect runs alone on a fresh worker, once nothing else runs.
        """
        if suspects:
            if all(w.running is None for w in pool):
                for worker in list(pool):
                    self._retire(worker, pool)
                worker = self._start(fn, items, pool)
                worker.alone = True
                _send(worker, suspects.popleft())
            return
        for worker in pool:
            if queue and worker.running is None:
                _send(worker, queue.popleft())
        while queue and len(pool) < self.workers:  # each new worker is fed before the next is forked
            _send(self._start(fn, items, pool), queue.popleft())
        for worker in [w for w in pool if w.running is None]:  # nothing left for it
            self._retire(worker, pool)

    def _start(self, fn, items, pool: list[_Worker]) -> _Worker:
        task_out, task_in = Pipe(duplex=False)
        result_out, result_in = Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # else the child inherits unwritten output and writes it again
            _flush(stream)
        parent = os.getpid()
        # SIGINT is held back during the fork: raised inside the fork handlers (logging's), it
        # would be swallowed there; held, it reaches the caller right after.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns that fork() in a process with threads may deadlock; the threads
                # here are torch's idle intra-op pool, which torch re-creates in the child.
                warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
                pid = os.fork()
        except BaseException:
            if os.getpid() != parent:  # never back into the caller's code from a child
                os._exit(1)
            for end in (task_out, task_in, result_out, result_in):
                end.close()
            raise
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pid == 0:  # the worker: never returns
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
                task_in.close()
                result_out.close()
                for end in _PARENT_ENDS:
                    end.close()
                _work(fn, items, task_out, result_in)
            finally:
                os._exit(1)
        task_out.close()
        result_in.close()
        worker = _Worker(pid, task_in, result_out)
        _PARENT_ENDS.update((task_in, result_out))
        pool.append(worker)
        return worker

    def _retire(self, worker: _Worker, pool: list[_Worker], wait_exit: bool = False) -> str:
        """Tell ``worker`` to exit (its task pipe closes) and forget it; reaped now when
        ``wait_exit`` (then: how it ended, in words), else by the next call or :meth:`close`."""
        for end in (worker.tasks, worker.results):
            end.close()
            _PARENT_ENDS.discard(end)
        pool.remove(worker)
        if not wait_exit:
            self._exited.append(worker.pid)
            return ""
        _, status = os.waitpid(worker.pid, 0)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            return f"killed by signal {number} ({signal.Signals(number).name})"
        return f"exited with code {os.waitstatus_to_exitcode(status)}"

    def close(self, wait: bool = True) -> None:
        """Reap the workers told to exit: wait for them (each takes ~20 ms to release its memory),
        or with ``wait=False`` leave that to a background thread and return at once."""
        pids, self._exited = self._exited, []
        if not wait and pids:
            try:
                threading.Thread(target=_reap, args=(pids,), name="fork-pool-reaper", daemon=True).start()
            except RuntimeError:  # no thread to be had (a thread limit, interpreter shutdown): wait here
                _reap(pids)
            return
        _reap(pids)


def _work(fn, items: list, tasks: Connection, results: Connection) -> None:
    """The worker's loop: run the items whose indices arrive, send each result; exit when told."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored now (see _start)
    torch.set_num_threads(1)  # N workers on N cores, no OpenMP oversubscription
    reuse_freed_memory()
    code = 1
    try:
        while True:
            try:
                index = int.from_bytes(tasks.recv_bytes(), "little")
            except EOFError:  # no more work
                code = 0
                return
            try:
                reply = (True, fn(items[index]))
            except BaseException as exc:  # raised in the caller
                reply = (False, exc)
            try:
                results.send(reply)
            except Exception as exc:  # a result or an exception that cannot be pickled
                results.send((False, RuntimeError(f"cannot send the result of item {index} back: {exc}")))
    finally:
        results.close()  # the parent sees the end now, not after this process's memory is released
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        os._exit(code)


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ChildProcessError):  # already reaped
            os.waitpid(pid, 0)


def _send(worker: _Worker, index: int) -> None:
    worker.running = index
    with suppress(OSError):  # a dead worker: its results pipe says so and the index is retried
        worker.tasks.send_bytes(index.to_bytes(8, "little"))


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):  # already gone
        os.kill(pid, signal.SIGKILL)


def _flush(stream: Any) -> None:
    with suppress(AttributeError, OSError, ValueError):  # no stream, or a closed one: nothing to write
        stream.flush()
