"""The llc detector: known learning coefficients first, then the detector on a tiny induction run.

Known answers, on the detector's own estimation path (:func:`estimate_llc`), at settings fixed
here (full batch, so the paired loss rise is exact):

- a linear regression with d weights at its least-squares solution is regular: d/2 (d = 2, 6);
- ``y = a * b * x`` with data whose best product is exactly 0, at ``(a, b) = (1, 0)``: the loss is
  flat along ``a`` and quadratic in ``b``, coefficient 1/2 (d = 2: singular). At the crossing
  ``(0, 0)`` the coefficient is 1/2 too, but with multiplicity 2, and the expectation the sampler
  estimates is ``1/2 - 1 / log(nbeta / gamma^2) + ...``: 0.38-0.42 at any affordable nbeta / gamma^2
  (numerical integration), so that point is not a test of the sampler.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("devinterp", reason='devinterp is not installed (pip install "interp-circuits[llc]")')

from circuits import one_thread  # noqa: E402
from interp import load_model  # noqa: E402
from interp.detectors.llc import detector as llc  # noqa: E402
from interp.detectors.llc.calibrate import CalibrationError, calibrate, trial_problem  # noqa: E402
from interp.detectors.llc.estimate import Sampling, estimate_llc  # noqa: E402
from interp.runs.layout import list_checkpoints  # noqa: E402
from interp.scoring.batch import score_checkpoints  # noqa: E402


def _half_mse(model, batch):
    x, y = batch
    return 0.5 * ((model(x).reshape(-1) - y) ** 2).mean()


def _regression(d: int, n: int = 1000):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g) + torch.randn(n, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y[:, None]).solution.T)  # the minimum
    return model, [(x, y)]


class _Product(torch.nn.Module):
    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(a)), torch.nn.Parameter(torch.tensor(b))

    def forward(self, x):
        return self.a * self.b * x


def _product_data(n: int = 1000):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, generator=g), torch.randn(n, generator=g)
    return [(x, y - x * (x @ y) / (x @ x))]  # y orthogonal to x: the best product is exactly 0


# nbeta * curvature * epsilon = 0.1: the step's bias on the variance is 2.5 %; gamma / nbeta = 0.1 %.
REGULAR = Sampling(epsilon=1e-4, gamma=1.0, nbeta=1000.0, chains=8, draws=1500, burnin=200, seed=0)


@pytest.mark.parametrize("d", [2, 6])
def test_regular_model_gives_half_its_dimension(d):
    model, data = _regression(d)
    with one_thread():
        found = estimate_llc(model, _half_mse, data, REGULAR)
    assert found.diverged is None
    assert found.llc == pytest.approx(d / 2, rel=0.10), found
    assert trial_problem(found) is None  # the calibration's checks pass at a sound setting


def test_singular_product_gives_one_half_and_is_deterministic():
    sampling = Sampling(epsilon=1e-4, gamma=50.0, nbeta=1000.0, chains=4, draws=1000, burnin=100, seed=3)
    data = _product_data()
    with one_thread():
        first = estimate_llc(_Product(1.0, 0.0), _half_mse, data, sampling)
        again = estimate_llc(_Product(1.0, 0.0), _half_mse, data, sampling)
    assert first.llc == pytest.approx(0.5, rel=0.15), first
    assert again.per_chain == first.per_chain and again.llc == first.llc  # same seed, same estimate
    other = estimate_llc(_Product(1.0, 0.0), _half_mse, data, Sampling(**{**sampling.__dict__, "seed": 4}))
    assert other.llc != first.llc
    assert not set(other.per_chain) & set(first.per_chain)  # seeds 3 and 4 share no chain (they shared 3 of 4)


@pytest.mark.parametrize("a", [-1.0, 2.0, 0.5])
def test_the_singular_answer_holds_elsewhere_in_the_valley(a):
    # At (a, 0) the loss rises as a^2 b^2 / 2, so the localised tempered posterior has b with
    # precision nbeta a^2 + gamma, and nbeta E[L - L0] = nbeta a^2 / (2 (nbeta a^2 + gamma)): 1/2 as
    # nbeta a^2 >> gamma (0.476 at a = -1, 0.494 at a = 2), only 0.417 at a = 0.5, where nbeta a^2
    # is 5 x gamma. The step keeps nbeta a^2 epsilon at 0.1, as in the regular test. With 4 chains
    # the estimate spreads by 0.04 over seeds 0-9 (mean 0.416 at a = 0.5): 15 % was 1.5 of that
    # spread, so 12 chains (a spread of about 0.024).
    nbeta, gamma = 1000.0, 50.0
    sampling = Sampling(epsilon=1e-4 / a ** 2, gamma=gamma, nbeta=nbeta, chains=12, draws=1000, burnin=100, seed=3)
    with one_thread():
        found = estimate_llc(_Product(a, 0.0), _half_mse, _product_data(), sampling)
    assert found.llc == pytest.approx(nbeta * a ** 2 / (2 * (nbeta * a ** 2 + gamma)), rel=0.15), found
    if abs(a) >= 1:
        assert found.llc == pytest.approx(0.5, rel=0.15), found


def test_a_diverging_chain_is_named_not_a_number():
    model, data = _regression(2)
    found = estimate_llc(model, _half_mse, data, Sampling(epsilon=1.0, gamma=1.0, nbeta=1000.0, chains=2, draws=50))
    assert found.diverged and "chain 0 diverged" in found.diverged
    assert found.llc != found.llc  # NaN
    assert trial_problem(found) == found.diverged


def test_options_are_read_and_refused_by_name():
    options = llc.parse_options("heads=L0H1+L1H3,chains=3,setting=1e-3/100/5.5")
    assert options.heads == "L0H1+L1H3" and options.chains == 3 and options.setting == (1e-3, 100.0, 5.5)
    with pytest.raises(ValueError, match="INTERP_LLC: cannot read 'speed=2'"):
        llc.parse_options("speed=2")
    with pytest.raises(ValueError, match=r"INTERP_LLC: cannot read 'seed=-5' \(must be in \[0, "):
        llc.parse_options("seed=-5")
    for heads in ("L0H-1", "L-1H0", "L0", "L0H1+x"):  # a negative index reached devinterp: every row lost
        with pytest.raises(ValueError, match=re.escape(f"cannot read 'heads={heads}'") + ".*is not a head L<layer>H<head>"):
            llc.parse_options(f"heads={heads}")
    # each failed later, in every checkpoint's error row, naming neither INTERP_LLC nor the key; the
    # seeds from 2**44 on gave the chains of smaller ones (2**44: seed 0's), and a key given twice took the last
    for text, why in (("chains=0", "must be in [1, 1048576]"), ("chains=-1", "must be in"), ("draws=1", "must be >= 2"),
                      ("burnin=-3", "must be >= 0"), (f"seed={2 ** 44}", "must be in [0, 17592186044415]"),
                      ("setting=inf/100/5", "need finite"), ("setting=1e-3/0/1e400", "need finite"),
                      ("setting=1e-3/-1/5", "need finite"), ("chains=1,chains=4", "given twice"),
                      ("heads=L0H1,heads=all", "given twice")):
        with pytest.raises(ValueError, match=r"INTERP_LLC: cannot read '[^']*' \(" + re.escape(why)):
            llc.parse_options(text)
    assert llc.parse_options(" chains = 3 , seed = 7 ") == llc.Options(chains=3, seed=7)  # spaces around '='
    with pytest.raises(ValueError, match="seed < 2"):
        Sampling(1e-3, 1.0, 1.0, seed=2 ** 44)
    with pytest.raises(ValueError, match="finite"):
        Sampling(math.inf, 1.0, 1.0)
    # the settings rows record: "" for the defaults, however written
    for text in ("", "heads=final", "chains=2,draws=100"):
        os.environ[llc.ENV] = text
        try:
            assert llc.settings() == ""
        finally:
            del os.environ[llc.ENV]
    assert llc.settings() == ""


def _rows(table, metric):
    return table[(table["detector"] == "llc") & (table["metric"] == metric)]


def test_calibration_chooses_a_plateau_on_the_regular_model():
    """The largest step size whose estimate agrees with the next smaller one's; the too large ones are refused.

    At ``nbeta`` 145 and ``gamma`` 100 the localisation is not weak against the curvature (the
    eigenvalues of ``X^T X / n``, about 1), so the estimate's target is the localised posterior's
    ``1/2 sum nbeta l / (nbeta l + gamma)`` (about 0.6), not d/2.
    """
    model, data = _regression(2)
    with one_thread():
        found = calibrate(model, _half_mse, data, examples=1000, chains=4, draws=400, burnin=50,
                          epsilons=(1e-1, 1e-2, 3e-3, 1e-3, 3e-4))
        estimate = estimate_llc(model, _half_mse, data, found.sampling)
    nbeta = 1000 / math.log(1000)
    assert found.sampling.nbeta == pytest.approx(nbeta)
    assert found.plateau and found.sampling.epsilon == 1e-3 and found.sampling.gamma == 100.0, found.trials
    assert "diverged" in found.trials[0]  # 1e-1: the chain leaves the basin at once
    curvature = torch.linalg.eigvalsh(data[0][0].T @ data[0][0] / len(data[0][0]))
    target = float(0.5 * (nbeta * curvature / (nbeta * curvature + 100.0)).sum())
    assert estimate.llc == pytest.approx(target, rel=0.15)
    with pytest.raises(CalibrationError, match="epsilon=10 gamma=100: SGLD chain 0 diverged"):
        calibrate(model, _half_mse, data, examples=1000, epsilons=(10.0,))


def _slow_chains(model, loss_fn, data, sampling, masks=None):
    """A stand-in for ``estimate_llc`` whose chains relax only after SGLD time 0.01 (``epsilon x
    burnin``): before that the trace still rises; after it the estimate is 10 at any step; above
    3e-3 a chain diverges."""
    from interp.detectors.llc import estimate

    steps = sampling.burnin + sampling.draws
    if sampling.epsilon > 3e-3:
        return estimate.LLCEstimate(math.nan, math.nan, (), 1.0, np.full((1, steps), np.nan), sampling, "diverged")
    level = 10.0 / sampling.nbeta
    relaxed = sampling.epsilon * sampling.burnin >= 0.01
    row = np.full(steps, level) if relaxed else np.linspace(0.0, 2 * level, steps)
    llc = float(sampling.nbeta * row[sampling.burnin:].mean())
    return estimate.LLCEstimate(llc, 0.0, (llc,), 1.0, row[None], sampling)


def test_the_smaller_step_is_burnt_in_for_the_same_sgld_time(monkeypatch):
    """At the scoring's 50 burn-in steps 1e-4 has not relaxed (its trace still rises); burnt in for
    1e-3's SGLD time (500 steps) it reproduces 1e-3's estimate, so 1e-3 is on a plateau."""
    from interp.detectors.llc import calibrate as module

    monkeypatch.setattr(module, "estimate_llc", _slow_chains)
    found = calibrate(None, None, [None], examples=100, chains=1, draws=100, burnin=50, epsilons=(1e-2, 1e-3, 1e-4))
    assert found.plateau and found.sampling.epsilon == 1e-3 and found.sampling.burnin == 50, found.trials
    assert found.trials[2] == "epsilon=0.0001 gamma=100 burn-in 500 (the same SGLD time): agrees, llc 10", found.trials
    unrelaxed = dataclasses.replace(found.sampling, epsilon=1e-4)  # 1e-4 at the scoring's 50 steps
    assert "not settle" in trial_problem(_slow_chains(None, None, None, unrelaxed))
    sharp = calibrate(None, None, [None], examples=100, chains=1, draws=100, burnin=50, epsilons=(1e-2, 1e-3, 1e-4),
                      checks=[("step 5", lambda: None)])
    assert sharp.sampling == found.sampling  # a check without a model (unreadable) drops nothing


class _Rescaled(torch.nn.Module):
    """The same function as a linear model, ``s * (w / s) x``: the loss is ``s^2`` times sharper in its weight."""

    def __init__(self, linear: torch.nn.Linear, s: float) -> None:
        super().__init__()
        self.s, self.linear = s, torch.nn.Linear(linear.in_features, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight / s)

    def forward(self, x):
        return self.s * self.linear(x)


def test_calibration_holds_on_a_sharper_earlier_checkpoint():
    """A setting chosen on the final checkpoint alone diverges on a 100x sharper earlier one; with it
    as a check the calibration steps down to a setting that holds on both."""
    model, data = _regression(2)
    sharp = _Rescaled(model, 10.0)
    epsilons = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5)
    shape = dict(examples=1000, chains=4, draws=400, burnin=50, epsilons=epsilons)
    with one_thread():
        alone = calibrate(model, _half_mse, data, **shape)
        held = calibrate(model, _half_mse, data, **shape, checks=[("step 5", lambda: sharp), ("step 6", lambda: None)])
        assert estimate_llc(sharp, _half_mse, data, alone.sampling).diverged  # what the check is for
        assert estimate_llc(sharp, _half_mse, data, held.sampling).diverged is None
        assert trial_problem(estimate_llc(model, _half_mse, data, held.sampling)) is None
    assert alone.sampling.epsilon == 1e-3 and held.sampling.epsilon < alone.sampling.epsilon, held.trials
    assert any(t.startswith("epsilon=0.001 gamma=100: at step 5: SGLD chain") for t in held.trials), held.trials


def test_checks_are_every_earlier_checkpoint_or_an_even_spread(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    steps = [0, 1, 2, 4, 8, *range(75, 1501, 75)]  # 25 checkpoints, the last at 1500
    for step in steps:
        (folder / f"step_{step:06d}.safetensors").write_bytes(b"not a checkpoint")
    assert [name for name, _ in llc._checks(tmp_path, 32)] == [f"step {s}" for s in steps[:-1]]
    spread = [name for name, _ in llc._checks(tmp_path, 4)]
    assert spread == ["step 0", "step 300", "step 825", "step 1425"]  # indices 0, 8, 15, 23 of the 24 earlier ones
    assert llc._checks(tmp_path, 32)[0][1]() is None  # unreadable: left to scoring's own error row
    assert llc._checks(tmp_path, 0) == [] and llc.parse_options("checks=0").checks == 0
    with pytest.raises(ValueError, match="checks=-1"):
        llc.parse_options("checks=-1")


@pytest.mark.slow
def test_detector_on_a_tiny_induction_run(tiny_runs, monkeypatch):
    """Calibrated once (recorded in the rows), whole-model rows at every checkpoint, head rows at the final one."""
    ind, _ = tiny_runs
    monkeypatch.setenv(llc.ENV, "draws=10,burnin=4")
    found = [path for _, path in list_checkpoints(ind)]
    paths = [found[0], found[3], found[-1]]  # steps 0, 4 and the run's final one
    table = score_checkpoints(paths, detectors=["llc"])
    assert set(table["detector"]) == {"llc"} and not (table["metric"] == "error").any(), table["error"].unique()
    assert len(_rows(table, "llc")) == len(paths) == 3 and _rows(table, "llc")["value"].notna().all()
    for name in ("llc_epsilon", "llc_gamma", "llc_nbeta", "llc_plateau"):  # one setting for the whole run
        assert _rows(table, name)["value"].nunique() == 1
    assert set(_rows(table, "llc_plateau")["value"]) <= {0.0, 1.0}
    heads = _rows(table, "llc_head")
    assert len(heads) == 8 and heads["step"].nunique() == 1 and heads["step"].iloc[0] == table["step"].max()
    assert set(table["metric"]) <= set(llc.DETECTOR.metrics)
    # inspect's number of an earlier checkpoint is the table's: calibrated on the final one (it was
    # calibrated on the checkpoint inspected, another setting and another number)
    text = llc.summary(load_model(paths[0]), ind)
    at_zero = table[(table["metric"] == "llc") & (table["step"] == 0)]["value"].iloc[0]
    assert f"llc {at_zero:.3f} +- " in text and f"the setting of step {table['step'].max()}" in text, text


def test_detector_rows_at_a_given_setting(tiny_runs, monkeypatch):
    """The quick tier's run of the detector: a setting given, so no calibration; it is recorded in the rows."""
    ind, _ = tiny_runs
    monkeypatch.setenv(llc.ENV, "heads=L1H0+L0H3,draws=6,burnin=2,setting=1e-3/100/5")
    found = [path for _, path in list_checkpoints(ind)]
    table = score_checkpoints([found[0], found[-1]], detectors=["llc"])
    assert not (table["metric"] == "error").any(), table["error"].unique()
    assert _rows(table, "llc")["value"].notna().all() and len(_rows(table, "llc")) == 2
    assert set(_rows(table, "llc_epsilon")["value"]) == {1e-3} and set(_rows(table, "llc_nbeta")["value"]) == {5.0}
    assert _rows(table, "llc_plateau")["value"].isna().all()  # given, not calibrated
    heads = _rows(table, "llc_head")
    assert sorted(zip(heads["layer"], heads["head"])) == [(0, 3), (0, 3), (1, 0), (1, 0)]
    assert _rows(table, "llc_head_std")["value"].notna().all()
    # a head named twice is estimated once; a head the model lacks is every checkpoint's error row
    monkeypatch.setenv(llc.ENV, "heads=L1H0+L1H0,draws=4,burnin=1,setting=1e-3/100/5")
    twice = score_checkpoints([found[-1]], detectors=["llc"])
    assert list(zip(_rows(twice, "llc_head")["layer"], _rows(twice, "llc_head")["head"])) == [(1, 0)]
    # other settings score the rows again, though nothing else changed (they were kept, the new settings unused)
    monkeypatch.setenv(llc.ENV, "heads=none,draws=4,burnin=1,setting=2e-3/100/5")
    again = score_checkpoints([found[-1]], detectors=["llc"], existing=twice)
    assert again.attrs["n_scored"] == 1 and set(_rows(again, "llc_epsilon")["value"]) == {2e-3}
    assert _rows(again, "llc_head").empty
    assert score_checkpoints([found[-1]], detectors=["llc"], existing=again).attrs["n_scored"] == 0  # the same: kept
    monkeypatch.setenv(llc.ENV, "heads=L9H9+L0H1,draws=4,burnin=1,setting=1e-3/100/5")
    absent = score_checkpoints([found[-1]], detectors=["llc"])
    assert absent["error"].tolist() == ["RunError: INTERP_LLC heads=L9H9+L0H1: L9H9 not in this model (2 layers x 4 heads)"]


