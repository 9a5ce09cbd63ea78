"""Train the composition and comparison default presets; write the `reasoning` section of BENCHMARKS.md.

Measured in one process, on real runs of the default presets (evaluations and checkpoints
included, `torch.set_num_threads(1)`), with the load average before and after. Per task and
seed: the run's seconds; the final train, ID-test and OOD-test accuracy (`metrics.csv`, the
definitions of docs/scores.md, section 7); the first evaluated step (and the seconds to it) at which the
train accuracy reaches 0.99 and the ID accuracy 0.9; for composition, the logit lens of the
bridge entity at the final checkpoint (`interp.detectors.reasoning`: mean reciprocal rank at the
`r1` position per residual state, ID and OOD test chains). Targets (issue 14, docs/training.md):
each run <= 600 s (goal 180); composition train >= 0.99, ID >= 0.9, OOD <= 0.3 and ID 0.9 at least
2x later than train 0.99 (it groks); comparison ID and OOD >= 0.8.

A full run of both presets on seed 0 takes 20+ minutes on 2 cores. `--steps N` shortens every run
(to check the script; its figures then say so and judge nothing).

Usage: python benchmarks/bench_reasoning.py [--seeds N] [--tasks composition,comparison] [--steps N] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import is_busy, load_average, load_note, machine, seeds_label, verdict, write_section  # noqa: E402

from interp import load_model  # noqa: E402
from interp.detectors.reasoning.context import run_context  # noqa: E402
from interp.detectors.reasoning.measures import bridge_lens  # noqa: E402
from interp.tasks.presets import preset  # noqa: E402
from interp.training.loop import train  # noqa: E402

TASKS = ("composition", "comparison")
MAX_SECONDS, GOAL_SECONDS = 600, 180


def first(rows: list[dict], column: str, level: float) -> dict | None:
    """The first evaluation row whose ``column`` reaches ``level``; None when none does."""
    return next((r for r in rows if r[column] >= level), None)


def run_figures(task: str, out: Path, seed: int, steps: int | None) -> dict:
    """One run of the task's default preset: seconds, final accuracies, steps to the thresholds."""
    rows, start = [], time.perf_counter()

    def record(row: dict) -> None:
        rows.append({**row, "wall_s": time.perf_counter() - start})

    train(preset(task, seed=seed, steps=steps), out, quiet=True, on_eval=record)
    total = time.perf_counter() - start
    last = rows[-1]
    train99, id90 = first(rows, "train_acc", 0.99), first(rows, "test_id_acc", 0.9)
    figures = {"task": task, "seed": seed, "steps": last["step"], "total_s": total, "train": last["train_acc"],
               "id": last["test_id_acc"], "ood": last["test_ood_acc"],
               "train99": train99 and train99["step"], "id90": id90 and id90["step"],
               "id90_s": id90["wall_s"] if id90 else float("nan"), "bridge": None}
    if task == "composition":
        model, context = load_model(out), run_context(out)
        figures["bridge"] = {s: [float(v) for v in bridge_lens(model, context, s).mean_reciprocal_rank()[:, 1]]
                             for s in ("id", "ood")}
    return figures


def meets(r: dict) -> bool:
    """Whether one run meets its task's accuracy targets (module docstring)."""
    if r["task"] == "composition":
        groks = r["train99"] is not None and r["id90"] is not None and r["id90"] >= 2 * r["train99"]
        return r["train"] >= 0.99 and r["id"] >= 0.9 and r["ood"] <= 0.3 and groks
    return r["id"] >= 0.8 and r["ood"] >= 0.8


def run_table(runs: list[dict]) -> str:
    lines = ["| task | seed | steps | whole run | train | ID test | OOD test | train 0.99 at step | ID 0.9 at step (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        id90 = f"{r['id90']} ({r['id90_s']:.0f} s)" if r["id90"] is not None else "not reached"
        train99 = r["train99"] if r["train99"] is not None else "not reached"
        lines.append(f"| {r['task']} | {r['seed']} | {r['steps']:,} | {r['total_s']:.0f} s | {r['train']:.3f} | "
                     f"{r['id']:.3f} | {r['ood']:.3f} | {train99} | {id90} |")
    return "\n".join(lines)


def bridge_table(runs: list[dict]) -> str:
    comp = [r for r in runs if r["bridge"]]
    if not comp:
        return ""
    n = len(comp[0]["bridge"]["id"])
    lines = ["| seed | test chains | " + " | ".join(f"state {s}" for s in range(n)) + " |", "|---|---|" + "---|" * n]
    for r in comp:
        for split in ("id", "ood"):
            lines.append(f"| {r['seed']} | {split.upper()} | " + " | ".join(f"{v:.2f}" for v in r["bridge"][split]) + " |")
    return ("Composition, final checkpoint: mean reciprocal rank of the bridge entity at the `r1` position per "
            "residual state (0: embeddings; the last: after the last block), logit lens:\n\n" + "\n".join(lines) + "\n")


def markdown(runs: list[dict], before: tuple[float, float, float], after: tuple[float, float, float],
             steps: int | None) -> str:
    busy = is_busy(before)

    def judged(ok: bool, load_matters: bool) -> str:
        return "not judged (--steps)" if steps is not None else verdict(ok, busy and load_matters)

    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        mine = [r for r in runs if r["task"] == task]
        slowest = max(r["total_s"] for r in mine)
        rows.append(f"| {task}: slowest whole run | {slowest:.0f} s | <= {MAX_SECONDS} s (goal {GOAL_SECONDS}): "
                    f"{judged(slowest <= MAX_SECONDS, True)} |")
        target = ("train >= 0.99, ID >= 0.9, OOD <= 0.3, ID 0.9 >= 2x later than train 0.99" if task == "composition"
                  else "ID >= 0.8 and OOD >= 0.8")
        ok = all(meets(r) for r in mine)
        rows.append(f"| {task}: {target}, {seeds_label(r['seed'] for r in mine)} | {'yes' if ok else 'no'} | {judged(ok, False)} |")
    shortened = (f" **Shortened to {steps} steps with `--steps`: a check of the script, not the presets' figures.**"
                 if steps is not None else "")
    return f"""## Implicit reasoning (`python benchmarks/bench_reasoning.py`)

{machine()}. {load_note(before, after)}{shortened} One process; real runs of the composition and
comparison `default` presets (evaluations and checkpoints included); accuracies from each run's
`metrics.csv` (docs/scores.md, section 7).

| what | figure | target |
|---|---|---|
{chr(10).join(rows)}

Per run (final evaluation; "at step": the first evaluation reaching the level, with the seconds
since the start of training):

{run_table(runs)}

{bridge_table(runs)}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="runs with seeds 0..N-1 of each task (default 1)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default both)")
    parser.add_argument("--steps", type=int, default=None, help="shorten every run to N steps (a check; judges nothing)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        parser.error(f"--tasks must name {' and/or '.join(TASKS)}, got {args.tasks!r}")
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--seeds and --steps must be >= 1")
    torch.set_num_threads(1)
    before = load_average()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            for seed in range(args.seeds):
                runs.append(run_figures(task, Path(tmp) / f"{task}{seed}", seed, args.steps))
                print(f"{task} default seed {seed}:", {k: v for k, v in runs[-1].items() if k != "bridge"})
    text = markdown(runs, before, load_average(), args.steps)
    print(text)
    if not args.no_write:
        write_section("reasoning", text)


if __name__ == "__main__":
    main()
