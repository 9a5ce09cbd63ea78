"""Executors: a worker process that dies costs only the item it died on."""

import os

import pytest

from interp.scoring.executors import FORK_WORKERS, ProcessExecutor, SerialExecutor

#: The forked pool runs any callable on any items (inherited, not pickled); the spawned one needs picklable ones.
forked_only = pytest.mark.skipif(not FORK_WORKERS, reason="workers are forked on Linux only")


def _times_ten_dying_on_three(x: int) -> int:
    if x == 3:
        os._exit(1)  # what an out-of-memory kill looks like to the pool
    return 10 * x


@pytest.fixture(params=["forked", "spawned"])
def pool_kind(request, monkeypatch):
    """Both local pools: forked with the items in memory (Linux) and ProcessPoolExecutor (elsewhere)."""
    from interp.scoring import executors

    monkeypatch.setattr(executors, "FORK_WORKERS", request.param == "forked")
    return request.param


def test_a_dead_worker_loses_only_its_item(pool_kind):
    executor = ProcessExecutor(2)
    try:
        results = list(executor.map_unordered(_times_ten_dying_on_three, range(8), lost=lambda item, exc: -item))
        # the pool is usable afterwards
        assert sorted(executor.map_unordered(_times_ten_dying_on_three, [1, 2])) == [10, 20]
    finally:
        executor.close()
    assert sorted(results) == sorted([-3] + [10 * x for x in range(8) if x != 3])


def test_without_lost_the_death_is_raised(pool_kind):
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessExecutor(2)
    try:
        with pytest.raises(BrokenProcessPool):
            list(executor.map_unordered(_times_ten_dying_on_three, range(6)))
    finally:
        executor.close()


def _pid_after(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return os.getpid()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_workers_exit_after_close():
    executor = ProcessExecutor(2)
    pids = set(executor.map_unordered(_pid_after, [0.2] * 4))
    executor.close()
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(_gone(pid) for pid in pids)  # exited and reaped: no zombie left


def test_close_without_waiting_still_reaps_the_workers():
    import time

    executor = ProcessExecutor(2)
    pids = set(executor.map_unordered(_pid_after, [0.2] * 4))
    executor.close(wait=False)
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pids) == 2 and all(_gone(pid) for pid in pids)  # reaped in the background: no zombie


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@forked_only
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_the_forked_pool_runs_any_callable_and_leaks_nothing():
    """Items and fn are inherited, not pickled: a lambda over unpicklable items runs; no pipe stays open."""
    import threading

    lock = threading.Lock()  # cannot be pickled
    before = _open_fds()
    executor = ProcessExecutor(3)
    try:
        got = sorted(executor.map_unordered(lambda item: item[1] * 2, [(lock, i) for i in range(20)]))
    finally:
        executor.close()
    assert got == [2 * i for i in range(20)]
    assert _open_fds() == before


@forked_only
def test_an_exception_in_fn_reaches_the_caller_and_the_workers_are_stopped():
    def fail_on_five(x: int) -> int:
        if x == 5:
            raise KeyError("five")
        return _pid_after(0.05)

    executor = ProcessExecutor(2)
    with pytest.raises(KeyError, match="five"):
        list(executor.map_unordered(fail_on_five, range(40)))
    executor.close()
    pids = set(executor.map_unordered(_pid_after, [0.0] * 4))
    executor.close()
    assert all(_gone(pid) for pid in pids)


@forked_only
def test_a_caller_that_stops_early_leaves_no_worker():
    executor = ProcessExecutor(2)
    results = executor.map_unordered(_pid_after, [0.05] * 50)
    first = next(results)
    results.close()  # the workers still hold items: they are killed
    executor.close()
    assert _gone(first)


@forked_only
def test_a_worker_killed_by_a_signal_is_named():
    import signal

    def killed_on_two(x: int) -> int:
        if x == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    executor = ProcessExecutor(2)
    try:
        got = list(executor.map_unordered(killed_on_two, range(5), lost=lambda item, exc: str(exc)))
    finally:
        executor.close()
    assert sorted(g for g in got if isinstance(g, int)) == [0, 1, 3, 4]
    (message,) = [g for g in got if isinstance(g, str)]
    assert "killed by signal 9 (SIGKILL)" in message and "item 2" in message


