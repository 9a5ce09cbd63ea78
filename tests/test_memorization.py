"""Memorisation capacity (Morris et al. 2025) on tiny models: bounds, saturation, the sweep, the CLI."""

import dataclasses
import math
import re

import pandas as pd
import pytest
import torch

from interp.experiments.memorization import (
    MemorizationCell,
    capacity_table,
    fit_bits_per_parameter,
    measure_memorization,
    memorization_sweep,
    sweep_cells,
    train_to_saturation,
)
from interp.experiments.memorization_training import _stop_reason
from interp.tasks.models import build_model, memorization_config
from interp.tasks.random_sequences import (
    code_length_bits,
    memorized_bits,
    random_sequences,
    sequence_bits,
    unreachable_bits,
)

TINY = dict(seq_len=8, vocab=16, eval_every=20, plateau_window=200, max_steps=3000)


def test_random_sequences_are_seeded_uniform_with_bos():
    x = random_sequences(2000, 8, 16, seed=1)
    assert x.shape == (2000, 9) and (x[:, 0] == 16).all()
    assert x[:, 1:].min() == 0 and x[:, 1:].max() == 15
    assert torch.equal(x, random_sequences(2000, 8, 16, seed=1))
    assert not torch.equal(x, random_sequences(2000, 8, 16, seed=2))
    counts = torch.bincount(x[:, 1:].flatten(), minlength=16).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1  # 16000 draws: uniform to within 10 %
    with pytest.raises(ValueError, match="vocab"):
        random_sequences(4, 8, 1)


def test_code_length_of_uniform_and_of_certain_predictions():
    tokens = random_sequences(5, 8, 16, seed=0)
    uniform = torch.zeros(5, 9, 16)
    assert torch.allclose(code_length_bits(uniform, tokens), torch.full((5,), 8 * 4.0, dtype=torch.float64))
    assert torch.allclose(memorized_bits(code_length_bits(uniform, tokens), 8, 16), torch.zeros(5, dtype=torch.float64))
    certain = torch.full((5, 9, 16), -30.0)
    certain[:, :-1].scatter_(-1, tokens[:, 1:, None], 30.0)  # position i puts all mass on token i+1
    mem = memorized_bits(code_length_bits(certain, tokens), 8, 16)
    assert torch.allclose(mem, torch.full((5,), 32.0, dtype=torch.float64), atol=1e-6)
    # a model worse than chance on x has memorised nothing of it, not a negative amount
    wrong = -certain
    assert (memorized_bits(code_length_bits(wrong, tokens), 8, 16) == 0).all()
    assert sequence_bits(8, 16) == 32.0


def test_unreachable_bits_of_a_hand_counted_data_set():
    bos = 9
    tokens = torch.tensor([[bos, 1, 2], [bos, 1, 3], [bos, 2, 2], [bos, 4, 4]])
    # x1: {1: 2, 2: 1, 4: 1} of 4 -> 2 * log2(4/2) + 2 * log2(4/1) = 6 bits;
    # x2: only the two sequences after "1" are ambiguous -> 2 * log2(2/1) = 2 bits
    assert unreachable_bits(tokens) == 8.0
    distinct = random_sequences(64, 8, 64, seed=3)
    assert unreachable_bits(distinct[:1]) == 0.0
    assert 64 * math.log2(64) - 64 <= unreachable_bits(distinct) < 64 * math.log2(64) + 64


def test_clamped_memorised_bits_can_pass_the_reachable_bits():
    # reachable_bits bounds the total code length's saving; mem(x) clamps each sequence at 0, so a
    # model certain of one sequence, hopeless on the others, memorises more than that (docs/scores.md).

    tokens = torch.tensor([[4, 0], [4, 1], [4, 2]])  # 3 one-token sequences of 4 ids
    reachable = 3 * sequence_bits(1, 4) - unreachable_bits(tokens)
    assert reachable == pytest.approx(6 - 3 * math.log2(3))  # 1.245 bits
    model = build_model(memorization_config(8, 1, 4, 1), seed=0)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.unembed.b_U[0] = 50.0  # certain of token 0
    memorized = float(measure_memorization(model, tokens, 4).sum())
    assert memorized == pytest.approx(2.0) and memorized / reachable == pytest.approx(1.606, abs=1e-3)


