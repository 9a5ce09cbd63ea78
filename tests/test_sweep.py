"""interp/experiments/sweep.py and interp/experiments/sweep_page.py: grids, restart after a kill, failed cells, the shared table."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

import interp.experiments.sweep as sweep_module
from interp.analysis.capacity_figures import MEASURED_BITS_PER_PARAMETER
from interp.cli import main
from interp.runs.layout import list_checkpoints
from interp.experiments.sweep import parse_grid, read_sweep, sweep, sweep_cells, sweep_table

#: Two tiny modadd cells: p = 7 (49 pairs), 12 full-batch steps, widths 4 and 8.
TINY = {"p": [7], "steps": [12], "d_model": [4, 8]}
CELLS = ("d_model=4,p=7,steps=12,seed=0", "d_model=8,p=7,steps=12,seed=0")


def spy_on(train, calls: list[str]):
    """``train`` that first notes the cell it trains in ``calls``."""

    def spy(options, out, **kwargs):
        calls.append(out.name)
        return train(options, out, **kwargs)

    return spy


def test_killed_sweep_resumes_keeping_finished_cells(tmp_path, monkeypatch):
    real, trained = sweep_module.train, []
    done, killed = CELLS[1], CELLS[0]  # the biggest cell trains first

    def killed_in_the_second_cell(options, out, **kwargs):
        trained.append(out.name)
        if out.name != killed:
            return real(options, out, **kwargs)

        def stop(row):
            if row["step"] >= 6:
                raise KeyboardInterrupt  # Ctrl-C (or a kill) half way through the cell

        return real(options, out, on_eval=stop, **kwargs)

    monkeypatch.setattr(sweep_module, "train", killed_in_the_second_cell)
    with pytest.raises(KeyboardInterrupt):
        sweep("modadd", "default", TINY, [0], tmp_path)
    table = read_sweep(tmp_path)
    assert trained == [done, killed] and list(table["cell"]) == [done] and table["error"].iloc[0] == ""
    assert list_checkpoints(tmp_path / "runs" / killed)  # a partial run was left behind
    first = {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(tmp_path / "runs" / done)}

    trained.clear()
    monkeypatch.setattr(sweep_module, "train", spy_on(real, trained))
    result = sweep("modadd", "default", TINY, [0], tmp_path)
    assert trained == [killed] and result.n_trained == 1 and result.n_failed == 0  # the finished cell is kept
    assert {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(tmp_path / "runs" / done)} == first
    table = result.table
    assert list(table["cell"]) == list(CELLS) and list(table["d_model"]) == [4, 8] and (table["error"] == "").all()
    assert (table["steps"] == 12).all() and (table["params"] > 0).all()
    assert (table["capacity_bits"] == MEASURED_BITS_PER_PARAMETER * table["params"]).all()
    assert (table["dataset_bits"] > 0).all() and (table["peak_memorized_bits"] >= 0).all()
    metrics = pd.read_csv(tmp_path / "runs" / killed / "metrics.csv")
    assert metrics["step"].iloc[-1] == 12 and metrics["step"].is_unique  # resumed to the end, no row twice
    page = result.page.read_text()
    assert "Steps to grokking" in page and "Peak memorised bits against capacity" in page
    assert f"{MEASURED_BITS_PER_PARAMETER} bits per parameter (measured by interp memorization" in page and page.count("<figcaption>") == 2


def test_a_failing_cell_is_an_error_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = sweep_module.train

    def fails_on_width_4(options, out, **kwargs):
        if options.d_model == 4:
            raise RuntimeError("out of luck\nsecond line")
        return real(options, out, **kwargs)

    monkeypatch.setattr(sweep_module, "train", fails_on_width_4)
    result = sweep("modadd", "default", TINY, [0], tmp_path)
    table = result.table.set_index("cell")
    assert result.n_failed == 1 and table.loc[CELLS[0], "error"] == "RuntimeError: out of luck"
    assert pd.isna(table.loc[CELLS[0], "params"]) and table.loc[CELLS[1], "error"] == ""
    assert "Errors" in result.page.read_text()

    monkeypatch.setattr(sweep_module, "train", real)  # the failed cell is tried again, the other kept
    result = sweep("modadd", "default", TINY, [0], tmp_path)
    assert result.n_trained == 1 and result.n_failed == 0 and (result.table["error"] == "").all()


def test_bad_grid_keys_and_values_are_named():
    cases = {
        "bogus=1": "bad grid key 'bogus': not a training option; modadd takes",
        "batch_size=2": "bad grid key 'batch_size': not an option the modadd task or the training loop reads",
        "seed=1": "give the seeds with --seed 0,1",
        "betas=1": "bad grid key 'betas'",
        "d_model": "expected KEY=VALUE",
        "d_model=": "expected KEY=VALUE",
        "d_model=x": "bad grid value d_model=x: expected an integer",
        "lr=fast": "bad grid value lr=fast: expected a number",
        "lr=0": "bad grid value lr=0: must be positive",
        "weight_decay=-1": "bad grid value weight_decay=-1: must not be negative",
        "float64_loss=maybe": "expected true or false",
        "d_model=8,8": "repeats a value",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            parse_grid("modadd", [spec])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid("modadd", ["d_model=8", "d_model=16"])
    assert parse_grid("modadd", ["d_model=8,16", "frac_train=0.3", "lr_schedule=linear"]) == \
        {"d_model": [8, 16], "frac_train": [0.3], "lr_schedule": ["linear"]}
    assert parse_grid("induction", ["batch_size=32"]) == {"batch_size": [32]}
    # values that parse but do not fit the task or the model
    with pytest.raises(ValueError, match="bad grid value d_model=18: d_model must be a positive multiple of 4"):
        sweep_cells("modadd", "default", {"d_model": [16, 18]}, [0])
    with pytest.raises(ValueError, match=r"bad grid value frac_train=1.5: frac_train must be in \(0, 1\)"):
        sweep_cells("modadd", "default", {"frac_train": ["1.5"]}, [0])
    with pytest.raises(ValueError, match="bad grid value lr_schedule=cosine: unknown lr_schedule"):
        sweep_cells("modadd", "default", {"lr_schedule": ["cosine"]}, [0])
    # a value judged with the grid's other values: refused before, with the preset's p=113 alone
    assert len(sweep_cells("modadd", "default", {"p": [1009], "frac_train": [0.00003]}, [0])) == 1
    with pytest.raises(ValueError, match="bad grid value d_model=18: d_model must be"):  # not adam_eps, checked first
        sweep_cells("modadd", "default", {"adam_eps": [1e-8, 1e-6], "d_model": [18]}, [0])
    with pytest.raises(ValueError, match="grid cell frac_train=3e-05,p=113,seed=0 does not fit modadd/default: "
                                         "frac_train=3e-05 leaves no training pair"):
        sweep_cells("modadd", "default", {"p": [113, 1009], "frac_train": [0.00003, 0.3]}, [0])
    with pytest.raises(ValueError, match="unknown preset"):
        sweep_cells("modadd", "fastest", {}, [0])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        sweep_cells("modadd", "default", {}, [0, 0])
    cells = sweep_cells("modadd", "default", {"frac_train": [0.5, 0.3], "d_model": [8]}, [1, 0])
    assert [c.name for c in cells] == ["d_model=8,frac_train=0.5,seed=1", "d_model=8,frac_train=0.5,seed=0",
                                       "d_model=8,frac_train=0.3,seed=1", "d_model=8,frac_train=0.3,seed=0"]
    assert cells[0].options().d_model == 8 and cells[0].options().seed == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "modadd", "--grid", "bogus=1", "--out-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad grid key 'bogus'" in err
    assert not (tmp_path / "s").exists()  # nothing written before the grid is checked
    assert main(["sweep", "induction", "--out-dir", str(tmp_path / "s")]) == 2
    assert "no default grid for induction" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["sweep", "modadd", "--grid", "steps=2", "--grid", "p=7", "--out-dir", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_cell_holding_only_a_killed_write_is_trained(tmp_path):
    """A sweep killed while a cell wrote its first run.json leaves the cell directory with a temp file only."""
    args = ["--grid", "d_model=4", "--grid", "p=7", "--grid", "steps=20", "--out-dir", str(tmp_path / "s"), "--quiet"]
    cell = tmp_path / "s" / "runs" / "d_model=4,p=7,steps=20,seed=0"
    cell.mkdir(parents=True)
    (cell / ".interp-0badc0de.tmp").write_text("{")
    assert main(["sweep", "modadd", *args]) == 0
    assert (read_sweep(tmp_path / "s")["error"] == "").all() and (cell / "run.json").exists()


def test_a_run_of_other_options_is_refused(tmp_path):
    sweep("modadd", "default", {"p": [7], "steps": [4], "d_model": [4]}, [0], tmp_path)
    with pytest.raises(ValueError, match="trained with other options.*preset 'default' not 'nanda2023'"):
        sweep("modadd", "nanda2023", {"p": [7], "steps": [4], "d_model": [4]}, [0], tmp_path)
    # another capacity figure: the page would mix two (the old cells' capacity_bits at the first)
    with pytest.raises(ValueError, match=f"holds cells at {MEASURED_BITS_PER_PARAMETER:g} bits per parameter, not 3.6"):
        sweep("modadd", "default", {"p": [7], "steps": [4], "d_model": [4, 8]}, [0], tmp_path, bits_per_parameter=3.6)
    assert len(read_sweep(tmp_path)) == 1  # refused before anything trained
    # a record holding NaN (json reads it) was blamed on runs.csv ("cells at 2.44, nan bits per parameter")
    (tmp_path / "sweep.json").write_text('{"bits_per_parameter": NaN}')
    with pytest.raises(ValueError, match="sweep.json is not a sweep's record of its capacity figure"):
        sweep("modadd", "default", {"p": [7], "steps": [4], "d_model": [4]}, [0], tmp_path)
    with pytest.raises(ValueError, match="bits per parameter must be a positive number of at most 64, got 65"):
        sweep("modadd", "default", {"p": [7], "steps": [4], "d_model": [4]}, [0], tmp_path, bits_per_parameter=65.0)


def test_a_sweep_of_another_recipe_or_figure_starting_at_the_same_time_changes_nothing(tmp_path):
    """Two sweeps started together both passed the folder's checks, before either had a row: the later
    one's error row replaced the other's finished row (another preset, same cell names), or the table
    mixed two capacity figures, after which every sweep of the folder was refused."""
    from interp.experiments.sweep import FIGURE_FILE, _claim_capacity_figure, sweep_table

    path = tmp_path / "runs.csv"
    _claim_capacity_figure(None, 2.44, path)  # the first sweep's start: no row yet, the figure recorded
    assert json.loads((tmp_path / FIGURE_FILE).read_text()) == {"bits_per_parameter": 2.44}
    with pytest.raises(ValueError, match="sweep.json records 2.44 bits per parameter, not 3.6, from a sweep into .* "
                                         "that has no finished cell: if it is no longer running, delete sweep.json"):
        sweep("modadd", "default", {"p": [7], "steps": [4], "d_model": [4]}, [0], tmp_path, bits_per_parameter=3.6)
    assert not path.exists()
    cell = {"cell": "d_model=4,p=7,steps=4,seed=0", "task": "modadd", "d_model": 4, "p": 7, "steps": 4, "seed": 0}
    table = sweep_table(path)
    table.merge([{**cell, "preset": "default", "params": 100, "steps": 4, "seconds": 0.1, "error": ""}])
    table.merge([{**cell, "preset": "nanda2023", "error": "RunError: ... holds a run trained with other options"}])
    rows = read_sweep(path)
    assert rows["preset"].tolist() == ["default", "nanda2023"] and rows["error"].tolist()[0] == ""
    # the default sweep's own rerun: nothing of its own failed, so no error line and exit 0
    (tmp_path / FIGURE_FILE).unlink()
    assert main(["sweep", "modadd", "--grid", "p=7", "--grid", "steps=4", "--grid", "d_model=4", "--out-dir",
                 str(tmp_path), "--quiet"]) == 0


def test_two_writers_of_one_table_keep_every_row(tmp_path):
    path = tmp_path / "runs.csv"

    def write(width: int) -> None:
        for seed in range(12):
            cell = f"d_model={width},seed={seed}"
            sweep_table(path).merge([{"cell": cell, "task": "modadd", "preset": "default", "d_model": width,
                                      "seed": seed, "params": 10 * seed, "seconds": 0.1, "error": ""}])

    threads = [threading.Thread(target=write, args=(width,)) for width in (8, 16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    table = read_sweep(path)
    assert len(table) == 24 and table["cell"].is_unique
    assert list(table.columns[:5]) == ["cell", "task", "preset", "d_model", "seed"]
    assert str(table["d_model"].dtype) == "Int64" and table["test99_step"].isna().all()


def test_report_of_a_sweep_directory(tmp_path, capsys):
    table = pd.DataFrame([
        {"cell": "a", "task": "modadd", "preset": "default", "d_model": 8, "seed": 0, "params": 2793,
         "dataset_bits": 43500.0, "capacity_bits": 6619.4, "bits_per_parameter": 2.37, "peak_memorized_bits": 6000.0,
         "peak_step": 200, "train99_step": 300, "test99_step": None, "steps": 1500, "seconds": 40.0, "error": ""},
        {"cell": "b", "task": "modadd", "preset": "default", "d_model": 64, "seed": 0, "params": 64561,
         "dataset_bits": 26128.1, "capacity_bits": 153009.6, "bits_per_parameter": 2.37, "peak_memorized_bits": 20000.0,
         "peak_step": 140, "train99_step": 140, "test99_step": 700, "steps": 1500, "seconds": 130.0, "error": ""},
    ])
    (tmp_path / "sweep").mkdir()
    table.to_csv(tmp_path / "sweep" / "runs.csv", index=False)
    assert main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "page.html"), "--quiet"]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "2 cells, 1 grokked" in page and page.count("<figure ") == 2
    assert "N_train (min(test loss, ln p) - train loss) / ln 2" in page  # the formula plotted, not the one replaced
    from interp.experiments.sweep_page import plot_grokking_against_bits

    figure = plot_grokking_against_bits(read_sweep(tmp_path / "sweep"))
    not_grokked = figure.data[2]
    assert list(not_grokked.y) == [1500] and list(not_grokked.x) == pytest.approx([43500.0 / 6619.4])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a sweep table"):
        read_sweep(tmp_path / "other.csv")


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes(tmp_path, monkeypatch):
    """``interp sweep`` in its own process, killed (SIGKILL) once the first cell is in runs.csv."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sweep"
    args = ["--grid", "d_model=4,8", "--grid", "p=7", "--grid", "steps=600", "--out-dir", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "interp", "sweep", "modadd", *args], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "runs.csv").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    finished = set(read_sweep(out)["cell"])
    assert len(finished) == 1
    trained: list[str] = []
    monkeypatch.setattr(sweep_module, "train", spy_on(sweep_module.train, trained))
    assert main(["sweep", "modadd", *args]) == 0
    assert not set(trained) & finished and len(trained) == 1
    table = read_sweep(out)
    assert len(table) == 2 and (table["error"] == "").all() and (table["steps"] == 600).all()


