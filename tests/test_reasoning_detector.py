"""The reasoning detector (interp/detectors/reasoning/) on tiny composition and comparison runs."""

from __future__ import annotations

import pickle
import shutil

import pandas as pd
import pytest
import torch

from circuits import one_thread
from interp import load_model
from interp.cli import main
from interp.detectors.registry import DETECTORS
from interp.detectors.reasoning.context import ACCURACIES, RANKS, VALUES, run_context
from interp.detectors.reasoning.measures import bridge_lens, label_curves, trace_inputs
from interp.detectors.reasoning.report import accuracy_curve, rank_curves
from interp.inspection import inspect_checkpoint
from interp.tasks.presets import preset
from interp.report import build_report
from interp.runs.layout import list_checkpoints
from interp.scoring.batch import score_checkpoints
from interp.training.loop import train

DETECTOR = DETECTORS["reasoning"]
TINY = {
    "composition": dict(n_entities=40, n_relations=6, facts_per_entity=4, ood_share=0.1, phi=2.0),
    "comparison": dict(n_entities=30, n_attributes=2, n_values=5, ood_share=0.2, phi=3.0),
}
N_LAYERS = 2


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # tiny models: one thread is several times faster on a busy machine
        yield


@pytest.fixture(scope="module")
def fact_runs(tmp_path_factory):
    """A composition and a comparison run of 10 steps (checkpoints 0, 1, 2, 4, 5, 10), scored once."""
    root = tmp_path_factory.mktemp("fact_runs")
    runs = {}
    with one_thread():
        for task, options in TINY.items():
            opts = preset(task, d_model=32, n_layers=N_LAYERS, batch_size=64, eval_every=5, checkpoint_every=5,
                          steps=10, lr=3e-3, **options)
            runs[task] = train(opts, root / task, quiet=True)
        table = score_checkpoints(list(runs.values()), detectors=["reasoning"])
    return runs, table


@pytest.mark.parametrize("task", ["composition", "comparison"])
def test_accuracies_are_the_runs_metrics_at_the_same_step(fact_runs, task):
    runs, table = fact_runs
    curve = accuracy_curve(table[table["run"] == str(runs[task])])
    metrics = pd.read_csv(runs[task] / "metrics.csv").set_index("step")
    assert list(curve["step"]) == [0, 1, 2, 4, 5, 10]
    for col in ("train_acc", "test_id_acc", "test_ood_acc"):
        # the same evaluation sets and definition: equal, not close
        assert list(curve[col]) == list(metrics.loc[curve["step"], col]), col
    assert curve["train_acc"].iloc[-1] > curve["train_acc"].iloc[0]  # 10 steps at lr 3e-3 learn something
    assert not (table["metric"] == "error").any()


def test_bridge_reciprocal_rank_rows_per_residual_state(fact_runs):
    runs, table = fact_runs
    comp = table[table["run"] == str(runs["composition"])]
    ranks = rank_curves(comp)
    assert set(ranks["split"]) == {"id", "ood"}
    for (step, split), part in ranks.groupby(["step", "split"]):
        assert sorted(part["layer"]) == list(range(N_LAYERS + 1)), (step, split)
    d_vocab = load_model(runs["composition"]).cfg.d_vocab
    assert (ranks["value"] >= 1 / d_vocab).all() and (ranks["value"] <= 1).all()
    assert set(comp["metric"]) == {*ACCURACIES, *RANKS}
    # comparison: the accuracies and the value probes' R^2 per residual state
    comp_rows = table[table["run"] == str(runs["comparison"])]
    assert set(comp_rows["metric"]) == {*ACCURACIES, *VALUES}
    values = rank_curves(comp_rows, VALUES)
    for (step, split), part in values.groupby(["step", "split"]):
        assert sorted(part["layer"]) == list(range(N_LAYERS + 1)), (step, split)
    assert values["value"].notna().all()


