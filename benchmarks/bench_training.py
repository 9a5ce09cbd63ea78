"""Train both toy models on several seeds; write the `training` section of BENCHMARKS.md.

Measured in one process, on real runs of the default presets (evaluations and checkpoints
included), with the load average before and after:

1. seconds per full-batch modular-addition epoch with the last-position forward
   (`interp.fast_forward`) vs the full `HookedTransformer` forward;
2. modadd `default`, seeds 0..N-1: epochs and seconds to 99 % train and test accuracy and the
   three phases of grokking (progress measures of the run's checkpoints). Targets (issue 11):
   every seed reaches 99 % test accuracy within the run, median seconds to it <= 60, slowest
   <= 120, test 99 % at least 2x later than train 99 %, all three phases located; and (issue 31)
   no late spike: after test 99 % the test loss never rises more than :data:`LATE_RISE` nats
   above its lowest value since (the "late rise");
3. induction `default`, seeds 0..M-1: best layer-1 prefix-matching score and in-context loss
   on the second copy of `[BOS, r, r]` probes for repeats of L = 4, 8, 16, 31 tokens at the last
   checkpoint, best prefix matching at the first checkpoint, and the run's seconds. Targets:
   prefix matching >= 0.8 and loss <= 1 nat at every L, < 0.3 at the first checkpoint, <= 60 s.

4. text `default` (`--only text` runs this part alone and writes only its own section,
   `training-text`), seeds 0..K-1: the run's seconds; every checkpoint scored with the heads and
   text detectors; best prefix matching and the in-context learning score at the last checkpoint;
   the change points of both curves (same rule) and their distance as a share of the run; the
   late- and early-token loss rise when the flagged induction heads are ablated. Targets (issue
   18): <= 600 s a run (goal 240), prefix matching >= 0.6, score <= -0.2 nats, change points
   within 15 % of the run's steps.

Usage: python benchmarks/bench_training.py [--seeds N] [--induction-seeds M] [--text-seeds K]
       [--only text] [--no-write]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, is_busy, load_average, load_note, machine, seeds_label, verdict, write_section  # noqa: E402

from circuits import grokking_phases, prefix_matching_scores, repeated_token_loss  # noqa: E402
from interp import build_model, load_model, modadd_config, run_progress_measures  # noqa: E402
from interp.runs.checkpoints import list_checkpoints  # noqa: E402
from interp.tasks.fast_forward import last_position_logits  # noqa: E402
from interp.tasks.presets import preset  # noqa: E402
from interp.tasks.modular import all_pairs, answers, train_mask  # noqa: E402
from interp.training.loop import train  # noqa: E402

PAPER_EPOCHS = 9_000  # Nanda et al. 2023: test accuracy reaches ~99 % after ~8-10k epochs
REPEATS = (4, 8, 16, 31)
#: Largest rise (nats) of the modadd test loss above its lowest value since test 99 %: no late spike.
LATE_RISE = 0.05


def late_rise(losses) -> float:
    """The largest rise of a loss curve above its lowest value so far (NaN for an empty curve)."""
    losses = list(losses)
    return max((x - low for x, low in zip(losses, itertools.accumulate(losses, min))), default=float("nan"))


def epoch_seconds(fast: bool, epochs: int = 10) -> float:
    model = build_model(modadd_config(), seed=0)
    model.train()
    mask = train_mask(113, 0.3, 0)
    x, y = all_pairs(113)[mask], answers(113)[mask]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))

    def run() -> None:
        for _ in range(epochs):
            logits = last_position_logits(model, x) if fast else model(x)[:, -1]
            loss = F.cross_entropy(logits.double(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return best_of(run) / epochs


def timed_run(task: str, out: Path, seed: int) -> tuple[list[dict], float]:
    """Train the default preset; returns eval rows with a `wall_s` column and the total time."""
    rows, start = [], time.perf_counter()

    def record(row: dict) -> None:
        rows.append({**row, "wall_s": time.perf_counter() - start})

    train(preset(task, seed=seed), out, quiet=True, on_eval=record)
    return rows, time.perf_counter() - start


def grok_figures(out: Path, seed: int) -> dict:
    """One modadd default run: epochs and seconds to 99 % train / test accuracy, and its phases."""
    rows, total = timed_run("modadd", out, seed)
    train99 = next((r for r in rows if r["train_acc"] >= 0.99), None)
    test99 = next((r for r in rows if r["test_acc"] >= 0.99), None)
    phases = grokking_phases(run_progress_measures(out, quiet=True))
    after = [r["test_loss"] for r in rows if test99 and r["step"] >= test99["step"]]
    return {
        "seed": seed, "train99": train99 and train99["step"], "test99": test99 and test99["step"],
        "test99_s": test99["wall_s"] if test99 else float("nan"), "total_s": total,
        "final_test_acc": rows[-1]["test_acc"], "final_test_loss": rows[-1]["test_loss"],
        "late_rise": late_rise(after),
        "phases": (phases.memorization_end, phases.circuit_formation_end, phases.cleanup_end),
    }


def induction_figures(out: Path, seed: int) -> dict:
    """One induction default run: prefix matching and second-copy loss at each repeat length."""
    _, total = timed_run("induction", out, seed)
    ckpts = list_checkpoints(out)
    first, last = load_model(ckpts[0][1]), load_model(ckpts[-1][1])

    def best(model, half_len):
        scores = prefix_matching_scores(model, half_len=half_len)
        return scores.loc[scores.layer == 1, "score"].max()

    return {
        "seed": seed, "total_s": total, "first_pm": best(first, None),
        "pm": {n: best(last, n) for n in REPEATS},
        "loss": {n: repeated_token_loss(last, half_len=n) for n in REPEATS},
    }


def text_figures(out: Path, seed: int, keep: Path | None = None) -> dict:
    """One text default run: seconds, final scores, both change points, the ablation.

    With ``keep``, the run's scores table and metrics go to ``keep/text<seed>.csv`` and
    ``keep/text<seed>-metrics.csv`` (the curves behind docs/training.md).
    """
    from circuits import per_token_loss
    from interp.detectors.text.detector import EARLY, LATE, change_points, induction_heads_of, run_corpus_tokens
    from interp.scoring.batch import score_checkpoints

    _, total = timed_run("text", out, seed)
    start = time.perf_counter()
    table = score_checkpoints([out], detectors=("heads", "text"))
    scoring = time.perf_counter() - start
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        table.to_csv(keep / f"text{seed}.csv", index=False)
        shutil.copy(out / "metrics.csv", keep / f"text{seed}-metrics.csv")
    heads, curve, pm, icl = change_points(table)
    flagged = induction_heads_of(table)
    rise = (float("nan"), float("nan"))
    if flagged:
        model, tokens = load_model(out), run_corpus_tokens(out)
        clean, ablated = per_token_loss(model, tokens), per_token_loss(model, tokens, ablate=flagged)
        rise = tuple(float(ablated[:, t - 1].mean() - clean[:, t - 1].mean()) for t in (EARLY, LATE))
    steps = int(curve["step"].max())
    return {"seed": seed, "total_s": total, "score_s": scoring, "steps": steps, "pm": float(heads["score"].iloc[-1]),
            "icl": float(curve["icl_score"].iloc[-1]), "test_loss": float(curve["test_loss"].iloc[-1]),
            "pm_step": pm and pm.step, "icl_step": icl and icl.step,
            "gap": abs(pm.step - icl.step) / steps if pm and icl else float("nan"),
            "heads": ", ".join(f"L{la}H{h}" for la, h in flagged) or "none", "rise": rise}


def text_table(runs: list[dict]) -> str:
    lines = ["| seed | training | best prefix matching | in-context learning score | held-out loss | change points: heads, score (gap) | ablated induction heads: loss rise at token 50 / 500 | scoring |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        gap = f"{r['pm_step']}, {r['icl_step']} ({100 * r['gap']:.0f} %)"
        lines.append(f"| {r['seed']} | {r['total_s']:.0f} s | {r['pm']:.2f} | {r['icl']:.3f} | {r['test_loss']:.3f} | {gap} | "
                     f"{r['heads']}: {r['rise'][0]:+.2f} / {r['rise'][1]:+.2f} | {r['score_s']:.0f} s |")
    return "\n".join(lines)


def text_section(seeds: int, write: bool, keep: Path | None = None) -> None:
    before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for seed in range(seeds):
            runs.append(text_figures(Path(tmp) / f"text{seed}", seed, keep))
            print("text default:", runs[-1])
    text = text_markdown(runs, before, load_average())
    print(text)
    if write:
        write_section("training-text", text)


def text_markdown(runs: list[dict], before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """The `training-text` section of BENCHMARKS.md from the per-seed figures of :func:`text_figures`."""
    busy = is_busy(before)
    slowest = max(r["total_s"] for r in runs)
    pm_ok = all(r["pm"] >= 0.6 for r in runs)
    icl_ok = all(r["icl"] <= -0.2 for r in runs)
    gap_ok = all(r["gap"] <= 0.15 for r in runs)
    options = preset("text")
    label = seeds_label(r["seed"] for r in runs)
    text = f"""## Training on text (`python benchmarks/bench_training.py --only text`)