@forked_only
def test_every_worker_gets_an_item_before_any_gets_a_second():
    executor = ProcessExecutor(4)
    try:
        pids = list(executor.map_unordered(_pid_after, [0.3] * 4))
    finally:
        executor.close()
    assert len(set(pids)) == 4


_POISONED = []


def _dies_after_poison(item: str) -> str:
    import time

    if item == "poison":
        _POISONED.append(True)  # state this worker keeps
        time.sleep(0.2)  # each worker takes one
    elif _POISONED:
        os._exit(1)
    return item


@forked_only
def test_an_item_killed_by_its_workers_state_is_retried_on_a_fresh_worker():
    executor = ProcessExecutor(2)
    try:
        got = list(executor.map_unordered(_dies_after_poison, ["poison"] * 4 + ["victim"],
                                          lost=lambda item, exc: "lost"))
    finally:
        executor.close()
    assert sorted(got) == ["poison"] * 4 + ["victim"]  # not retried on the other poisoned worker


@forked_only
def test_workers_of_earlier_calls_are_reaped_without_close():
    executor = ProcessExecutor(2)
    try:
        first = set(executor.map_unordered(_pid_after, [0.1] * 2))
        list(executor.map_unordered(_pid_after, [0.0] * 2))
        assert all(_gone(pid) for pid in first)  # reaped by the second call, not left as zombies
    finally:
        executor.close()


@forked_only
def test_a_worker_of_another_pool_does_not_keep_a_finished_worker_alive():
    """A worker forked while another pool's pipes are open must not hold them open."""
    import threading
    import time

    first, second = ProcessExecutor(1), ProcessExecutor(1)
    results = first.map_unordered(_pid_after, [0.0, 0.0])
    next(results)  # the first pool's worker now runs the second item
    slow = threading.Thread(target=lambda: list(second.map_unordered(_pid_after, [3.0])))
    slow.start()  # forks the second pool's worker while the first pool's pipes are open
    time.sleep(0.5)
    list(results)
    start = time.monotonic()
    first.close()  # its worker was told to exit; it must not wait for the other pool's worker
    assert time.monotonic() - start < 1.5
    slow.join()
    second.close()


def _refuse_to_load() -> None:
    raise ValueError("refused")


class _LoadsOnlyInTheWorker:
    def __reduce__(self):
        return (_refuse_to_load, ())


def _unloadable(x: int) -> object:
    return _LoadsOnlyInTheWorker()


@forked_only
def test_a_result_that_cannot_be_rebuilt_is_named():
    executor = ProcessExecutor(2)
    try:
        with pytest.raises(RuntimeError, match="cannot read the result of item 0 back from its worker: ValueError"):
            list(executor.map_unordered(_unloadable, [0]))
    finally:
        executor.close()


def test_serial_executor_keeps_order():
    assert list(SerialExecutor().map_unordered(lambda x: x + 1, [3, 1, 2])) == [4, 2, 3]


@pytest.mark.slow  # starts processes or waits out a timeout
@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"\xff" * 64])
def test_a_server_that_is_not_dask_fails_in_one_line(monkeypatch, reply):
    """A silent server, an HTTP server, one answering garbage: a one-line ValueError within the timeout."""
    import socket
    import threading
    import time

    pytest.importorskip("distributed")
    from interp.scoring import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(ValueError) as info:
            executors.make_executor(scheduler=f"tcp://127.0.0.1:{server.getsockname()[1]}")
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value) and "is it a Dask scheduler?" in str(info.value)


def test_a_malformed_address_is_named():
    pytest.importorskip("distributed")
    from interp.scoring.executors import make_executor

    with pytest.raises(ValueError, match="not a Dask scheduler address: tcp://127.0.0.1 "):
        make_executor(scheduler="tcp://127.0.0.1")


@pytest.mark.slow  # waits out a timeout
def test_the_probe_works_inside_a_running_event_loop(monkeypatch):
    """In Jupyter an event loop is running; the handshake probe must still run (and time out here)."""
    import asyncio
    import socket

    pytest.importorskip("distributed")
    from interp.scoring import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 1.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # accepts into the backlog, never answers

    async def inside_a_loop() -> str:
        with pytest.raises(ValueError) as info:
            executors.make_executor(scheduler=f"127.0.0.1:{server.getsockname()[1]}")  # no scheme: tcp
        return str(info.value)

    try:
        message = asyncio.run(inside_a_loop())
    finally:
        server.close()
    assert "no Dask handshake" in message and "running event loop" not in message