def test_known_answer_on_a_model_that_outputs_its_bias(fact_runs):
    """All weights zero except b_U[v] = -v / 100: every state reads b_U, so token 0 is always the
    prediction (accuracy = share of answers equal to 0) and a bridge b has rank b + 1 everywhere."""
    runs, _ = fact_runs
    context = run_context(runs["composition"])
    model = load_model(runs["composition"])
    with torch.no_grad():
        for p in model.parameters():  # the residual stream stays 0 and every LayerNorm maps it to 0
            p.zero_()
        model.unembed.b_U.copy_(-0.01 * torch.arange(model.cfg.d_vocab_out))
    rows = {(r["metric"], r.get("layer")): r["value"] for r in DETECTOR.score(model, context)}
    for split in ("id", "ood"):
        facts = context.sets[f"test_{split}"]
        assert rows[(f"test_{split}_acc", None)] == pytest.approx(float((facts.answer == 0).double().mean()))
        expected = float((1.0 / (context.bridge[split] + 1).double()).mean())
        for state in range(N_LAYERS + 1):
            assert rows[(f"bridge_rr_{split}", state)] == pytest.approx(expected, rel=1e-12)
    # the bridge of h r1 r2 is the tail of the atomic fact h r1 (the generator's chains)
    from interp.tasks.composition import composition_data

    data = composition_data(**{k: TINY["composition"][k] for k in TINY["composition"]}, seed=0)
    chains = {tuple(c[[0, 1, 3]].tolist()): int(c[2]) for c in data.test_id_chains}
    got = [chains[tuple(t.tolist())] for t in context.sets["test_id"].tokens]
    assert got == context.bridge["id"].tolist()


def test_value_probes_know_a_model_whose_states_are_all_zero(fact_runs):
    """Every residual state 0: a scalar probe predicts the fit facts' mean value for every query, so its
    R^2 on a split is 1 - sum (v - mean_fit)^2 / sum (v - mean v)^2 (at most 0), at every state."""
    runs, _ = fact_runs
    context = run_context(runs["comparison"])
    model = load_model(runs["comparison"])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rows = {(r["metric"], r.get("layer")): r["value"] for r in DETECTOR.score(model, context)}
    for split in ("id", "ood"):
        expected = []
        for position in ("e1", "e2"):
            v = context.probes[(position, split)].labels.double()
            fit_mean = context.probes[(position, "fit")].labels.double().mean()
            expected.append(1 - float(((v - fit_mean) ** 2).sum() / ((v - v.mean()) ** 2).sum()))
        for state in range(N_LAYERS + 1):
            assert rows[(f"value_r2_{split}", state)] == pytest.approx(sum(expected) / 2, rel=1e-9)
            assert rows[(f"value_r2_{split}", state)] <= 0
    # the label probe predicts the fit comparisons' most common label (its bias) at every state
    labels = label_curves(model, context)
    fit = context.sets["train_inferred"].answer - context.label0
    common = int(fit.bincount(minlength=3).argmax())
    for split, part in labels.groupby("split"):
        answers = context.split(split).answer - context.label0
        assert set(answers.tolist()) <= {0, 1, 2}
        assert list(part["state"]) == list(range(N_LAYERS + 1))
        assert part["accuracy"].tolist() == pytest.approx([float((answers == common).double().mean())] * (N_LAYERS + 1))
        assert part["chance"].iloc[0] == pytest.approx(float(answers.bincount().max()) / len(answers))


def test_a_split_of_equal_values_leaves_its_probe_rows_nan_and_the_rest(fact_runs):
    """A run small enough that its OOD entities share one value (seed 0: 2 OOD entities, 2 values):
    R^2 is undefined there, so those rows are NaN; the accuracies and the ID probes stand (the whole
    checkpoint used to be an error row)."""
    runs, _ = fact_runs
    opts = preset("comparison", n_entities=20, n_attributes=1, n_values=2, ood_share=0.1, phi=1.0, steps=2,
                  checkpoint_every=2, eval_every=2)
    run = train(opts, runs["comparison"].parent / "equal_values", quiet=True)
    table = score_checkpoints(run, detectors=["reasoning"])
    assert not (table["metric"] == "error").any(), table["error"].unique()
    by_metric = table.groupby("metric")["value"]
    assert by_metric.apply(lambda v: v.isna().all())["value_r2_ood"]
    assert by_metric.apply(lambda v: v.notna().all())[["value_r2_id", "train_acc", "test_id_acc", "test_ood_acc"]].all()