def test_far_below_capacity_memorises_almost_everything():
    cell = MemorizationCell(d_model=32, n_layers=1, n_sequences=8, **TINY)
    row = train_to_saturation(cell)
    assert row["entropy_bits"] == 8 * 32.0
    assert row["stopped_by"] == "complete" and row["fraction"] >= 0.99
    # all but the first token: 8 first tokens, distinct or not, cost what the seeded draw makes them
    assert row["entropy_bits"] - 8 * 4 <= row["reachable_bits"] < row["entropy_bits"]
    assert row["memorized_bits"] >= 0.99 * row["reachable_bits"]
    assert row["params"] == sum(p.numel() for p in build_model(cell.config()).parameters())


def test_a_data_set_with_nothing_reachable_gives_a_row_not_an_error():
    # two one-token sequences of two different tokens: the best causal model of them is the 50/50
    # first-token distribution, so nothing is reachable and the memorised fraction is undefined
    cell = MemorizationCell(d_model=8, n_layers=1, n_sequences=2, seq_len=1, vocab=2, eval_every=20,
                            plateau_window=100, max_steps=200)
    tokens = random_sequences(2, 1, 2, seed=cell.seed)
    assert tokens[0, 1] != tokens[1, 1]  # the seeded draw this test relies on
    row = train_to_saturation(cell)
    assert row["reachable_bits"] == 0.0 and row["error"] == ""
    assert math.isnan(row["fraction"]) and row["bits_per_parameter"] == row["memorized_bits"] / row["params"]


def test_memorised_bits_stay_within_zero_and_the_entropy_while_training():
    seen = []
    cell = MemorizationCell(d_model=16, n_layers=1, n_sequences=400, **{**TINY, "max_steps": 400})
    row = train_to_saturation(cell, on_eval=lambda step, bits: seen.append(bits))
    assert row["stopped_by"] == "max_steps" and row["steps"] == 400 and len(seen) == 21
    for bits in seen:
        assert bits.shape == (400,) and (bits >= 0).all() and (bits <= 32.0).all()
    assert seen[0].sum() < 0.02 * row["entropy_bits"] < seen[-1].sum()  # it learned, from ~nothing
    assert (seen[-1] > 0).float().mean() > 0.5 and (seen[-1] < 32).all()  # partly, not wholly
    assert math.isclose(row["memorized_bits"], seen[-1].sum().item())


def test_measure_rejects_inputs_that_do_not_fit_the_model():
    model = build_model(memorization_config(16, 1, vocab=16, seq_len=8), seed=0)
    with pytest.raises(ValueError, match="n_ctx"):
        measure_memorization(model, random_sequences(2, 12, 16), 16)
    with pytest.raises(ValueError, match="vocab 32 do not fit"):
        measure_memorization(model, random_sequences(2, 8, 32), 32)
    tokens = random_sequences(2, 8, 16)
    tokens[0, 3] = -1  # passed the check (it read the largest id) into torch's IndexError
    for bad in (tokens, tokens[:0], tokens[:, :1], tokens.float()):  # no sequence or BOS alone: max() of nothing
        with pytest.raises(ValueError, match=r"tokens must be int64 \[BOS, x\] rows"):
            measure_memorization(model, bad, 16)


def test_plateau_rule():
    cell = MemorizationCell(d_model=16, n_layers=1, n_sequences=10, seq_len=10, vocab=2, plateau_window=100, plateau_tol=0.01,
                            max_steps=1000)  # entropy 100 bits
    assert _stop_reason(cell, 500, {400: 50.0, 500: 99.5}, 100.0) == "complete"
    assert _stop_reason(cell, 500, {400: 50.0, 500: 50.4}, 100.0) == "plateau"  # +0.8 % in a window
    assert _stop_reason(cell, 500, {400: 50.0, 500: 51.0}, 100.0) == ""  # +2 %: still learning
    assert _stop_reason(cell, 50, {50: 0.0}, 100.0) == ""  # no full window yet
    assert _stop_reason(cell, 1000, {900: 10.0, 1000: 20.0}, 100.0) == "max_steps"
    # a window that is no multiple of the evaluation interval (--budget 0.05: 25 steps; 0.3: 150)
    # compares with the latest evaluation at least a window back; it used to find none, ever
    flat = {step: 50.0 for step in range(0, 501, 100)}
    for window in (1, 25, 150, 250):
        assert _stop_reason(dataclasses.replace(cell, plateau_window=window), 500, flat, 100.0) == "plateau"
    assert _stop_reason(dataclasses.replace(cell, plateau_window=550), 500, flat, 100.0) == ""