{machine()}. {load_note(before, after)} One process; real runs of the text `default` preset
({options.steps:,} steps of {options.batch_size} contexts of 512 bytes of the standard library), evaluations and
checkpoints included; then every checkpoint scored with the `heads` and `text` detectors.

| what | figure | target |
|---|---|---|
| slowest whole run | {slowest:.0f} s | <= 600 s (goal 240): {verdict(slowest <= 600, busy)} |
| best prefix matching at the last checkpoint >= 0.6, {label} | {'yes' if pm_ok else 'no'} | {verdict(pm_ok, False)} |
| in-context learning score at the last checkpoint <= -0.2 nats, {label} | {'yes' if icl_ok else 'no'} | {verdict(icl_ok, False)} |
| change points of prefix matching and of the score within 15 % of the run, {label} | {'yes' if gap_ok else 'no'} | {verdict(gap_ok, False)} |

Per seed (the change points by `interp.icl_change_points`: steepest rise of the best
prefix-matching score, steepest fall of the in-context learning score, both by
`interp.locate_phase_change` on the checkpoints from 5 % of the run on; the ablation zeroes the
heads flagged `is_induction` at the last checkpoint):

{text_table(runs)}
"""
    return text


def grok_table(groks: list[dict]) -> str:
    lines = ["| seed | train 99 % (epoch) | test 99 % (epoch) | test / train | seconds to test 99 % | phases: memorization, circuit formation, cleanup | late rise of the test loss | final test loss | whole run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in groks:
        ratio = g["test99"] / g["train99"] if g["test99"] and g["train99"] else float("nan")
        reached = g["test99"] if g["test99"] is not None else f"not reached (test acc {g['final_test_acc']:.3f})"
        phases = ", ".join("-" if p is None else str(p) for p in g["phases"])
        lines.append(f"| {g['seed']} | {g['train99']} | {reached} | {ratio:.1f}x | {g['test99_s']:.1f} s | {phases} | {g['late_rise']:.3f} | {g['final_test_loss']:.4f} | {g['total_s']:.1f} s |")
    return "\n".join(lines)


def induction_table(runs: list[dict]) -> str:
    heads = " | ".join(f"L = {n}" for n in REPEATS)
    lines = [f"| seed | first checkpoint | {heads} | whole run |", "|---|---|" + "---|" * len(REPEATS) + "---|"]
    for r in runs:
        cells = " | ".join(f"{r['pm'][n]:.2f} / {r['loss'][n]:.2f}" for n in REPEATS)
        lines.append(f"| {r['seed']} | {r['first_pm']:.2f} | {cells} | {r['total_s']:.1f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="modadd runs with seeds 0..N-1 (default 10)")
    parser.add_argument("--induction-seeds", type=int, default=5, help="induction runs with seeds 0..M-1 (default 5)")
    parser.add_argument("--text-seeds", type=int, default=3, help="text runs with seeds 0..K-1 (default 3)")
    parser.add_argument("--only", choices=("text",), default=None, help="run only this part (writes only its section)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each text run's scores and metrics here")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.only == "text":
        text_section(args.text_seeds, not args.no_write, args.keep)
        return
    before = load_average()
    busy = is_busy(before)

    fast, full = epoch_seconds(True), epoch_seconds(False)
    print(f"epoch: fast {fast * 1e3:.1f} ms, full {full * 1e3:.1f} ms ({full / fast:.2f}x)")
    with tempfile.TemporaryDirectory() as tmp:
        inductions = []
        for seed in range(args.induction_seeds):
            inductions.append(induction_figures(Path(tmp) / f"induction{seed}", seed))
            print("induction default:", inductions[-1])
        groks = []
        for seed in range(args.seeds):
            groks.append(grok_figures(Path(tmp) / f"modadd{seed}", seed))
            print("modadd default:", groks[-1])
    after = load_average()

    reached = [g for g in groks if g["test99"] is not None]
    seconds = sorted(g["test99_s"] for g in reached)
    median = statistics.median(seconds) if seconds else float("nan")
    slowest = max(g["test99_s"] if g["test99"] is not None else float("inf") for g in groks)
    grokking = all(g["test99"] is not None and g["train99"] and g["test99"] >= 2 * g["train99"] for g in groks)
    phased = all(None not in g["phases"] for g in groks)
    steady = all(g["late_rise"] <= LATE_RISE for g in groks)
    copies = all(r["pm"][n] >= 0.8 and r["loss"][n] <= 1.0 for r in inductions for n in REPEATS)
    starts_low = all(r["first_pm"] < 0.3 for r in inductions)
    ind_slowest = max(r["total_s"] for r in inductions)
    canonical = full * PAPER_EPOCHS

    text = f"""## Training (`python benchmarks/bench_training.py`)