def test_context_pickles_and_trace_inputs_change_the_answer(fact_runs):
    runs, _ = fact_runs
    for task in TINY:
        context = run_context(runs[task])
        again = pickle.loads(pickle.dumps(context))
        assert torch.equal(again.sets["test_ood"].tokens, context.sets["test_ood"].tokens)
        tokens, corrupted, _ = trace_inputs(context, "id", n=50)
        changed = (tokens != corrupted)
        position = 0 if task == "composition" else 1
        assert changed[:, position].all() and not changed[:, [p for p in range(3) if p != position]].any()
    comparison = run_context(runs["comparison"])
    tokens, corrupted, answer = trace_inputs(comparison, "ood", n=50)
    values, E = comparison.values, comparison.n_entities
    attr = tokens[:, 0] - E
    new_sign = torch.sign(values[corrupted[:, 1], attr] - values[tokens[:, 2], attr])
    old_sign = torch.sign(values[tokens[:, 1], attr] - values[tokens[:, 2], attr])
    assert (new_sign != old_sign).all()  # the corrupted query's label differs
    assert (corrupted[:, 1] != tokens[:, 2]).all()  # and it never compares e2 with itself
    with pytest.raises(ValueError, match="composition"):
        bridge_lens(load_model(runs["comparison"]), comparison, "id")


def test_other_models_and_loose_checkpoints_are_not_applicable(fact_runs, tiny_runs, tmp_path):
    ind, mod = tiny_runs
    table = score_checkpoints([mod], detectors=["reasoning"])
    assert table.empty
    assert "is not a composition or comparison model" in table.attrs["skipped"][str(mod)]["reasoning"]
    assert "not a composition or comparison model" in DETECTOR.applies(load_model(ind))
    runs, _ = fact_runs
    loose = tmp_path / "loose.safetensors"
    shutil.copy(list_checkpoints(runs["composition"])[-1][1], loose)
    rows = score_checkpoints([loose], detectors=["reasoning"])
    assert list(rows["metric"]) == ["error"]
    assert "not applicable" in rows["error"].iloc[0] and "run.json" in rows["error"].iloc[0]
    assert "reasoning: not applicable" in inspect_checkpoint(loose)


def test_summary_report_and_cli(fact_runs, tmp_path):
    runs, table = fact_runs
    text = inspect_checkpoint(runs["composition"])
    assert "reasoning (composition): train" in text and "bridge entity at r1" in text
    text = inspect_checkpoint(runs["comparison"])
    assert "attribute value at e1 / e2, linear-probe R^2" in text and "comparison label at e2" in text
    page = build_report(table)
    for title in ("accuracy: train, ID, OOD", "bridge entity by layer (logit lens)", "bridge entity heatmap",
                  "causal tracing heatmap", "attribute values by layer (linear probes)",
                  "attribute value heatmap (linear probes)"):
        assert title in page, title
    assert page.count("causal tracing heatmap") >= 2  # both runs
    out = tmp_path / "s.parquet"
    assert main(["score", str(runs["comparison"]), "--out", str(out), "--quiet", "--detectors", "reasoning"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "accuracy: train, ID, OOD" in (tmp_path / "r.html").read_text()


def test_every_residual_state_has_its_own_colour_at_any_depth():
    from interp.detectors.reasoning.figures import plot_rank_curves

    ranks = pd.DataFrame([{"step": step, "split": split, "layer": state, "value": 0.1 * state}
                          for step in (0, 10) for split in ("id", "ood") for state in range(10)])
    colours = {trace.name: trace.line.color for trace in plot_rank_curves(ranks).data}
    assert len(colours) == 10 and len(set(colours.values())) == 10  # 8 colours repeated from state 8 on