def test_batches_drawn_once_give_the_estimate_of_the_training_stream(tiny_runs):
    """The sequence tasks' SGLD batches are drawn once (``run_loss``); the chains see what
    ``train_loss(model, step)`` draws at every step, so the estimate is the same to the bit, and
    so are the chains run side by side and one after another."""
    from interp.detectors.llc import estimate

    ind, _ = tiny_runs
    model = load_model(list_checkpoints(ind)[-1][1])
    loss, batches, examples = llc.run_loss(str(ind))
    task = llc._sgld_task(str(ind))[0]
    assert examples == task.options.batch_size and len(batches) == llc.POOL
    assert torch.equal(batches[3], task.train_batch(llc.BATCH_BASE + 3))
    s = Sampling(1e-3, 100.0, 5.0, chains=2, draws=8, burnin=2)
    drawn_once = estimate_llc(model, loss, batches, s)
    steps = [llc.BATCH_BASE + i for i in range(llc.POOL)]
    per_step = estimate_llc(model, lambda m, step: task.train_loss(m, step), steps, s)
    assert drawn_once.per_chain == per_step.per_chain and drawn_once.diverged is None
    threads = estimate.CHAIN_THREADS
    try:
        estimate.CHAIN_THREADS = 1
        assert estimate_llc(model, loss, batches, s).per_chain == drawn_once.per_chain
    finally:
        estimate.CHAIN_THREADS = threads