{machine()}. {load_note(before, after)} One process; real runs of the default presets
({preset('modadd').steps:,} epochs for modadd, {preset('induction').steps} steps for induction), evaluations
and checkpoints included.

| what | figure | target |
|---|---|---|
| modadd epoch ({int(train_mask(113, 0.3, 0).sum()):,} pairs, forward + backward + AdamW), last-position forward | {fast * 1e3:.1f} ms | |
| same, full `HookedTransformer` forward | {full * 1e3:.1f} ms ({full / fast:.2f}x slower) | |
| modadd default: seeds reaching 99 % test accuracy within the run | {len(reached)} of {len(groks)} | all: {verdict(len(reached) == len(groks), busy)} |
| modadd default: median seconds to 99 % test accuracy | {median:.1f} s | <= 60 s: {verdict(median <= 60, busy)} |
| modadd default: slowest seed | {slowest:.1f} s | <= 120 s: {verdict(slowest <= 120, busy)} |
| modadd default: test 99 % >= 2x train 99 % (grokking, not plain learning), {seeds_label(g['seed'] for g in groks)} | {'yes' if grokking else 'no'} | {verdict(grokking, False)} |
| modadd default: three phases located (`circuits.grokking_phases`), {seeds_label(g['seed'] for g in groks)} | {'yes' if phased else 'no'} | {verdict(phased, False)} |
| modadd default: largest late rise of the test loss (after test 99 %, above its lowest since), {seeds_label(g['seed'] for g in groks)} | {max(g['late_rise'] for g in groks):.3f} nats | <= {LATE_RISE}: {verdict(steady, False)} |
| canonical recipe (`nanda2023`): full-forward epoch x ~{PAPER_EPOCHS:,} epochs to 99 % test | {canonical:.0f} s ({canonical / median:.0f}x the default's median) | |
| induction default: best layer-1 prefix matching >= 0.8 and second-copy loss <= 1 nat at L = {', '.join(map(str, REPEATS))}, {seeds_label(r['seed'] for r in inductions)} | {'yes' if copies else 'no'} | {verdict(copies, False)} |
| induction default: best prefix matching < 0.3 at the first checkpoint, {seeds_label(r['seed'] for r in inductions)} | {'yes' if starts_low else 'no'} | {verdict(starts_low, False)} |
| induction default: slowest whole run | {ind_slowest:.1f} s | <= 60 s: {verdict(ind_slowest <= 60, busy)} |

Modular addition, default preset, per seed (epochs; the phases from the progress measures of the
run's checkpoints, `-` where not located):

{grok_table(groks)}

Induction, default preset, per seed: best layer-1 prefix-matching score / mean loss (nats) on the
second copy (`circuits.repeated_token_loss`) of 64 `[BOS, r, r]` probes with repeats of L tokens,
at the last checkpoint; "first checkpoint" is the best layer-1 prefix matching at step 0.

{induction_table(inductions)}
"""
    print(text)
    if not args.no_write:
        write_section("training", text)
    text_section(args.text_seeds, not args.no_write, args.keep)


if __name__ == "__main__":
    main()
