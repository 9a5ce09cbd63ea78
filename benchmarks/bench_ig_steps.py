"""How `eap-ig`'s agreement with `exact` depends on its number of steps; writes the `ig-steps` section.

    python benchmarks/bench_ig_steps.py [--seeds 3] [--no-write]

Issue 33 asks `eap-ig` to reach a Spearman rank correlation of 0.9 with `exact` over all edges of
the trained induction model. This measures it against the number of interpolation points, on the
inputs of `benchmarks/bench_circuits.py` (default induction runs of seeds 0..N-1, trained here on
one thread; 16 sequences `[BOS, r, r]`, the second or the first copy re-drawn; metric: loss on the
second copy). One step is `eap` (the gradient at the clean run). At the issue's 5 steps the
agreement is also split by the size of the edges (the edges whose |exact| is at least 1 % of the
largest, and the rest) and the share of edges whose sign agrees. For comparison, the other
integrated-gradients variant of Hanna et al.'s code, over the nodes' *activations* (each source
layer's output interpolated in turn, the gradients at every input averaged over all those runs),
written here from hooks; and both methods on the model cast to float64. Measures only, no target.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_circuits import CORRUPTIONS, induction_inputs, train  # noqa: E402
from common import load_average, load_note, machine, markdown_table, minutes, seeds_label, write_section  # noqa: E402

from circuits import edge_attribution  # noqa: E402
from circuits._checks import unpadded  # noqa: E402
from circuits._edge_graph import build_graph, input_slots, run_sources, split_inputs  # noqa: E402
from interp import load_model  # noqa: E402

STEPS = (1, 2, 3, 5, 10, 20)
ISSUE_STEPS = 5  # the issue's eap-ig: where the agreement is split by the size of the edges
LARGE = 0.01  # a large edge: |exact| at least this share of the largest
EXACT64 = "float64: `exact` with float32 `exact`"


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.rank().corr(b.rank()))


def ig_over_activations(model, clean: torch.Tensor, corrupted: torch.Tensor, metric, steps: int) -> pd.Series:
    """Edge scores of integrated gradients over the sources' activations: for each source layer
    (the embedding, each layer's heads, each MLP) and ``k = 1..steps``, a clean run whose that
    layer's output is ``corrupted + k/steps (clean - corrupted)``; every input's gradient averaged
    over all these runs, dotted with each upstream source's difference (as ``eap`` does)."""
    graph = build_graph(model)
    deltas = run_sources(model, graph, corrupted, logits=False)[1] - run_sources(model, graph, clean)[1]
    slots = input_slots(graph)
    names = list(slots)
    layers = ["blocks.0.hook_resid_pre", *(f"blocks.{layer}.attn.hook_z" for layer in range(graph.n_layers)),
              *(f"blocks.{layer}.hook_mlp_out" for layer in range(graph.n_layers) if graph.has_mlp)]
    with split_inputs(model):
        ours, theirs = (model.run_with_cache(tokens, names_filter=lambda n: n in layers,
                                             attention_mask=unpadded(tokens))[1] for tokens in (clean, corrupted))
        total = {n: torch.zeros(()) for n in names}
        for layer in layers:
            for k in range(1, steps + 1):
                held = {}

                def interpolate(out, hook, layer=layer, alpha=k / steps):
                    return (theirs[layer] + alpha * (ours[layer] - theirs[layer])).requires_grad_(True)

                def hold(x, hook):
                    held[hook.name] = x

                with torch.enable_grad():
                    logits = model.run_with_hooks(clean, fwd_hooks=[(layer, interpolate), *((n, hold) for n in names)],
                                                  attention_mask=unpadded(clean))
                    grads = torch.autograd.grad(metric(logits), [held[n] for n in names], allow_unused=True)
                for n, grad in zip(names, grads):
                    if grad is not None:  # None: this input is upstream of the interpolated layer
                        total[n] = total[n] + grad
    runs = len(layers) * steps
    table = torch.zeros(len(graph.sources), len(graph.inputs), dtype=torch.float64)
    for n in names:
        for i, head in slots[n]:
            grad = (total[n] if head < 0 or total[n].dim() == 0 else total[n][:, :, head]) / runs
            table[:, i] = (deltas * grad).flatten(1).sum(1).double()
    s_idx, i_idx = graph.edge_index()
    return pd.Series(table[s_idx, i_idx].numpy())


def rows_for(name: str, model) -> list[dict]:
    rows = []
    wide = copy.deepcopy(model).to(torch.float64)  # rules rounding in or out as the cause
    for redraw in CORRUPTIONS:
        clean, corrupted, loss = induction_inputs(int(model.cfg.d_vocab), redraw)
        exact = edge_attribution(model, clean, corrupted, loss, "exact").score
        row, split = {"model": name, "corrupted": f"{redraw} copy"}, {}
        for steps in STEPS:
            scores = edge_attribution(model, clean, corrupted, loss, "eap-ig", ig_steps=steps).score
            row[f"{steps} step" + ("s" if steps > 1 else "")] = round(spearman(exact, scores), 3)
            if steps == ISSUE_STEPS:
                large = exact.abs() >= LARGE * exact.abs().max()
                split["large edges (count)"] = f"{spearman(exact[large], scores[large]):.3f} ({int(large.sum())})"
                split["small edges"] = round(spearman(exact[~large], scores[~large]), 3)
                split["same sign"] = f"{100 * (exact.gt(0) == scores.gt(0)).mean():.0f} %"
        row.update(split)
        exact64 = edge_attribution(wide, clean, corrupted, loss, "exact").score
        row[EXACT64] = round(spearman(exact, exact64), 4)
        row[f"float64: {ISSUE_STEPS} steps"] = round(spearman(exact64, edge_attribution(
            wide, clean, corrupted, loss, "eap-ig", ig_steps=ISSUE_STEPS).score), 3)
        activations = ig_over_activations(model, clean, corrupted, loss, ISSUE_STEPS)
        row[f"over activations ({ISSUE_STEPS} steps)"] = round(spearman(exact, activations), 3)
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="induction default runs with seeds 0..N-1 (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before, start = load_average(), time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            model = load_model(train("induction", Path(tmp) / f"induction{seed}", seed))
            rows += rows_for(f"induction default, seed {seed}", model)
    table = pd.DataFrame(rows)
    best = table[[str(s) + (" step" if s == 1 else " steps") for s in STEPS]].max(axis=1)
    over = table[f"over activations ({ISSUE_STEPS} steps)"]
    wide, five = table[f"float64: {ISSUE_STEPS} steps"], table[f"{ISSUE_STEPS} steps"]
    text = f"""## `eap-ig` against its number of steps (`python benchmarks/bench_ig_steps.py`)

{machine()}. {load_note(before, load_average())} One process, {minutes(time.perf_counter() - start)} in all.
Measures only, no target.

Spearman rank correlation with `exact` over the 81 edges of the default induction runs
({seeds_label(range(args.seeds))}), on the inputs of "Circuits on the toolkit's runs" (16 sequences `[BOS, r, r]`,
the second or the first copy re-drawn, loss on the second copy), for `eap-ig` with 1 to {STEPS[-1]}
interpolation points (1 is `eap`). Best over the step counts: {best.min():.3f} to {best.max():.3f};
the issue's target, 0.9, is reached in {int((best >= 0.9).sum())} of {len(best)} rows. Where the
{ISSUE_STEPS}-step ranks part from `exact`: `large edges` is the Spearman correlation over the edges
whose |`exact`| is at least {100 * LARGE:g} % of the largest (their count in brackets), `small edges` over the
rest, `same sign` the share of all edges whose {ISSUE_STEPS}-step score has the sign of `exact`'s.
`over activations`: the other variant of integrated gradients in Hanna et al.'s code, over the
sources' activations instead of the input (each source layer's output interpolated in turn between
the corrupted and the clean run, {ISSUE_STEPS} points each; every input's gradient averaged over
those runs; `benchmarks/bench_ig_steps.py::ig_over_activations`): {over.min():.3f} to {over.max():.3f},
the target reached in {int((over >= 0.9).sum())} of {len(over)} rows.
`float64`: the same model in float64, to rule the rounding of either method in or out as the cause:
the Spearman correlation of float64 `exact` with the float32 `exact` above (at least
{table[EXACT64].min():.4f}), and of {ISSUE_STEPS}-step `eap-ig` with `exact`, both in float64
({wide.min():.3f} to {wide.max():.3f}, against {five.min():.3f} to {five.max():.3f} in float32).

{markdown_table(table)}
"""
    print(text)
    if not args.no_write:
        write_section("ig-steps", text)


if __name__ == "__main__":
    main()
