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


def test_serial_executor_keeps_order():
    assert list(SerialExecutor().map_unordered(lambda x: x + 1, [3, 1, 2])) == [4, 2, 3]
