"""Time the ``circuit`` detector against the ``heads`` detector, and read its rows over training on
several seeds; write the `circuit-detector` section of BENCHMARKS.md.

    python benchmarks/bench_circuit_detector.py [--run DIR] [--seeds 6] [--repeats 3] [--no-write]

Cost, on the default induction run of seed 0 (``interp train induction``, trained into a temporary
folder unless ``--run`` names a finished one), one process, one thread, the model already loaded:

- per checkpoint: ``heads`` (its ``score``, the probe prepared once) and ``circuit`` (its
  ``score``: ``eap-ig`` with 5 steps over every edge, then ``circuits.circuit_metrics``: a clean, a
  corrupted and one patched forward), on the final checkpoint and on step 0 (the cost does not
  depend on the weights);
- once per run: ``circuit``'s ``applies`` (two forwards) and ``prepare`` (the circuit search: every
  edge scored, the faithfulness of every top-k circuit); ``heads``' ``prepare`` (the probe).

Best of ``--repeats`` rounds, the functions interleaved within a round. The load average is
recorded; figures taken with a 1-minute load above half the cores are marked busy.

Over training, on the default runs of seeds 0..N-1 (``--seeds``; seed 0 is the run above, the others
trained here): every checkpoint scored with ``heads`` and ``circuit``. At the checkpoints whose
corrupted loss exceeds the clean one by less than ``MIN_GAP`` (the faithfulness row is NaN there):
their largest gap, the range of the ratio ``(circuit - corrupted) / (clean - corrupted)`` the
faithfulness would have been, and the largest ``|circuit_loss - corrupted_loss|``; then the first
faithfulness defined, the final one and the phase change located on the ``heads`` rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)

import pandas as pd  # noqa: E402

from interp import (best_head_curve, circuit_rows, list_checkpoints, load_model, locate_phase_change,  # noqa: E402
                    preset, score_checkpoints, train)
from interp.detectors.circuit.search import MIN_GAP  # noqa: E402
from interp.detectors.registry import DETECTORS  # noqa: E402
from common import is_busy, load_average, load_note, machine, markdown_table, rounds_of_each, seeds_label, \
    write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished default induction run (else one is trained)")
    parser.add_argument("--seeds", type=int, default=6, help="default induction runs read over training (seeds 0..N-1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load_average()
    folder = Path(tempfile.mkdtemp())
    run = args.run
    if run is None:
        run = folder / "induction"
        train(preset("induction"), run, quiet=True)
    checkpoints = list_checkpoints(run)
    first, final = load_model(checkpoints[0][1]), load_model(run)
    heads, circuit = DETECTORS["heads"], DETECTORS["circuit"]
    probe = heads.prepare(final, run)
    context = circuit.prepare(final, run)
    fns = {"heads score": lambda: heads.score(final, probe),
           "circuit score (final)": lambda: circuit.score(final, context),
           "circuit score (step 0)": lambda: circuit.score(first, context),
           "circuit applies": lambda: circuit.applies(final),
           "circuit prepare": lambda: circuit.prepare(final, run),
           "heads prepare": lambda: heads.prepare(final, run)}
    seconds = {name: min(times) for name, times in rounds_of_each(fns, args.repeats).items()}
    after = load_average()
    runs = [run] + [folder / f"induction-{seed}" for seed in range(1, args.seeds)]
    for seed, path in enumerate(runs[1:], 1):
        train(preset("induction", seed=seed), path, quiet=True)
    over = pd.DataFrame([over_training(seed, path) for seed, path in enumerate(runs)])
    per_run = seconds["circuit applies"] + seconds["circuit prepare"]
    n = len(checkpoints)
    ratio = seconds["circuit score (final)"] / seconds["heads score"]
    lines = ["| what | when | time |", "|---|---|---|"]
    lines += [f"| {name} | {'once per run' if 'prepare' in name or 'applies' in name else 'per checkpoint'} | "
              f"{1e3 * s:.0f} ms |" for name, s in seconds.items()]
    busy = " Taken on a busy machine: an idle one is faster." if is_busy(before) else ""
    text = f"""## Circuit detector (`python benchmarks/bench_circuit_detector.py`)

{machine()}. {load_note(before, after)} One process, one thread, the model loaded; best of {args.repeats}
rounds. The default induction run: {n} checkpoints; the circuit has {len(context.edges)} of the
graph's {_edge_count(final)} edges. `circuit score`: `eap-ig` (5 steps) over every edge, then a
clean, a corrupted and one patched forward (`circuits.circuit_metrics`), on {context.clean.shape[0]} sequences of {context.clean.shape[1]} tokens;
`circuit prepare`: the circuit search on the final checkpoint (every edge scored, the faithfulness
of every top-k circuit).{busy}

{chr(10).join(lines)}

Per checkpoint `circuit` costs {ratio:.1f}x `heads`; once per run it adds {per_run:.1f} s, so scoring
this run with `circuit` adds about {per_run + n * seconds['circuit score (final)']:.0f} s to the checkpoints' loading and
`heads` scores. It is opt-in (`catalog.OPT_IN`): it applies to induction runs only, and its search
costs more than a checkpoint's `heads` scores.

**Over training** ({seeds_label(range(args.seeds))} of the default induction run; scores, not times). "below
the gap": the checkpoints whose corrupted loss exceeds the clean one by less than {MIN_GAP:g} nats
(`MIN_GAP`), where the `faithfulness` row is NaN; "ratio there": what it would have been, `(circuit_loss -
corrupted_loss) / (clean_loss - corrupted_loss)`, from the rows' losses; "circuit - corrupted": the largest
`|circuit_loss - corrupted_loss|` there (nats); then the first faithfulness defined, the last, and the
phase change located on the `heads` rows (`interp.locate_phase_change`).

{markdown_table(over)}
"""
    print(text)
    if not args.no_write:
        write_section("circuit-detector", text)


def over_training(seed: int, run: Path) -> dict:
    """One run's ``circuit`` rows over training, as the section's table reads them."""
    table = score_checkpoints([run], detectors=("heads", "circuit"), quiet=True)
    curves, _ = circuit_rows(table)
    heads = best_head_curve(table)
    change = locate_phase_change(heads["step"], heads["score"])
    gap = curves["corrupted_loss"] - curves["clean_loss"]
    below = curves[gap < MIN_GAP]
    ratio = (below["circuit_loss"] - below["corrupted_loss"]) / (below["clean_loss"] - below["corrupted_loss"])
    defined = curves.dropna(subset=["faithfulness"])
    if below.empty:
        where = {"below the gap": "none", "ratio there": "", "circuit - corrupted": float("nan")}
    else:
        where = {"below the gap": f"{len(below)} (steps {below['step'].min()}-{below['step'].max()}; "
                                  f"gap <= {gap[below.index].max():.3f})",
                 "ratio there": f"{ratio.min():.2f} to {ratio.max():.2f}",
                 "circuit - corrupted": float((below["circuit_loss"] - below["corrupted_loss"]).abs().max())}
    return {"seed": seed, "checkpoints": len(curves), **where,
            "first faithfulness": f"{defined['faithfulness'].iloc[0]:.3f} (step {defined['step'].iloc[0]})",
            "last faithfulness": f"{curves['faithfulness'].iloc[-1]:.3f} (step {curves['step'].iloc[-1]})",
            "phase change": f"step {change.step}"}


def _edge_count(model) -> int:
    from circuits import edge_attribution, induction_contrast

    clean, corrupted, metric = induction_contrast(model, 2)
    return len(edge_attribution(model, clean, corrupted, metric, "eap"))


if __name__ == "__main__":
    main()
