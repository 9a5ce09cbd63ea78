"""Worker processes forked with the work already in their memory (Linux): the local pool of batch jobs.

:class:`ForkPool` runs ``fn(items[i])`` on ``N`` forked workers. A worker inherits ``fn`` and the
item list from the fork, so nothing is pickled on the way out and the first worker starts on its
first item as soon as it exists; an index (8 bytes) is all a worker is sent, two at a time so it
never waits, and each result comes back pickled through the worker's own pipe. No manager or
feeder thread competes with the workers for the cores. On one 26-checkpoint scoring job on 2
cores (``benchmarks/bench_scoring.py``'s run, ~0.5 s with 2 workers) this took a median 45-65 ms
less per job than ``concurrent.futures.ProcessPoolExecutor``, measured side by side.

A worker that dies (killed for memory, a crash in native code) costs only the item it was
running: the items queued behind it go back to the queue, the item itself is tried again, alone
once nothing else runs, and if its worker dies again the item is reported to
``lost`` (without ``lost``, ``BrokenProcessPool`` is raised). An exception raised by ``fn`` is
raised in the caller. Ctrl-C reaches the caller only: workers ignore SIGINT and are killed when
the caller stops early.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from interp.allocator import reuse_freed_memory

__all__ = ["ForkPool"]

#: Items sent ahead to a worker: one running, one waiting, so a worker never waits for the parent.
IN_FLIGHT = 2


@dataclass(eq=False)
class _Worker:
    pid: int
    tasks: Connection  # the parent sends item indices; closing it tells the worker to exit
    results: Connection  # the worker sends ``(ok, value)`` per item, in order
    running: deque[int] = field(default_factory=deque)  # indices sent and not answered, oldest first
    alone: bool = False  # runs a suspect item with nothing else in flight anywhere


class ForkPool:
    """``workers`` forked processes per :meth:`map_unordered` call; :meth:`close` reaps them."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._exited: list[int] = []  # pids of workers told to exit, not reaped yet

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], lost: Callable | None = None) -> Iterator:
        """``fn(item)`` for every item, as results arrive; see the module docstring."""
        items = list(items)
        queue = deque(range(len(items)))
        suspects: deque[int] = deque()  # running when their worker died: tried again alone
        pool: list[_Worker] = []
        try:
            while queue or suspects or any(w.running for w in pool):
                self._feed(fn, items, pool, queue, suspects)
                busy = {w.results: w for w in pool if w.running}
                for conn in wait(list(busy)):
                    worker = busy[conn]
                    try:
                        ok, value = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        pool.remove(worker)
                        index, how = worker.running.popleft(), _reap(worker)
                        queue.extendleft(reversed(worker.running))  # sent but never started
                        if not worker.alone:
                            suspects.append(index)
                            continue
                        exc = BrokenProcessPool(f"worker process {worker.pid} {how} running item {index}")
                        if lost is None:
                            raise exc from None
                        yield lost(items[index], exc)
                        continue
                    worker.running.popleft()
                    worker.alone = False
                    if not ok:
                        raise value
                    yield value
        finally:
            for worker in list(pool):  # normally none left; after an error or an early stop, killed
                if worker.running:
                    _kill(worker.pid)
                self._retire(worker, pool)

    def _feed(self, fn, items, pool: list[_Worker], queue: deque[int], suspects: deque[int]) -> None:
        """Send work: a suspect alone once nothing runs, else up to ``IN_FLIGHT`` items per worker."""
        if suspects:
            if not any(w.running for w in pool):
                worker = pool[0] if pool else self._start(fn, items, pool)
                worker.alone = True
                _send(worker, suspects.popleft())
            return
        for worker in pool:
            while queue and len(worker.running) < IN_FLIGHT:
                _send(worker, queue.popleft())
        while queue and len(pool) < self.workers:  # each new worker is fed before the next is forked
            worker = self._start(fn, items, pool)
            while queue and len(worker.running) < IN_FLIGHT:
                _send(worker, queue.popleft())
        if not queue:  # nothing left to send: idle workers exit while the others finish
            for worker in [w for w in pool if not w.running]:
                self._retire(worker, pool)

    def _retire(self, worker: _Worker, pool: list[_Worker]) -> None:
        """Tell ``worker`` to exit (its task pipe closes) and forget it; :meth:`close` reaps it."""
        worker.tasks.close()
        worker.results.close()
        pool.remove(worker)
        self._exited.append(worker.pid)

    def _start(self, fn, items, pool: list[_Worker]) -> _Worker:
        task_out, task_in = Pipe(duplex=False)
        result_out, result_in = Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # else the child inherits unwritten output and writes it again
            _flush(stream)
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a process with threads may deadlock; the threads
            # here are torch's idle intra-op pool, which torch re-creates in the child.
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
            pid = os.fork()
        if pid == 0:  # the worker: never returns
            try:
                task_in.close()
                result_out.close()
                for other in pool:  # else a sibling never sees its task pipe close
                    other.tasks.close()
                    other.results.close()
                _work(fn, items, task_out, result_in)
            finally:
                os._exit(1)
        task_out.close()
        result_in.close()
        worker = _Worker(pid, task_in, result_out)
        pool.append(worker)
        return worker

    def close(self) -> None:
        """Wait for the workers of earlier calls to exit (each takes ~20 ms to release its memory)."""
        while self._exited:
            try:
                os.waitpid(self._exited.pop(), 0)
            except ChildProcessError:  # already reaped
                pass


def _work(fn, items: list, tasks: Connection, results: Connection) -> None:
    """The worker's loop: run the items whose indices arrive, send each result; exit when told."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
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


def _send(worker: _Worker, index: int) -> None:
    worker.running.append(index)
    try:
        worker.tasks.send_bytes(index.to_bytes(8, "little"))
    except OSError:  # the worker is dead; its results pipe says so and the index goes back
        pass


def _reap(worker: _Worker) -> str:
    """Wait for a dead worker; how it ended, in words."""
    worker.tasks.close()
    worker.results.close()
    _, status = os.waitpid(worker.pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass
