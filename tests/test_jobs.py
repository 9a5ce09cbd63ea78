"""interp/scoring/jobs.py: the restartable job runner of scoring, sweeps and memorisation."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from interp.scoring.jobs import TableFile, pending, run_jobs


def _table(path, **changes) -> TableFile:
    return TableFile(path, read=lambda p: pd.read_csv(p, keep_default_na=False),
                     save=lambda table, name: table.to_csv(name, index=False), key=("item",),
                     order=lambda table: table.sort_values("item", kind="stable", ignore_index=True), **changes)


def _square(item: int) -> dict:
    if item == 3:
        raise KeyboardInterrupt  # Ctrl-C while the fourth item runs
    return {"item": item, "value": item * item}


def test_pending_skips_done_keys_and_repeats_costliest_first():
    assert pending([3, 1, 2, 1, 4], key=str, done={"4"}) == [3, 1, 2]
    words = ["bb", "a", "cc", "a", "ddd"]
    assert pending(words, key=lambda w: w, cost=len) == ["ddd", "bb", "cc", "a"]  # ties keep their order


def test_merge_replaces_the_rows_of_a_key_and_keeps_the_others(tmp_path):
    seen = []
    table = _table(tmp_path / "t.csv", after=lambda merged: seen.append(len(merged)))
    table.merge([{"item": 2, "value": 0}, {"item": 1, "value": 1}])
    merged = table.merge([{"item": 2, "value": 4}, {"item": 3, "value": 9}])
    assert merged.values.tolist() == [[1, 1], [2, 4], [3, 9]]
    assert pd.read_csv(tmp_path / "t.csv").equals(merged) and seen == [2, 3]
    assert table.merge([]).equals(merged) and seen == [2, 3, 3]  # rewritten as it is, derived files too


def test_two_threads_merging_into_one_file_keep_every_row(tmp_path):
    table = _table(tmp_path / "t.csv")

    def write(offset: int) -> None:
        for item in range(offset, offset + 20):
            table.merge([{"item": item, "value": -item}])

    threads = [threading.Thread(target=write, args=(offset,)) for offset in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(pd.read_csv(tmp_path / "t.csv")["item"]) == [*range(20), *range(100, 120)]


def test_rows_waiting_for_the_next_merge_reach_the_file_on_ctrl_c(tmp_path):
    merges = []
    table = _table(tmp_path / "t.csv", after=lambda merged: merges.append(len(merged)))
    with pytest.raises(KeyboardInterrupt):
        run_jobs(_square, [0, 1, 2, 3, 4], into=table, flush_seconds=3600)
    assert merges == [1, 3]  # the first result at once, the next two when the job stopped
    assert pd.read_csv(tmp_path / "t.csv")["value"].tolist() == [0, 1, 4]
    ran = run_jobs(_square, pending([0, 1, 2, 4], key=str, done=map(str, [0, 1])), into=table)
    assert [r["item"] for r in ran.results] == [2, 4] and ran.table["item"].tolist() == [0, 1, 2, 4]
    assert run_jobs(_square, [], into=table).table is None  # nothing run, nothing written
