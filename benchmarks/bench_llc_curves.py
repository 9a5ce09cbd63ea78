"""The LLC across training on the toolkit's own default runs: induction, modadd, text (issue 35, item 4).

Each run is trained by the toolkit (``interp.train``, the default preset of its task, one seed),
then every checkpoint is scored with the ``llc`` detector at the run's own calibration
(``INTERP_LLC=heads=none``: the whole model; the setting chosen once per run, on the final checkpoint
and checked not to diverge on the earlier ones):

- induction, seeds 0-2: the LLC curve (mean and spread over chains), its change points
  (``interp.curve_change_points``: steepest rise and fall of the curve smoothed over 3
  checkpoints, from 5 % of the run on), and the distance of the nearest one from the
  prefix-matching phase change (``interp.locate_phase_change`` on the best prefix-matching head
  of the ``heads`` detector) as a share of the run (target <= 15 %). Per head, the refined LLC
  (``llc_head``) at the first checkpoint, at the checkpoint before the phase change and at the
  last one; the heads flagged previous-token or induction at the last checkpoint are ranked among
  all heads by their change from the first checkpoint to the last, and from before the phase
  change to the last (1: the largest rise).
- modadd, seeds 0-2: the LLC at the start and at the ends of the three grokking phases
  (``circuits.grokking_phases`` on the run's progress measures), its peak, and whether it rises
  over memorization (end of memorization above the start) and falls from circuit formation to the
  end of cleanup (end of cleanup below the end of memorization).
- text, seed 0 by default: the LLC curve beside the in-context learning score (``text``
  detector), the change points of both and their distance as a share of the run.

Each part writes its own BENCHMARKS.md section (``llc-curves-induction``, ``llc-curves-modadd``,
``llc-curves-text``), again after each seed (the seeds done so far; parts may run side by side in
separate processes: the write holds a lock); figures with a 1-minute load above half the cores are marked busy.

Usage: python benchmarks/bench_llc_curves.py [--only induction|modadd|text] [--seeds 0 1 2]
       [--keep DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, load_note, machine, markdown_table, seeds_label, write_section  # noqa: E402

TARGET = 0.15
FLAGS = ("is_previous_token", "is_induction")


#: (task, seed) -> an existing run of the default preset to use instead of training (``--runs``).
EXISTING: dict[tuple[str, int], Path] = {}


def _train(task: str, out: Path, seed: int) -> float:
    """Train the default preset into ``out`` (seconds), or copy the ``--runs`` run of this seed (NaN seconds)."""
    import shutil

    from interp import preset, train

    if (task, seed) in EXISTING:
        shutil.copytree(EXISTING[task, seed], out)
        return float("nan")
    start = time.perf_counter()
    train(preset(task, seed=seed), out, quiet=True)
    return time.perf_counter() - start


def _score(out: Path, detectors: tuple[str, ...]) -> tuple[pd.DataFrame, float]:
    from interp import score_checkpoints

    os.environ["INTERP_LLC"] = "heads=none"
    start = time.perf_counter()
    table = score_checkpoints([out], detectors=detectors)
    errors = table[table["metric"] == "error"] if "metric" in table else table.iloc[:0]
    if not errors.empty:
        print("error rows:", errors.to_dict("records")[:3])
    return table, time.perf_counter() - start


def llc_curve(table: pd.DataFrame) -> pd.DataFrame:
    """``step, llc, llc_std`` per checkpoint from the model rows of the ``llc`` detector."""
    rows = table[(table["detector"] == "llc") & table["layer"].isna() & table["metric"].isin(("llc", "llc_std"))]
    curve = rows.pivot_table(index="step", columns="metric", values="value").reset_index()
    return curve.astype({"step": "int64"}).sort_values("step", ignore_index=True)


def _curve_text(curve: pd.DataFrame) -> str:
    return ", ".join(f"{int(r.step)}: {r.llc:.1f} ± {r.llc_std:.1f}" for r in curve.itertuples())


def _points(changes) -> str:
    return ", ".join(f"{'rise' if c.slope > 0 else 'fall'} {c.start_step}-{c.end_step}" for c in changes) or "none"


def head_llcs(out: Path, table: pd.DataFrame, steps: list[int]) -> pd.DataFrame:
    """``step, layer, head, llc_head`` at ``steps``, at the setting the run's model rows record."""
    from interp import load_model
    from interp.detectors.llc import detector as llc
    from interp.runs.layout import list_checkpoints

    model_rows = table[(table["detector"] == "llc") & table["layer"].isna()]
    setting = "/".join(repr(float(model_rows.loc[model_rows["metric"] == m, "value"].iloc[0]))
                       for m in ("llc_epsilon", "llc_gamma", "llc_nbeta"))
    paths = dict(list_checkpoints(out))
    os.environ["INTERP_LLC"] = f"heads=all,setting={setting}"
    context = llc.prepare(load_model(paths[max(paths)]), out)
    rows = []
    for step in steps:
        for row in llc.score(load_model(paths[step]), context):
            if row["metric"] == "llc_head":
                rows.append({"step": step, "layer": row["layer"], "head": row["head"], "llc_head": row["value"]})
    return pd.DataFrame(rows)


