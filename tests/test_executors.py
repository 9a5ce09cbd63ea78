"""Executors: a worker process that dies costs only the item it died on."""

import os

import pytest

from interp.executors import ProcessExecutor, SerialExecutor


def _times_ten_dying_on_three(x: int) -> int:
    if x == 3:
        os._exit(1)  # what an out-of-memory kill looks like to the pool
    return 10 * x


def test_a_dead_worker_loses_only_its_item():
    executor = ProcessExecutor(2)
    try:
        results = list(executor.map_unordered(_times_ten_dying_on_three, range(8), lost=lambda item, exc: -item))
        # the pool is usable afterwards
        assert sorted(executor.map_unordered(_times_ten_dying_on_three, [1, 2])) == [10, 20]
    finally:
        executor.close()
    assert sorted(results) == sorted([-3] + [10 * x for x in range(8) if x != 3])


def test_without_lost_the_death_is_raised():
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessExecutor(2)
    try:
        with pytest.raises(BrokenProcessPool):
            list(executor.map_unordered(_times_ten_dying_on_three, range(6)))
    finally:
        executor.close()


def test_the_workers_exit_after_close():
    from multiprocessing.connection import wait

    executor = ProcessExecutor(2)
    assert sorted(executor.map_unordered(_times_ten_dying_on_three, [1, 2])) == [10, 20]
    workers = list(executor._pool._processes.values())
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    executor.close()
    # A sentinel is ready once its process has exited. (Not join/exitcode: the pool's own thread
    # reaps the workers, and a second reaper can lose that race and read no exit code.)
    # close() waits for them; this also holds if it ever stops waiting.
    sentinels = [w.sentinel for w in workers]
    for _ in range(200):  # 20 s at most
        if len(wait(sentinels, timeout=0.1)) == len(sentinels):
            break
    assert len(wait(sentinels, timeout=0)) == len(sentinels)


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
    from interp import executors

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
    from interp.executors import make_executor

    with pytest.raises(ValueError, match="not a Dask scheduler address: tcp://127.0.0.1 "):
        make_executor(scheduler="tcp://127.0.0.1")


@pytest.mark.slow  # waits out a timeout
def test_the_probe_works_inside_a_running_event_loop(monkeypatch):
    """In Jupyter an event loop is running; the handshake probe must still run (and time out here)."""
    import asyncio
    import socket

    pytest.importorskip("distributed")
    from interp import executors

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
