"""interp.score_checkpoints: the long table, detector applicability, executors, the real run."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest

import circuits
import interp
from interp.runs.checkpoints import list_checkpoints
from interp.scoring.table import COLUMNS
from interp.detectors.heads.detector import METRICS as HEAD_METRICS
from interp.scoring.batch import score_checkpoints


def test_table_schema_and_detector_applicability(tiny_runs):
    ind, mod = tiny_runs
    table = interp.score_checkpoints([ind, mod])
    assert list(table.columns) == COLUMNS
    assert str(table["step"].dtype) == "Int64" and str(table["layer"].dtype) == "Int64"
    n_ind, n_mod = len(list_checkpoints(ind)), len(list_checkpoints(mod))
    heads = table[table["detector"] == "heads"]
    fourier = table[table["detector"] == "fourier"]
    # heads only on the induction run (8 heads x 6 metrics per checkpoint), fourier only on modadd
    assert set(heads["run"]) == {str(ind.resolve())} and len(heads) == n_ind * 8 * len(HEAD_METRICS)
    assert set(fourier["run"]) == {str(mod.resolve())}
    assert fourier["layer"].isna().all()
    keys = fourier["metric"] == "key_frequency"  # each frequency its own key: k in `head`
    assert fourier.loc[~keys, "head"].isna().all() and (fourier.loc[keys, "head"] == fourier.loc[keys, "value"]).all()
    key = ["run", "checkpoint", "detector", "layer", "head", "metric"]
    assert not table.duplicated(key).any()
    assert set(fourier.groupby("checkpoint").size()) >= {13}  # 11 scalars, dataset and memorised bits
    assert (table["metric"] != "error").all() and (table["error"] == "").all()
    assert "fourier" in table.attrs["skipped"][str(ind.resolve())]
    assert "n_ctx=3" in table.attrs["skipped"][str(mod.resolve())]["heads"]
    assert table.attrs["n_scored"] == n_ind + n_mod and table.attrs["n_failed"] == 0
    assert sorted(set(heads["step"])) == [s for s, _ in list_checkpoints(ind)]


def test_fourier_rows_equal_fourier_report(tiny_runs):
    from interp.runs.record import run_train_mask

    _, mod = tiny_runs
    table = score_checkpoints(mod, detectors=["fourier"])
    final = interp.load_model(mod)
    freqs = circuits.key_frequencies(final)
    step, path = list_checkpoints(mod)[2]
    report = circuits.fourier_report(interp.load_model(path), train_mask=run_train_mask(mod), key_freqs=freqs)
    rows = table[table["step"] == step].set_index("metric")["value"]
    for name, value in report.scalars().items():
        assert rows[name] == pytest.approx(value, rel=1e-12, nan_ok=True)
    assert sorted(table.loc[(table["step"] == step) & (table["metric"] == "key_frequency"), "value"]) == \
        [float(k) for k in report.key_frequencies]


def test_unknown_detectors_are_named(tiny_runs):
    ind, _ = tiny_runs
    with pytest.raises(ValueError, match="unknown detector.*bogus.*known: heads, fourier"):
        score_checkpoints(ind, detectors=["heads", "bogus"])


def test_corrupt_checkpoint_is_an_error_row(tiny_runs, tmp_path):
    ind, _ = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    bad = list_checkpoints(run)[3][1]
    bad.write_bytes(bad.read_bytes()[:200])
    table = score_checkpoints(run, detectors=["heads"])
    errors = table[table["metric"] == "error"]
    assert len(errors) == 1 and errors["checkpoint"].iloc[0] == bad.name and errors["detector"].iloc[0] == "load"
    assert errors["step"].iloc[0] == 4 and "corrupt or truncated" in errors["error"].iloc[0]
    assert table.loc[table["metric"] != "error", "checkpoint"].nunique() == len(list_checkpoints(run)) - 1
    assert table.attrs["n_failed"] == 1


@pytest.mark.slow  # starts processes or waits out a timeout
def test_two_workers_give_the_same_table(tiny_runs):
    ind, mod = tiny_runs
    one = score_checkpoints([ind, mod])
    two = score_checkpoints([ind, mod], workers=2)
    pd.testing.assert_frame_equal(one, two)


@pytest.mark.slow  # starts processes or waits out a timeout
def test_a_worker_dying_on_a_checkpoint_is_an_error_row(tiny_runs, monkeypatch):
    import os

    import interp.scoring.task as scoring

    ind, _ = tiny_runs
    victim = list_checkpoints(ind)[2][1]
    original = scoring.load_cached

    def die_on_victim(path, **options):  # forked workers inherit the patch
        if str(path) == str(victim):
            os._exit(1)
        return original(path, **options)

    monkeypatch.setattr(scoring, "load_cached", die_on_victim)
    table = score_checkpoints(ind, detectors=["heads"], workers=2)
    errors = table[table["metric"] == "error"]
    assert list(errors["checkpoint"]) == [victim.name] and "worker process died" in errors["error"].iloc[0]
    assert table.loc[table["metric"] != "error", "checkpoint"].nunique() == len(list_checkpoints(ind)) - 1
    assert table.attrs["n_failed"] == 1


@pytest.mark.slow  # starts processes (each imports torch and transformer_lens)
def test_dask_on_loopback_gives_the_same_table(tiny_runs):
    distributed = pytest.importorskip("distributed")
    ind, mod = tiny_runs
    one = score_checkpoints([ind, mod])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        via_dask = score_checkpoints([ind, mod], scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(one, via_dask)


@pytest.mark.slow
def test_real_induction_run(induction_run):
    """Default recipe: the final checkpoint has an induction head, and the table equals circuits."""
    from interp.analysis.phase import best_head_curve, locate_phase_change

    table = score_checkpoints(induction_run, detectors=["heads"])
    step, final_path = list_checkpoints(induction_run)[-1]
    final = table[(table["step"] == step) & (table["metric"] == "prefix_matching")]
    direct = circuits.prefix_matching_scores(interp.load_model(final_path))
    assert final["value"].max() >= 0.8
    assert final["value"].tolist() == direct["score"].tolist()
    curve = best_head_curve(table)
    change = locate_phase_change(curve["step"], curve["score"])
    assert change is not None
    # the change sits where the best score crosses from below 0.3 to above 0.6
    below = curve.loc[curve["score"] < 0.3, "step"].max()
    above = curve.loc[curve["score"] > 0.6, "step"].min()
    assert below <= change.start_step < change.end_step <= above


def _score_in_child(score_to_file, run, out) -> None:
    import torch

    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
    score_to_file(run, out)


@pytest.mark.slow  # starts processes or waits out a timeout
def test_concurrent_writers_keep_each_others_rows(tiny_runs, tmp_path):
    """Two processes scoring different runs into one table: every row of both survives."""
    import multiprocessing

    from interp.scoring.table import read_table
    from interp.scoring.batch import score_to_file

    ind, mod = tiny_runs
    out = tmp_path / "t.parquet"
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_score_in_child, args=(score_to_file, run, out)) for run in (ind, mod)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
        assert job.exitcode == 0
    table = read_table(out)
    assert set(table["run"]) == {str(ind.resolve()), str(mod.resolve())}
    assert table["checkpoint"].nunique() == len(list_checkpoints(ind))  # same file names in both runs
    assert len(table) == len(score_checkpoints([ind, mod]))


def test_a_foreign_checkpoint_is_its_own_error_row(tiny_runs, tmp_path):
    ind, mod = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    shutil.copy(list_checkpoints(mod)[-1][1], run / "checkpoints" / "step_000700.safetensors")
    table = score_checkpoints(run)
    errors = table[table["metric"] == "error"]
    assert list(errors["checkpoint"]) == ["step_000700.safetensors"]
    assert "does not match its run" in errors["error"].iloc[0] and "d_model 128" in errors["error"].iloc[0]
    heads = table[table["detector"] == "heads"]
    assert heads["checkpoint"].nunique() == len(list_checkpoints(ind))  # the genuine ones all scored


def test_a_folder_of_models_and_runs_scores_each_against_its_own_plan(tiny_runs, tmp_path):
    # Files named without a step are models of their own (a modular-addition and an induction
    # model here; two seeds' final checkpoints alike): each is planned from itself. Both used to be
    # scored against the plan of the last by name: the modular-addition file got no fourier rows.
    # A run beside them is scored too (it used to be left out without a word).
    ind, mod = tiny_runs
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(list_checkpoints(mod)[-1][1], folder / "a_modadd.safetensors")
    shutil.copy(list_checkpoints(ind)[-1][1], folder / "b_induction.safetensors")
    shutil.copy(list_checkpoints(mod)[1][1], folder / "c_modadd_early.safetensors")
    shutil.copytree(ind, folder / "run")
    table = score_checkpoints(folder, ["heads", "fourier"])
    assert (table["metric"] != "error").all()
    detectors = table.groupby("checkpoint")["detector"].unique().map(set)
    assert detectors["a_modadd.safetensors"] == detectors["c_modadd_early.safetensors"] == {"fourier"}
    assert detectors["b_induction.safetensors"] == {"heads"}
    in_run = table[table["run"] == str((folder / "run").resolve())]
    assert set(in_run["checkpoint"]) == {path.name for _, path in list_checkpoints(ind)}
    for name in ("a_modadd.safetensors", "c_modadd_early.safetensors"):  # the rows each has alone
        alone = score_checkpoints(folder / name, ["fourier"]).set_index(["metric", "head"])["value"]
        together = table[table["checkpoint"] == name].set_index(["metric", "head"])["value"]
        pd.testing.assert_series_equal(together.sort_index(), alone.sort_index())


def _nan_in_w_q(model):
    model.blocks[1].attn.W_Q[0, 0, 0] = float("nan")


def _huge_embeddings(model):  # a corrupted file can hold finite 1e38s: the forward overflows
    model.W_E[:, :4] = 1.7e38


@pytest.mark.parametrize("corrupt, message", [
    (_nan_in_w_q, "NaN or infinite weights in blocks.1.attn.W_Q"),
    (_huge_embeddings, "forward pass is not finite from blocks.0.attn.hook_attn_scores on (finite weights, "
                       "the largest 1.7e+38"),
])
def test_an_unsound_final_checkpoint_is_an_error_row_and_not_the_plan(tiny_runs, tmp_path, corrupt, message):
    # The run's plan comes from the latest sound checkpoint, so every other checkpoint is scored.
    import torch

    from interp.runs.checkpoints import save_checkpoint

    ind, _ = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    step, path = list_checkpoints(run)[-1]
    model = interp.load_model(path)
    with torch.no_grad():
        corrupt(model)
    save_checkpoint(path, model, step)
    table = score_checkpoints(run)
    errors = table[table["metric"] == "error"]
    assert list(errors["checkpoint"]) == [path.name] and list(errors["detector"]) == ["load"]
    assert message in errors["error"].iloc[0]
    assert table.loc[table["metric"] != "error", "checkpoint"].nunique() == len(list_checkpoints(run)) - 1
    assert table["value"][table["metric"] != "error"].notna().all()


def test_an_unreadable_run_json_stops_the_job(tiny_runs, tmp_path):
    from interp.runs.layout import RunError

    _, mod = tiny_runs
    run = tmp_path / "mod"
    shutil.copytree(mod, run)
    (run / "run.json").write_text("{truncated")
    with pytest.raises(RunError, match="unreadable run.json"):
        score_checkpoints(run)
    (run / "run.json").write_text('{"task": {"name": "modadd", "p": 113}}')  # JSON, but no split
    with pytest.raises(RunError, match="split"):
        score_checkpoints(run)
    ind = tmp_path / "ind"
    shutil.copytree(tiny_runs[0], ind)
    record = json.loads((ind / "run.json").read_text())
    for probe in ({"bos": 0}, {"bos": 0, "ids": [5]}):  # a KeyError, a TypeError traceback before
        record["task"]["probe"] = probe
        (ind / "run.json").write_text(json.dumps(record))
        with pytest.raises(RunError, match=r'run.json: task.probe must be \{"bos": ID, "ids": \[\[FIRST, LAST\], ...\]\}'):
            score_checkpoints(ind, ["heads"])


def test_a_retrained_run_is_scored_again(tiny_runs, tmp_path):
    from interp.cli import main
    from interp.scoring.table import read_table
    from interp.scoring.batch import score_to_file

    run = tmp_path / "ind"
    args = ["train", "induction", "--out-dir", str(run), "--steps", "8", "--checkpoint-every", "4", "--quiet"]
    assert main([*args, "--seed", "0"]) == 0
    out = tmp_path / "t.csv"
    first = score_to_file(run, out, ["heads"])
    shutil.rmtree(run)
    assert main([*args, "--seed", "1"]) == 0
    second = score_to_file(run, out, ["heads"])
    assert second.attrs["n_scored"] == len(list_checkpoints(run))
    table = read_table(out)
    assert len(table) == len(first) and set(table["fingerprint"]).isdisjoint(set(first["fingerprint"]))
    last = table["step"] == table["step"].max()
    assert not table[last]["value"].equals(first[first["step"] == first["step"].max()]["value"])


def test_key_frequencies_have_their_own_keys(published_path):
    table = score_checkpoints(published_path, detectors=["fourier"])
    keys = table[table["metric"] == "key_frequency"]
    assert sorted(keys["head"]) == [3, 6, 23, 39] and (keys["head"] == keys["value"]).all()
    assert not table.duplicated(["run", "checkpoint", "detector", "layer", "head", "metric"]).any()


@pytest.fixture
def final_norm():
    """A detector whose context comes from the run's latest checkpoint, as circuit's, fourier's and llc's do."""
    from interp.detectors.registry import DETECTORS

    detector = interp.register_detector(interp.Detector(
        name="final_norm", help="|W_U| of the run's latest checkpoint (a test)", metrics=("final_norm",),
        applies=lambda model: None, prepare=lambda model, run_dir: float(model.W_U.detach().norm()),
        score=lambda model, context: [{"metric": "final_norm", "value": context}],
        summary=lambda model, run_dir: "", report=lambda rows: []))
    yield detector
    DETECTORS.pop(detector.name, None)


def test_rows_of_an_earlier_detector_version_are_scored_again(final_norm, tiny_runs, tmp_path):
    from interp.detectors.registry import DETECTORS

    run = tmp_path / "ind"
    shutil.copytree(tiny_runs[0], run)
    first = score_checkpoints(run, ["final_norm"])
    assert score_checkpoints(run, ["final_norm"], existing=first).attrs["n_scored"] == 0
    DETECTORS["final_norm"] = dataclasses.replace(final_norm, version=2)  # its rows changed definition
    again = score_checkpoints(run, ["final_norm"], existing=first)
    assert again.attrs["n_scored"] == len(list_checkpoints(run)) and len(again) == len(first)
    assert {c[-2:] for c in again["context"]} == {"@2"} and set(c[:-2] for c in again["context"]) == set(first["context"])
    assert score_checkpoints(run, ["final_norm"], existing=again).attrs["n_scored"] == 0  # and then they stand


def test_one_detector_named_as_a_string_is_one_name(tiny_runs):
    table = score_checkpoints(tiny_runs[0], "heads")
    assert set(table["detector"]) == {"heads"}


def test_rows_of_an_older_plan_are_scored_again_and_only_those(final_norm, tiny_runs, tmp_path):
    ind, _ = tiny_runs
    run = tmp_path / "ind"
    shutil.copytree(ind, run)
    ckpts = [path for _, path in list_checkpoints(run)]
    latest = float(interp.load_model(ckpts[-1]).W_U.detach().norm())
    held = tmp_path / "held"
    held.mkdir()
    for path in ckpts[-3:]:  # the run before its last three checkpoints
        shutil.move(path, held / path.name)
    detectors = ["heads", "final_norm"]
    first = score_checkpoints(run, detectors)
    earlier = float(interp.load_model(ckpts[-4]).W_U.detach().norm())
    assert first.loc[first.detector == "final_norm", "value"].tolist() == pytest.approx([earlier] * (len(ckpts) - 3))
    for path in ckpts[-3:]:  # the run goes on
        shutil.move(held / path.name, path)
    new = []
    table = score_checkpoints(run, detectors, existing=first, on_checkpoint=new.append)
    new = pd.concat(new)
    old = new[new.checkpoint.isin([p.name for p in ckpts[:-3]])]
    assert set(old.detector) == {"final_norm"}  # the heads' probe did not change: their rows stand
    rows = table[table.detector == "final_norm"]
    assert rows.value.tolist() == pytest.approx([latest] * len(ckpts)) and rows.context.nunique() == 1
    assert not table.duplicated(["run", "checkpoint", "detector", "layer", "head", "metric"]).any()
    assert table.loc[table.detector == "heads", "checkpoint"].nunique() == len(ckpts)
    # Rows of one detector under two digests (two writers, an older tool) are scored again.
    mixed = table.copy()
    mixed.loc[(mixed.detector == "final_norm") & (mixed.checkpoint == ckpts[0].name), "context"] = "older"
    again = score_checkpoints(run, detectors, existing=mixed)
    assert again.attrs["n_scored"] == 1 and set(again.loc[again.detector == "final_norm", "context"]) == set(rows.context)
    # One checkpoint scored alone is scored against its run's latest checkpoint, not against itself.
    alone = score_checkpoints(ckpts[2], ["final_norm"])
    assert list(alone.value) == [pytest.approx(latest)]
    assert score_checkpoints(run, ["final_norm"], existing=alone).attrs["n_scored"] == len(ckpts) - 1