def _ranks(change: pd.Series, flagged: list[tuple[int, int]]) -> str:
    order = change.rank(ascending=False, method="min").astype(int)
    return ", ".join(f"L{la}H{h} {order[(la, h)]}" for la, h in flagged) or "none flagged"


def induction_run(out: Path, seed: int) -> tuple[dict, pd.DataFrame]:
    from interp import best_head_curve, curve_change_points, locate_phase_change

    train_s = _train("induction", out, seed)
    table, score_s = _score(out, ("heads", "llc"))
    curve = llc_curve(table)
    pm = locate_phase_change(*best_head_curve(table[table["detector"] == "heads"])[["step", "score"]].T.to_numpy())
    changes = curve_change_points(curve["step"], curve["llc"])
    last = int(curve["step"].max())
    nearest = min(changes, key=lambda c: abs(c.step - pm.step)) if pm and changes else None
    gap = abs(nearest.step - pm.step) / last if nearest else float("nan")
    flags = table[(table["detector"] == "heads") & table["metric"].isin(FLAGS) & (table["step"] == last)]
    flagged = {m: sorted((int(r.layer), int(r.head)) for r in flags[(flags["metric"] == m) & (flags["value"] > 0.5)]
                         .itertuples()) for m in FLAGS}
    before = pm.start_step if pm else last // 2
    start = time.perf_counter()
    heads = head_llcs(out, table, sorted({0, before, last}))
    heads_s = time.perf_counter() - start
    wide = heads.pivot_table(index=["layer", "head"], columns="step", values="llc_head")
    wide.index = [(int(la), int(h)) for la, h in wide.index]
    whole, late = wide[last] - wide[0], wide[last] - wide[before]
    result = {"seed": seed, "steps": last, "pm": pm and f"{pm.start_step}-{pm.end_step} ({pm.step})",
              "llc changes": _points(changes), "nearest": nearest and nearest.step, "gap": gap,
              "prev-token ranks (first->last)": _ranks(whole, flagged["is_previous_token"]),
              "induction ranks (first->last)": _ranks(whole, flagged["is_induction"]),
              "prev-token ranks (before->last)": _ranks(late, flagged["is_previous_token"]),
              "induction ranks (before->last)": _ranks(late, flagged["is_induction"]),
              "heads": len(wide), "before": before, "train s": round(train_s) if train_s == train_s else "-",
              "llc s": round(score_s), "head llc s": round(heads_s)}
    heads["seed"] = seed
    return result, pd.concat([curve.assign(seed=seed), heads], ignore_index=True)


def induction_section(seeds: list[int], tmp: Path) -> Iterator[tuple[str, list[pd.DataFrame]]]:
    before = load_average()
    results, frames = [], []
    for seed in seeds:
        result, frame = induction_run(tmp / f"induction{seed}", seed)
        print("induction:", result)
        results.append(result)
        frames.append(frame)
        yield induction_text(results, frames, before), frames