def _cells_frame(rows):
    base = dict(n_layers=1, seq_len=8, vocab=16, seed=0, steps=10, seconds=1.0, error="")
    return pd.DataFrame([{**base, "reachable_bits": r["entropy_bits"], **r, "fraction": r["memorized_bits"] / r["entropy_bits"],
                          "bits_per_parameter": r["memorized_bits"] / r["params"]} for r in rows])


def test_capacity_is_the_plateau_and_the_fit_is_the_slope():
    frame = _cells_frame([
        dict(model="a", d_model=16, params=1000, n_sequences=10, entropy_bits=1000, memorized_bits=1000, stopped_by="complete"),
        dict(model="a", d_model=16, params=1000, n_sequences=100, entropy_bits=10000, memorized_bits=3000, stopped_by="plateau"),
        dict(model="a", d_model=16, params=1000, n_sequences=1000, entropy_bits=100000, memorized_bits=2900, stopped_by="plateau"),
        dict(model="b", d_model=32, params=2000, n_sequences=100, entropy_bits=10000, memorized_bits=7000, stopped_by="plateau"),
        dict(model="c", d_model=64, params=4000, n_sequences=10, entropy_bits=1000, memorized_bits=1000, stopped_by="complete"),
    ])
    cap = capacity_table(frame)
    assert list(cap["model"]) == ["a", "b", "c"]
    assert list(cap["capacity_bits"]) == [3000, 7000, 1000] and list(cap["saturated"]) == [True, True, False]
    # slope through the origin over a and b: (1000*3000 + 2000*7000) / (1000^2 + 2000^2) = 3.4
    assert math.isclose(fit_bits_per_parameter(cap), 3.4)
    assert math.isnan(fit_bits_per_parameter(cap[~cap["saturated"]]))


def test_settings_of_one_model_name_are_models_of_their_own():
    # One folder may hold cells of other seeds or sequence lengths: each is its own curve and
    # capacity (the capacity of 1L-d8 was the largest over both seeds and the other length's cells).
    from interp.experiments.memorization_page import plot_memorized_bits

    rows = [dict(model="1L-d8", d_model=8, params=p, seq_len=n, vocab=16, seed=seed, n_sequences=k,
                 entropy_bits=k * n * 4, reachable_bits=k * n * 4 - k, memorized_bits=bits, stopped_by="plateau")
            for p, n, seed, k, bits in [(1004, 4, 0, 16, 60), (1004, 4, 0, 64, 139), (1004, 4, 1, 16, 62),
                                        (1004, 4, 1, 64, 144), (1020, 6, 1, 16, 90), (1020, 6, 1, 64, 269)]]
    cap = capacity_table(_cells_frame(rows))
    assert list(cap["label"]) == ["1L-d8, seq len 4, seed 0", "1L-d8, seq len 4, seed 1", "1L-d8, seq len 6, seed 1"]
    assert list(cap["capacity_bits"]) == [139, 144, 269] and set(cap["model"]) == {"1L-d8"}
    figure = plot_memorized_bits(_cells_frame(rows))
    lines = {t.name: list(t.y) for t in figure.data}
    assert lines["1L-d8, seq len 4, seed 0 (1,004 params)"] == [60, 139]  # its own cells, not the others'
    assert lines["1L-d8, seq len 6, seed 1 (1,020 params)"] == [90, 269]
    assert {"data entropy (16 bits/sequence)", "data entropy (24 bits/sequence)"} <= set(lines)
    # the most a causal model can memorise, below the entropy (the caption said the entropy was all there is)
    assert lines["reachable bits (length 4, vocabulary 16)"] == [16 * 15, 64 * 15]
    assert lines["reachable bits (length 6, vocabulary 16)"] == [16 * 23, 64 * 23]
    alone = capacity_table(_cells_frame(rows[:2]))  # one setting: the plain name
    assert list(alone["label"]) == ["1L-d8"]