@pytest.mark.slow  # starts a Dask scheduler and worker (the worker imports torch)
def test_a_relative_out_on_a_cluster_started_elsewhere_lands_where_the_user_asked(tmp_path, monkeypatch):
    """A real scheduler and worker on 127.0.0.1 whose working directory is another folder."""
    import os
    import subprocess
    import sys
    import time

    pytest.importorskip("distributed")
    root = Path(__file__).resolve().parents[1]
    elsewhere, user = tmp_path / "workers", tmp_path / "user"
    elsewhere.mkdir()
    user.mkdir()
    address_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    common = dict(cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(address_file)], **common)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                   str(address_file), "--nthreads", "1", "--no-dashboard"], **common)
        address = json.loads(address_file.read_text())["address"]
        monkeypatch.chdir(user)
        result = sweep("modadd", "default", {"d_model": [8], "steps": [20]}, [0], "relative/out", scheduler=address)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
    assert result.n_failed == 0 and result.n_trained == 1
    cell = result.table["cell"].iloc[0]
    assert (user / "relative" / "out" / "runs" / cell / "run.json").is_file()  # where the user asked
    assert not list(elsewhere.rglob("run.json"))  # nothing in the workers' directory


def test_an_edited_or_cut_short_table_is_one_line_or_trained_again(tmp_path, capsys):
    # steps of 1e400: an OverflowError traceback; a row cut short inside its results: kept as a
    # finished cell (peak bits 6.39, no steps), shown on the page and never trained again
    args = ["sweep", "modadd", "--grid", "p=7", "--grid", "steps=4", "--grid", "d_model=4", "--out-dir", str(tmp_path),
            "--quiet"]
    assert main(args) == 0
    path = tmp_path / "runs.csv"
    header, row = list(csv.reader(path.read_text().splitlines()))
    steps = header.index("steps")

    def write(fields: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, fields])
        path.write_text(buffer.getvalue())

    write(row[:steps] + ["1e400"] + row[steps + 1:])
    for command in (args, ["report", str(tmp_path), "--out", str(tmp_path / "p.html")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "runs.csv: row 2, column steps: 'inf' is not a whole number below 2**53" in err
    write(row[:steps - 2])  # cut inside the row
    cut = read_sweep(tmp_path)
    assert cut["error"].tolist() == ["the row in runs.csv lacks values (cut short?): the cell is trained again"]
    assert main(args) == 0  # trained again: the row whole
    assert (read_sweep(tmp_path)["error"] == "").all() and read_sweep(tmp_path)["steps"].tolist() == [4]