def induction_text(results: list[dict], frames: list[pd.DataFrame], before: tuple[float, float, float]) -> str:
    after = load_average()
    seeds = [r["seed"] for r in results]
    table = pd.DataFrame(results)
    within = int((table["gap"] <= TARGET).sum())
    curves = "\n".join(f"- seed {r['seed']}: " + _curve_text(f[f["llc"].notna()]) for r, f in zip(results, frames))
    heads = "\n".join(
        f"- seed {r['seed']}, step 0 / {r['before']} / {r['steps']}: " + ", ".join(
            f"L{int(la)}H{int(h)} " + " / ".join(f"{v:.1f}" for v in g.sort_values("step")["llc_head"])
            for (la, h), g in f[f["llc_head"].notna()].groupby(["layer", "head"]))
        for r, f in zip(results, frames))
    table["gap"] = table["gap"].map(lambda g: f"{100 * g:.0f} %")
    text = f"""## LLC across training: induction (`python benchmarks/bench_llc_curves.py --only induction`)

{machine()}. {load_note(before, after)}

Default induction runs ({seeds_label(seeds)}), every checkpoint scored with `heads` and `llc`
(whole model, the run's own calibration). `pm`: the prefix-matching phase change (steepest
segment of the best head's curve, `interp.locate_phase_change`; its midpoint in brackets);
`llc changes`: the change points of the LLC curve (`interp.curve_change_points`: steepest rise
and fall of the curve smoothed over 3 checkpoints, from 5 % of the run on); `gap`: the distance
of the nearest one's midpoint from the phase change's, as a share of the run (target <= 15 %).
Ranks: each flagged head's place among all {table['heads'].iloc[0]} heads by the change of its refined LLC
(`llc_head`, 1 = largest rise) from step 0 to the last checkpoint, and from the checkpoint before
the phase change (`before`) to the last.

{markdown_table(table)}

LLC change point within {100 * TARGET:.0f} % of the run of the phase change: {within} of {len(table)} seeds.

LLC per checkpoint (step: mean ± std over chains):

{curves}

Refined LLC per head at step 0 / before the phase change / the last checkpoint:

{heads}
"""
    return text


def _at(curve: pd.DataFrame, step: int | None) -> float:
    if step is None:
        return float("nan")
    return float(curve.iloc[(curve["step"] - step).abs().argmin()]["llc"])


def modadd_section(seeds: list[int], tmp: Path) -> Iterator[tuple[str, list[pd.DataFrame]]]:
    from circuits import grokking_phases
    from interp import run_progress_measures

    before = load_average()
    results, frames = [], []
    for seed in seeds:
        out = tmp / f"modadd{seed}"
        train_s = _train("modadd", out, seed)
        phases = grokking_phases(run_progress_measures(out, quiet=True))
        table, score_s = _score(out, ("llc",))
        curve = llc_curve(table)
        ends = (phases.memorization_end, phases.circuit_formation_end, phases.cleanup_end)
        start, mem, circ, clean = _at(curve, 0), *(_at(curve, s) for s in ends)
        peak = curve.loc[curve["llc"].idxmax()]
        results.append({"seed": seed, "phase ends": ", ".join(str(s) for s in ends),
                        "llc start": round(start, 1), "llc end of memorization": round(mem, 1),
                        "end of circuit formation": round(circ, 1), "end of cleanup": round(clean, 1),
                        "last": round(float(curve["llc"].iloc[-1]), 1),
                        "peak (step)": f"{peak['llc']:.1f} ({int(peak['step'])})",
                        "rises while memorizing": bool(mem > start), "falls to end of cleanup": bool(clean < mem),
                        "train s": round(train_s) if train_s == train_s else "-", "llc s": round(score_s)})
        print("modadd:", results[-1])
        frames.append(curve.assign(seed=seed))
        yield modadd_text(results, frames, before), frames


def modadd_text(results: list[dict], frames: list[pd.DataFrame], before: tuple[float, float, float]) -> str:
    after = load_average()
    seeds = [r["seed"] for r in results]
    table = pd.DataFrame(results)
    curves = "\n".join(f"- seed {r['seed']}: " + _curve_text(f) for r, f in zip(results, frames))
    text = f"""## LLC across training: modular addition (`python benchmarks/bench_llc_curves.py --only modadd`)

{machine()}. {load_note(before, after)}

Default modadd runs ({seeds_label(seeds)}), every checkpoint scored with `llc` (whole model, the
run's own calibration). `phase ends`: the steps where memorization, circuit formation and cleanup
end (`circuits.grokking_phases` on the run's progress measures); the LLC columns are the
estimate at the checkpoint nearest each step. `rises while memorizing`: the LLC at the end of
memorization is above step 0's; `falls to end of cleanup`: the LLC at the end of cleanup is below
its value at the end of memorization. `train s`: - where an existing default run was scored
(`--runs`).

{markdown_table(table)}

LLC per checkpoint (step: mean ± std over chains):

{curves}
"""
    return text


