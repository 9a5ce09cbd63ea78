"""The modadd default recipe's late loss spike against AdamW's epsilon; writes the `slingshot` section.

    python benchmarks/bench_slingshot.py [--seeds 0 1 2 3] [--eps 1e-8 1e-5] [--no-write]

Issue 31: after the default recipe grokked, the losses of some seeds jumped (test loss from
~0.003 to ~1) as the rising weight decay grew large, then only partly recovered. That is the
slingshot of Thilak et al. 2022 (an adaptive optimiser's late spikes once the gradients are
tiny), which a larger epsilon damps. Each seed is trained with the `default` preset at each
epsilon (one intra-op thread, two runs at a time); per run: the epochs of 99 % train and test
accuracy, the *late rise* (the largest rise of the test loss above its lowest value since test
99 %, the measure of `bench_training.py`), the largest test loss after test 99 % and the final
test loss. Scores, not times: the load does not change them (the thread count can, see "Grokking
phases across seeds and thread counts").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_training import LATE_RISE, late_rise  # noqa: E402
from common import load_average, load_note, machine, markdown_table, minutes, seeds_label, write_section  # noqa: E402


def one_run(seed: int, eps: float, out: str) -> dict:
    import torch

    from interp import preset, train
    from interp.runs.record import read_metrics

    torch.set_num_threads(1)
    train(dataclasses.replace(preset("modadd", seed=seed), adam_eps=eps), out, quiet=True)
    m = pd.DataFrame(read_metrics(out))
    train99 = m.step[m.train_acc >= 0.99].min()
    test99 = m.step[m.test_acc >= 0.99].min()
    after = m.test_loss[m.step >= test99] if test99 == test99 else m.test_loss.iloc[:0]
    rise = late_rise(after)
    return {"seed": seed, "adam_eps": f"{eps:g}", "train 99 %": train99, "test 99 %": test99,
            "late rise": round(rise, 3), "max test loss after test 99 %": round(float(after.max()), 3),
            "final test loss": round(float(m.test_loss.iloc[-1]), 4), "final test acc": round(float(m.test_acc.iloc[-1]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-8, 1e-5])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    before, start = load_average(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(one_run, seed, eps, f"{tmp}/s{seed}e{eps:g}") for eps in args.eps for seed in args.seeds]
        rows = [job.result() for job in jobs]
    table = pd.DataFrame(rows)
    verdicts = "; ".join(
        f"epsilon {eps}: late rise <= {LATE_RISE} on {int((g['late rise'] <= LATE_RISE).sum())} of {len(g)} seeds"
        f" (largest {g['late rise'].max():.3f})" for eps, g in table.groupby("adam_eps", sort=False))
    text = f"""## The late spike and AdamW's epsilon (`python benchmarks/bench_slingshot.py`)

{machine()}. {load_note(before, load_average())} {minutes(time.perf_counter() - start)} in all,
two one-thread runs at a time. Scores, not times.

The modadd `default` preset ({seeds_label(args.seeds)}) at each `adam_eps`; everything else as
the preset. "Late rise": the largest rise of the test loss above its lowest value since 99 %
test accuracy (`bench_training.py`'s measure of a late spike, target <= {LATE_RISE} nats). {verdicts}.

{markdown_table(table)}
"""
    print(text)
    if not args.no_write:
        write_section("slingshot", text)


if __name__ == "__main__":
    main()