def test_a_fact_task_samples_its_answer_loss_on_capped_batches(tmp_path, monkeypatch):
    """Composition, a fact task: its own answer-token loss on batches of at most FULL_BATCH queries
    (the task rebuilt at that size), and model and head rows at a given setting."""
    from interp.tasks.presets import preset
    from interp.training.loop import train

    opts = preset("composition", d_model=32, n_layers=2, batch_size=512, eval_every=5, checkpoint_every=5, steps=10,
                  lr=3e-3, n_entities=40, n_relations=6, facts_per_entity=4, ood_share=0.1, phi=2.0)
    with one_thread():
        run = train(opts, tmp_path / "composition", quiet=True)
    task, steps, examples = llc._sgld_task(str(run))
    assert examples == task.batch_size == llc.FULL_BATCH < 512 and len(steps) == llc.POOL
    final = list_checkpoints(run)[-1][1]
    model = load_model(final)
    with torch.no_grad():  # the answer token's cross-entropy: near log(d_vocab) for a 10-step model, not 0
        value = float(llc.run_loss(str(run))[0](model, steps[0]))
    assert 0.5 * math.log(model.cfg.d_vocab) < value < 2 * math.log(model.cfg.d_vocab)
    monkeypatch.setenv(llc.ENV, "draws=6,burnin=2,setting=1e-4/100/15")
    table = score_checkpoints([final], detectors=["llc"])
    assert not (table["metric"] == "error").any(), table["error"].unique()
    assert np.isfinite(_rows(table, "llc")["value"]).all()
    assert len(_rows(table, "llc_head")) == model.cfg.n_layers * model.cfg.n_heads