def test_sweep_skips_done_cells_and_records_failures():
    cells = sweep_cells([(16, 1)], [4, 8], **TINY) + [MemorizationCell(d_model=12, n_layers=1, n_sequences=4, **TINY)]
    first = memorization_sweep(cells[:1])
    assert len(first) == 1 and first["stopped_by"].iloc[0] == "complete"
    table = memorization_sweep(cells, existing=first)
    assert len(table) == 3
    assert table.loc[table["n_sequences"] == 4].query("d_model == 16")["seconds"].iloc[0] == first["seconds"].iloc[0]
    bad = table[table["stopped_by"] == "error"]
    assert len(bad) == 1 and "multiple of d_head" in bad["error"].iloc[0]


@pytest.mark.slow  # starts processes or waits out a timeout
def test_two_workers_give_the_same_table_as_one():
    cells = sweep_cells([(16, 1)], [6, 12], **{**TINY, "max_steps": 200})
    drop = ["seconds"]
    serial = memorization_sweep(cells).drop(columns=drop)
    parallel = memorization_sweep(cells, workers=2).drop(columns=drop)
    pd.testing.assert_frame_equal(serial, parallel)


def test_cli_writes_table_capacity_and_page_and_resumes(tmp_path, capsys):
    from interp.cli import main

    out = tmp_path / "mem"
    args = ["memorization", "--sizes", "16x1", "--datasets", "4,8", "--seq-len", "8", "--vocab", "16",
            "--out-dir", str(out), "--quiet"]
    assert main(args) == 0
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(cells["n_sequences"]) == [4, 8] and (cells["fraction"] <= 1).all()
    assert (out / "capacity.csv").exists()
    page = (out / "memorization.html").read_text()
    assert page.count("<script") >= 2 and "bits per parameter" in page
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page)  # plotly.js inlined: works offline
    before = cells["seconds"].tolist()
    assert main(args) == 0  # nothing left to train: the same rows come back
    assert pd.read_csv(out / "cells.csv")["seconds"].tolist() == before
    (out / "memorization.html").unlink()  # a killed job writes no page: interp report draws it from cells.csv
    assert main(["report", str(out), "--out", str(tmp_path / "again.html"), "--quiet"]) == 0
    assert "bits per parameter" in (tmp_path / "again.html").read_text()


def test_budget_scales_steps_and_window_and_is_part_of_a_cell(tmp_path):
    from interp.cli import main
    from interp.experiments.memorization import CELL_COLUMNS, read_cells

    out = tmp_path / "mem"
    args = ["memorization", "--sizes", "16x1", "--datasets", "4", "--seq-len", "8", "--vocab", "16",
            "--out-dir", str(out), "--quiet"]
    assert main(args) == 0
    assert main(args + ["--budget", "2"]) == 0  # not taken for the cell already trained on budget 1
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(zip(cells["max_steps"], cells["plateau_window"])) == [(20_000, 500), (40_000, 1000)]
    old = cells[cells["max_steps"] == 20_000].drop(columns=["max_steps", "plateau_window"])
    old.to_csv(tmp_path / "old.csv", index=False)  # a table written before the budget columns
    again = read_cells(tmp_path / "old.csv")
    assert list(again.columns) == list(CELL_COLUMNS) and again["plateau_window"].tolist() == [500]
    with pytest.raises(SystemExit):
        main(args + ["--budget", "0"])