def text_section(seeds: list[int], tmp: Path) -> Iterator[tuple[str, list[pd.DataFrame]]]:
    from interp import curve_change_points
    from interp.detectors.text.detector import change_points

    before = load_average()
    results, frames = [], []
    for seed in seeds:
        out = tmp / f"text{seed}"
        train_s = _train("text", out, seed)
        table, score_s = _score(out, ("heads", "text", "llc"))
        curve = llc_curve(table)
        _, icl, pm, icl_change = change_points(table)
        changes = curve_change_points(curve["step"], curve["llc"])
        last = int(curve["step"].max())
        nearest = min(changes, key=lambda c: abs(c.step - icl_change.step)) if icl_change and changes else None
        results.append({"seed": seed, "llc changes": _points(changes),
                        "icl change": icl_change and f"{icl_change.start_step}-{icl_change.end_step}",
                        "pm change": pm and f"{pm.start_step}-{pm.end_step}",
                        "gap to icl": f"{100 * abs(nearest.step - icl_change.step) / last:.0f} %" if nearest else "-",
                        "train s": round(train_s) if train_s == train_s else "-", "scoring s": round(score_s)})
        print("text:", results[-1])
        frames.append(curve.merge(icl[["step", "icl_score"]], on="step", how="left").assign(seed=seed))
        yield text_text(results, frames, before), frames


def text_text(results: list[dict], frames: list[pd.DataFrame], before: tuple[float, float, float]) -> str:
    after = load_average()
    seeds = [r["seed"] for r in results]
    curves = "\n\n".join(f"Seed {r['seed']}:\n\n" + markdown_table(f[["step", "llc", "llc_std", "icl_score"]])
                         for r, f in zip(results, frames))
    text = f"""## LLC across training: text (`python benchmarks/bench_llc_curves.py --only text`)

{machine()}. {load_note(before, after)}

Default text runs ({seeds_label(seeds)}), every checkpoint scored with `heads`, `text` and `llc`
(whole model, the run's own calibration). `llc changes` by `interp.curve_change_points`; `icl
change` and `pm change`: the steepest fall of the in-context learning score and the steepest rise
of the best prefix-matching head (`interp.icl_change_points`); `gap to icl`: distance of the
nearest LLC change point from the in-context change, as a share of the run.

{markdown_table(pd.DataFrame(results))}

{curves}
"""
    return text


PARTS = {"induction": induction_section, "modadd": modadd_section, "text": text_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(PARTS), action="append", help="run only these parts (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds (default: 0 1 2 for induction and modadd, 0 for text)")
    parser.add_argument("--runs", type=Path, nargs="+", default=(),
                        help="existing runs of the default presets (interp train TASK --seed N) to score instead of "
                             "training those seeds (their `train s` is -)")
    parser.add_argument("--keep", type=Path, default=None, help="write each part's curves to DIR/llc-<part>.csv")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for run in args.runs:
        options = json.loads((run / "run.json").read_text())["training"]
        if options.get("preset") != "default":
            parser.error(f"{run}: not a run of the default preset")
        EXISTING[options["task"], int(options["seed"])] = run
    for part in args.only or tuple(PARTS):
        seeds = args.seeds or ([0] if part == "text" else [0, 1, 2])
        with tempfile.TemporaryDirectory() as tmp:
            for text, frames in PARTS[part](seeds, Path(tmp)):  # after each seed: the seeds done so far
                print(text)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    pd.concat(frames, ignore_index=True).to_csv(args.keep / f"llc-{part}.csv", index=False)
                if not args.no_write:
                    # parts may run side by side in separate processes
                    with open(Path(tempfile.gettempdir()) / "bench_llc_curves.lock", "w") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        write_section(f"llc-curves-{part}", text)


if __name__ == "__main__":
    main()