def test_detector_error_rows(tiny_runs, tmp_path, monkeypatch):
    """A forced divergence (huge step size) and a run without run.json are error rows with the reason."""
    ind, _ = tiny_runs
    monkeypatch.setenv(llc.ENV, "heads=none,draws=10,burnin=0,setting=1e4/1/5")
    table = score_checkpoints([ind], detectors=["llc"])
    errors = table[table["metric"] == "error"]
    assert len(errors) == len(table) == len(list_checkpoints(ind))
    assert errors["error"].str.contains("SGLD chain 0 diverged").all()

    loose = tmp_path / "loose"
    shutil.copytree(ind / "checkpoints", loose)
    table = score_checkpoints([loose], detectors=["llc"])
    assert (table["metric"] == "error").all() and table["error"].str.contains("no run.json").all()
    final = load_model(ind / "checkpoints" / "step_000020.safetensors")
    assert "run.json" in llc.summary(final, None)
    # inspect: a chain that diverges is a line of the summary (it was a traceback, the heads' table lost)
    assert llc.summary(final, ind).startswith("llc: RuntimeError: SGLD chain 0 diverged")
    monkeypatch.delenv(llc.ENV)
    assert "not estimated here" in llc.summary(final, ind)
    # a model without run.json is not told to score its run with --detectors llc, which always fails
    assert llc.summary(final, None).startswith("llc: not estimated: no run.json")


def test_not_applicable_without_devinterp(monkeypatch):
    import importlib.util

    from interp.detectors.llc.estimate import devinterp_missing

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "devinterp" else real(name, *a))
    assert devinterp_missing() == 'devinterp is not installed: pip install "interp-circuits[llc]"'
    assert llc.applies(None) == devinterp_missing()
