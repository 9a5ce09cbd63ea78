"""Cost of the llc detector: seconds per checkpoint for the whole-model LLC and for all heads.

On the final checkpoint of a default induction run and a default modadd run (trained into a
temporary folder unless ``--induction RUN`` / ``--modadd RUN`` name existing ones): the
calibration of ``prepare`` (once per run; its chosen setting and whether it found a plateau),
then ``score`` with ``heads=none`` (whole model: 2 chains x 150 SGLD steps) and the head rows
alone (every head, each as many steps again), the chains on ``CHAIN_THREADS`` threads of one
intra-op thread each (the detector's own setting). Targets: whole-model LLC <= 15 s per
checkpoint (goal 3 s) for both runs, at a calibration that passed its checks. Figures with a
1-minute load above half the cores are marked busy and never meet a target. Writes the ``llc``
section of BENCHMARKS.md.

Usage: python benchmarks/bench_llc.py [--induction RUN] [--modadd RUN] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    default_run_arguments, default_runs, is_busy, load_average, load_note, machine, markdown_table, verdict,
    write_section,
)

TARGET, GOAL = 15.0, 3.0
DEMO_TARGET = 600.0  # seconds: the whole-model LLC of the demo's two runs (every checkpoint)
TRIALS: dict[str, tuple[str, ...]] = {}  # each run's calibration lines, for the section


def one_run(task: str, run: Path) -> dict:
    from interp import load_model
    from interp.detectors.llc import detector as llc
    from interp.runs.layout import list_checkpoints

    checkpoints = list_checkpoints(run)
    step, path = checkpoints[-1]
    model = load_model(path)
    clock = time.perf_counter()
    context = llc.prepare(model, run)
    calibration = time.perf_counter() - clock
    TRIALS[task] = context.calibration or (context.reason,)
    if context.reason:
        return {"run": task, "step": step, "calibration s": round(calibration, 1), "setting": context.reason[:120]}
    whole_context = dataclasses.replace(context, options=dataclasses.replace(context.options, heads="none"))
    clock = time.perf_counter()
    rows = llc.score(model, whole_context)
    whole = time.perf_counter() - clock
    clock = time.perf_counter()
    all_rows = llc.score(model, dataclasses.replace(context, options=dataclasses.replace(context.options, heads="all")))
    heads = time.perf_counter() - clock - whole  # the head rows alone (the whole model is scored again inside)
    values = {r["metric"]: r["value"] for r in rows}
    n_heads = sum(r["metric"] == "llc_head" for r in all_rows)
    s = context.sampling
    return {"run": task, "step": step, "setting": f"eps {s.epsilon:g}, gamma {s.gamma:g}, nbeta {s.nbeta:.3g}",
            "plateau": "no plateau" not in context.calibration[0], "calibration s": round(calibration, 1),
            "llc": round(values["llc"], 2), "llc_std": round(values["llc_std"], 2),
            "whole model s/ckpt": round(whole, 1), "heads s/ckpt": round(heads, 1), "heads": n_heads,
            "checkpoints": len(checkpoints), "whole run s": round(calibration + len(checkpoints) * whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_run_arguments(parser)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        runs = default_runs(args, Path(tmp))
        rows = [one_run(task, run) for task, run in runs.items()]
    after = load_average()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    from interp.detectors.llc.estimate import CHAIN_THREADS

    busy = is_busy(before) or is_busy(after, own=CHAIN_THREADS)  # after: its own threads are not others' load
    seconds = table.get("whole model s/ckpt", pd.Series([float("nan")] * len(table)))
    ok = bool((seconds <= TARGET).all()) and bool(table.get("plateau", pd.Series([False])).all())
    goal = bool((seconds <= GOAL).all())
    run_total = float(table.get("whole run s", pd.Series([float("nan")])).sum(min_count=len(table)))
    demo_ok = run_total <= DEMO_TARGET
    text = (f"## LLC cost per checkpoint (`benchmarks/bench_llc.py`)\n\n{machine()}. {load_note(before, after)}\n\n"
            "Final checkpoints of the default induction and modadd runs. `calibration s`: `prepare` (once per run, "
            "the procedure of docs/scores.md, \"Local learning coefficient\"); `whole model s/ckpt`: the model rows "
            "(2 chains x (50 burn-in + 100 draws) SGLD steps); `heads s/ckpt`: the head rows alone (every head, as "
            "many steps each; `INTERP_LLC=heads=...` chooses heads or the final checkpoint only); `whole run s`: "
            "calibration + checkpoints x whole model s/ckpt, the whole-model LLC of every checkpoint of the run (the "
            "demo trains these two recipes). The chains (and the calibration's checks) run side by side on "
            f"{CHAIN_THREADS} threads of one intra-op thread each; the load after counts them, so the busy test "
            f"judges the load above those threads.\n\n{markdown_table(table)}\n\n"
            f"Whole-model LLC <= {TARGET:g} s per checkpoint at a calibration on a plateau: **{verdict(ok, busy)}**; "
            f"goal {GOAL:g} s: **{verdict(goal, busy)}**. Both runs, every checkpoint: {run_total:.0f} s "
            f"(<= {DEMO_TARGET:g} s: **{verdict(demo_ok, busy)}**).\n\nThe calibrations' trials (the chosen "
            "setting first):\n\n" + "".join(f"- {task}:\n" + "".join(f"  - {line}\n" for line in lines)
                                            for task, lines in TRIALS.items()))
    print(text)
    if not args.no_write:
        write_section("llc", text)


if __name__ == "__main__":
    main()