def test_cli_usage_errors(tmp_path, capsys):
    from interp.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["memorization", "--sizes", "big", "--out-dir", str(tmp_path / "x")])
    assert exc.value.code == 2
    (tmp_path / "file").write_text("x")
    assert main(["memorization", "--sizes", "16x1", "--datasets", "4", "--out-dir", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    for budget in ("1e20", "1e308"):  # a traceback, or the trained cells lost at the merge (steps past int64)
        assert main(["memorization", "--sizes", "16x1", "--datasets", "4", "--budget", budget,
                     "--out-dir", str(tmp_path / "b")]) == 2
        assert "gives a cell more than 2^53 steps; it must be at most 450359962737" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main(["memorization", "--sizes", "8x1", "--datasets", "4", "--seq-len", "2", "--vocab", "4", "--budget",
                 "450359962737", "--out-dir", str(tmp_path / "most"), "--quiet"]) == 0  # the largest it names: accepted


def test_two_jobs_into_one_folder_keep_each_others_cells(tmp_path, monkeypatch):
    """Two ``interp memorization`` jobs of different sizes writing one --out-dir at once: every cell of both stays."""
    import threading

    import interp.experiments.memorization as memorization_module
    from interp.cli import main

    real, both_training = memorization_module.train_to_saturation, threading.Barrier(2)

    def together(cell, *args, **kwargs):  # each job has read the folder and trains before either writes
        both_training.wait(timeout=60)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(memorization_module, "train_to_saturation", together)
    out = tmp_path / "mem"
    common = ["--datasets", "4,8", "--seq-len", "8", "--vocab", "16", "--out-dir", str(out), "--quiet"]
    status = {}

    def job(sizes: str) -> None:
        status[sizes] = main(["memorization", "--sizes", sizes, *common])

    jobs = [threading.Thread(target=job, args=(sizes,)) for sizes in ("16x1", "8x1")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert status == {"16x1": 0, "8x1": 0}
    cells = pd.read_csv(out / "cells.csv")
    assert sorted(zip(cells["model"], cells["n_sequences"])) == [("1L-d16", 4), ("1L-d16", 8), ("1L-d8", 4),
                                                                   ("1L-d8", 8)]
    assert (cells["error"].isna() | (cells["error"] == "")).all()
    assert sorted(pd.read_csv(out / "capacity.csv")["model"]) == ["1L-d16", "1L-d8"]


def _exit_status(main, args: list[str]) -> int:
    """``main``'s exit status, also when argparse refuses a flag (it exits)."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


def test_repeated_sizes_or_data_sets_are_refused(tmp_path, capsys):
    from interp.cli import main

    tiny = ["--sizes", "8x1", "--datasets", "4", "--seq-len", "8", "--vocab", "16", "--budget", "0.01"]
    for flag, values, shown in (("--sizes", "8x1,16x1,8x1", "8x1"), ("--datasets", "32,4,32", "32")):
        args = ["memorization", *tiny, flag, values, "--out-dir", str(tmp_path / "mem"), "--quiet"]
        assert main(args) == 2
        assert capsys.readouterr().err == f"interp: error: {flag} repeats {shown}\n"
    assert not (tmp_path / "mem").exists()  # refused before anything is written
    # more sequences than distinct ones (they would repeat), a vocabulary of one token
    for extra, message in ((["--datasets", "4,20", "--seq-len", "2", "--vocab", "4"],
                            "--datasets 20 asks for more sequences than the 16 distinct ones of --seq-len 2 --vocab 4"),
                           (["--vocab", "1"], "expected an integer of at least 2, got 1")):
        assert _exit_status(main, ["memorization", *tiny, *extra, "--out-dir", str(tmp_path / "mem"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert _exit_status(main, ["sweep", "modadd", "--grid", "d_model=8", "--grid", "steps=5", "--bits-per-parameter",
                               "inf", "--out-dir", str(tmp_path / "sweep"), "--quiet"]) == 2
    assert "expected a positive number, got inf" in capsys.readouterr().err
    # a huge finite figure: capacity_bits of infinity in runs.csv (the product with the parameters)
    assert _exit_status(main, ["sweep", "modadd", "--grid", "d_model=8", "--grid", "steps=5", "--bits-per-parameter",
                               "1e308", "--out-dir", str(tmp_path / "sweep"), "--quiet"]) == 2
    assert "expected at most 64 (the bits of a float64 parameter), got 1e+308" in capsys.readouterr().err
    assert not (tmp_path / "mem").exists() and not (tmp_path / "sweep").exists()
    cells = [MemorizationCell(d_model=16, n_layers=1, n_sequences=4, **TINY)] * 2
    assert len(memorization_sweep(cells)) == 1  # a library caller's repeated cell is trained once


def test_a_diverging_cell_is_an_error_row_and_the_folder_goes_on(tmp_path):
    """It was a finished row of no bits, on which the capacity table raised: the job stopped, every
    rerun of the folder and its report too."""
    from interp.experiments.memorization import memorization_sweep_to_dir

    small = dict(n_layers=1, n_sequences=8, seq_len=4, vocab=8, max_steps=200, plateau_window=10)
    cells = [MemorizationCell(d_model=16, lr=1e30, **small), MemorizationCell(d_model=8, **small)]
    result = memorization_sweep_to_dir(cells, tmp_path / "mem")
    by_model = result.cells.set_index("d_model")
    assert by_model.loc[16, "stopped_by"] == "error" and "memorised bits are not finite" in by_model.loc[16, "error"]
    assert by_model.loc[8, "stopped_by"] == "complete" and by_model.loc[8, "memorized_bits"] > 0
    assert pd.read_csv(tmp_path / "mem" / "capacity.csv")["d_model"].tolist() == [8]
    good = result.cells[result.cells["d_model"] == 8]
    edited = pd.concat([good, good.assign(model="1L-d16", d_model=16, params=3672, memorized_bits=float("nan"))])
    assert capacity_table(edited)["d_model"].tolist() == [8]  # a table edited by hand: its NaN row left out


def test_a_folder_with_a_failed_cell_still_takes_new_cells(tmp_path, capsys):
    from interp.cli import main
    from interp.experiments.memorization import memorization_sweep_to_dir

    out = tmp_path / "mem"
    failed = memorization_sweep_to_dir([MemorizationCell(d_model=12, n_layers=1, n_sequences=4, **TINY)], out)
    assert failed.cells["stopped_by"].tolist() == ["error"]  # d_model 12 is no multiple of the heads' 8
    code = main(["memorization", "--sizes", "16x1", "--datasets", "4", "--seq-len", "8", "--vocab", "16",
                 "--out-dir", str(out), "--quiet"])
    err = capsys.readouterr().err
    # the old failure is not this job's: neither printed nor its exit status (as score and sweep do)
    assert code == 0 and "invalid literal" not in err and "1L-d12" not in err
    assert sorted(pd.read_csv(out / "cells.csv")["d_model"]) == [12, 16]
    assert pd.read_csv(out / "capacity.csv")["d_model"].tolist() == [16]  # rewritten with the new cell


def test_a_folder_where_no_cell_finished_says_so(tmp_path, capsys):
    from interp.cli import main
    from interp.experiments.memorization import CELL_COLUMNS

    failed = tmp_path / "failed"
    failed.mkdir()
    row = {c: "" for c in CELL_COLUMNS} | {"model": "1L-d8", "d_model": 8, "n_layers": 1, "n_sequences": 32,
                                            "seq_len": 32, "vocab": 64, "seed": 0, "max_steps": 20000,
                                            "plateau_window": 500, "stopped_by": "error", "error": "RuntimeError: oom"}
    pd.DataFrame([row], columns=list(CELL_COLUMNS)).to_csv(failed / "cells.csv", index=False)
    assert main(["report", str(failed), "--out", str(tmp_path / "f.html")]) == 0
    page = (tmp_path / "f.html").read_text()
    assert "No cell finished, so no capacity was measured." in page and "add larger data sets" not in page
    for name, content in (("empty", b""), ("binary", b"\xff\xfe\x00x")):  # pandas' words, no file named
        (tmp_path / name).mkdir()
        (tmp_path / name / "cells.csv").write_bytes(content)
        assert main(["report", str(tmp_path / name), "--out", str(tmp_path / "x.html")]) == 2
        assert f"{tmp_path / name / 'cells.csv'} is not a memorization table" in capsys.readouterr().err


def test_an_edited_or_cut_short_cell_table_is_one_line_or_trained_again(tmp_path):
    # an emptied d_model: a TypeError traceback; n_sequences of 1e400: an OverflowError one; a row
    # cut short: a finished cell whose bits entered the capacity table
    from interp.experiments.memorization import memorization_sweep_to_dir, read_cells

    cell = MemorizationCell(d_model=16, n_layers=1, n_sequences=4, **TINY)
    out = tmp_path / "mem"
    memorization_sweep_to_dir([cell], out)
    path = out / "cells.csv"
    header, row = path.read_text().splitlines()
    names, fields = header.split(","), row.split(",")

    def edited(column: str, value: str) -> str:
        i = names.index(column)
        return f"{header}\n{','.join(fields[:i] + [value] + fields[i + 1:])}\n"

    for text, message in ((edited("d_model", ""), "row 2 has no d_model, which names its cell"),
                          (edited("n_sequences", "1e400"), "row 2, column n_sequences: 'inf' is not a whole number")):
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            read_cells(path)
    path.write_text(f"{header}\n{','.join(fields[:names.index('memorized_bits')])}\n")
    assert read_cells(path)["stopped_by"].tolist() == ["error"]
    again = memorization_sweep_to_dir([cell], out)
    assert again.cells["stopped_by"].tolist() != ["error"] and again.cells["memorized_bits"].notna().all()
