"""Circuits found by edge attribution on the toolkit's runs; write the `circuits` section of BENCHMARKS.md.

    python benchmarks/bench_circuits.py [--seeds 3] [--composition RUN] [--no-write]

Induction (issue 33, item 4): the default induction run, seeds 0..N-1 (each trained here by
``interp train induction --seed S``, about 20 s), and the published two-layer attention-only
model ``../shared/data/nanda_induction_2l_attn_only.pth`` (skipped, with a printed line, when
absent). 16 sequences ``[BOS, r, r]`` (r: 31 ids drawn from 1..d_vocab-1, seed 0); two corruptions:
the *second* copy re-drawn (the issue's) and the *first* copy re-drawn. Metric: mean loss of the
clean tokens of the second copy that induction can predict (its tokens 2..31, read at the
positions before them). For each method (``exact``, ``eap``, ``eap-ig`` with 5 steps): the
faithfulness (``circuits.faithfulness_curve``) of the top-k edges by |score| for every k, the
smallest k with faithfulness >= 0.9, its edges less those on no path from ``embed`` to ``logits``
(``circuits.prune_circuit``, the same faithfulness), how many of its edges can each be left out alone
with the faithfulness still >= 0.9, and whether that circuit holds a K-composition edge
``L0Hi -> L1Hj.k`` from a head flagged ``is_previous_token`` into one flagged ``is_induction``
(``circuits.induction_heads``, default thresholds), with the rank of the best such edge.

Composition (Wang et al. 2024): the final checkpoint of a composition ``default`` run (trained
here unless ``--composition RUN`` names one), on the 256 ID test queries of the reasoning
detector's causal trace (``interp.detectors.reasoning.measures.trace_inputs``: the head entity
replaced, so the bridge entity changes). Metric: mean loss of the clean answer at the last
position. Edge scores by ``exact`` and ``eap-ig``; the share of |score| per layer of the edges'
sources and targets, the smallest circuit with faithfulness >= 0.9 and its layers; beside them,
on the same queries, the logit lens of the bridge entity at ``r1`` (``circuits.logit_lens``) and
the causal trace of the answer's rank (``circuits.causal_trace``). Measures only; no target.
Training the composition run is most of the script's time; ``--composition RUN`` reuses a finished
``default`` run (the section then says so). Training runs on one intra-op thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)

from circuits import (causal_trace, circuit_faithfulness, edge_attribution, faithfulness_curve,  # noqa: E402
                      induction_heads, logit_lens, prune_circuit, top_edges)
from common import load_average, load_note, machine, markdown_table, minutes, seeds_label, write_section  # noqa: E402
from interp import load_model  # noqa: E402

PUBLISHED = ROOT.parent / "shared" / "data" / "nanda_induction_2l_attn_only.pth"
BATCH, HALF, LEVEL = 16, 31, 0.9
INDUCTION_METHODS = ("exact", "eap", "eap-ig")
CORRUPTIONS = ("second", "first")


def train(task: str, out: Path, seed: int = 0) -> Path:
    cmd = [sys.executable, "-m", "interp", "train", task, "--out-dir", str(out), "--seed", str(seed), "--quiet"]
    # one intra-op thread: two threads on a shared 2-core machine spin (a training step ran 30x slower)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return out


def edge_name(row) -> str:
    return edge_name_of((row.source, row.target, row.input))


def edge_name_of(edge: tuple[str, str, str]) -> str:
    return f"{edge[0]}->{edge[1]}" + (f".{edge[2]}" if edge[2] else "")


def smallest_circuit(model, scores: pd.DataFrame, clean, corrupted, metric) -> tuple[int | None, pd.DataFrame]:
    """The smallest k whose top-k edges reach faithfulness LEVEL (None: none does), and the curve.

    Scanned at every k up to 32, at the powers of two and all edges, then at every k between the
    last size below the level and the first size reaching it (for <= 81 edges: every k)."""
    n = len(scores)

    def curve_at(sizes):
        return faithfulness_curve(model, scores, clean, corrupted, metric, sizes=sorted(sizes))

    curve = curve_at({*range(min(n, 32) + 1), *(2 ** j for j in range(n.bit_length()) if 2 ** j <= n), n})
    hit = curve[curve.faithfulness >= LEVEL]
    if len(hit) and int(hit["size"].iloc[0]) > 32:
        below = int(curve["size"][curve["size"] < int(hit["size"].iloc[0])].iloc[-1])
        curve = pd.concat([curve, curve_at(range(below + 1, int(hit["size"].iloc[0])))]).sort_values("size")
        curve = curve.drop_duplicates("size").reset_index(drop=True)
        hit = curve[curve.faithfulness >= LEVEL]
    k = int(hit["size"].iloc[0]) if len(hit) else None
    return k, curve.set_index("size")


# ---- induction ----------------------------------------------------------------------------------

def induction_inputs(d_vocab: int, redraw: str):
    gen = torch.Generator().manual_seed(0)
    r, r2 = (torch.randint(1, d_vocab, (BATCH, HALF), generator=gen) for _ in range(2))
    bos = torch.zeros(BATCH, 1, dtype=torch.long)
    clean = torch.cat([bos, r, r], 1)
    corrupted = torch.cat([bos, r, r2], 1) if redraw == "second" else torch.cat([bos, r2, r], 1)

    def loss(logits: torch.Tensor) -> torch.Tensor:  # second-copy tokens 2..HALF, read one position before
        return -logits[:, HALF + 1:-1].log_softmax(-1).gather(-1, clean[:, HALF + 2:, None]).mean()

    return clean, corrupted, loss


def k_composition_edges(model) -> tuple[set[tuple[str, str, str]], bool, str]:
    """The flagged K-composition edges (where no pair is flagged: the edge from the layer-0 head with
    the best previous-token score into the later head with the best prefix matching), whether they
    are flagged, and the flagged heads in words."""
    heads = induction_heads(model)
    prev = [(r.layer, r.head) for r in heads.itertuples() if r.is_previous_token]
    ind = [(r.layer, r.head) for r in heads.itertuples() if r.is_induction]
    named = lambda hs: ", ".join(f"L{a}H{i}" for a, i in hs) or "none"  # noqa: E731
    edges = {(f"L{a}H{i}", f"L{b}H{j}", "k") for a, i in prev for b, j in ind if a < b}
    p = heads[heads.layer == 0].sort_values("previous_token").iloc[-1]
    q = heads[heads.layer > 0].sort_values("prefix_matching").iloc[-1]
    words = (f"previous-token {named(prev)}, induction {named(ind)} (best previous-token score "
             f"{p.previous_token:.2f}, L0H{int(p['head'])}; best prefix matching {q.prefix_matching:.2f}, "
             f"L{int(q.layer)}H{int(q['head'])})")
    if edges:
        return edges, True, words
    return {(f"L0H{int(p['head'])}", f"L{int(q.layer)}H{int(q['head'])}", "k")}, False, words


def removable(model, circuit: pd.DataFrame, clean, corrupted, metric) -> int:
    """How many of the circuit's edges can each be left out alone with faithfulness still >= LEVEL
    (0: every edge is needed, so no smaller circuit lies inside this one one edge away)."""
    edges = list(zip(circuit.source, circuit.target, circuit.input))
    return sum(circuit_faithfulness(model, edges[:i] + edges[i + 1:], clean, corrupted, metric) >= LEVEL
               for i in range(len(edges)))


def induction_rows(name: str, model) -> list[dict]:
    kcomp, is_flagged, flagged = k_composition_edges(model)
    rows = []
    for redraw in CORRUPTIONS:
        clean, corrupted, loss = induction_inputs(int(model.cfg.d_vocab), redraw)
        scores = {}
        for method in INDUCTION_METHODS:
            clock = time.perf_counter()
            scores[method] = edge_attribution(model, clean, corrupted, loss, method)
            seconds = time.perf_counter() - clock
            k, curve = smallest_circuit(model, scores[method], clean, corrupted, loss)
            ranked = top_edges(scores[method])
            keys = list(zip(ranked.source, ranked.target, ranked.input))
            ranks = [i + 1 for i, key in enumerate(keys) if key in kcomp]
            circuit = prune_circuit(ranked.iloc[:k] if k is not None else ranked)
            kept = set(zip(circuit.source, circuit.target, circuit.input))
            rows.append({"model": name, "corrupted": f"{redraw} copy", "method": method, "edges": len(scores[method]),
                         "k": k, "size": len(circuit),
                         "faith_k": float(curve.faithfulness.loc[k]) if k is not None else float("nan"),
                         "removable": removable(model, circuit, clean, corrupted, loss) if k is not None else None,
                         "kcomp_flagged": is_flagged, "kcomp": ", ".join(map(edge_name_of, sorted(kcomp))),
                         "flagged": flagged, "kcomp_in": bool(kcomp & kept),
                         "kcomp_rank": ranks[0] if ranks else None,
                         "rho": float(scores[method].score.rank().corr(scores["exact"].score.rank())),
                         "circuit": ", ".join(edge_name(r) for r in circuit.iloc[:8].itertuples())
                         + (" ..." if len(circuit) > 8 else ""), "seconds": seconds})
            print({k_: v for k_, v in rows[-1].items() if k_ not in ("circuit", "flagged")}, flush=True)
    return rows


def induction_table(rows: list[dict]) -> str:
    lines = ["| model | corrupted | method | smallest circuit >= 0.9 (of all edges) | its faithfulness | "
             "edges it can lose one at a time | flagged K-comp. edge in it | best K-comp. edge's rank | "
             "Spearman with `exact` | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size']} of {r['edges']} (top {r['k']})" if r["k"] is not None else f"none below all {r['edges']}"
        kin = ("yes" if r["kcomp_in"] else "no") + ("" if r["kcomp_flagged"] else f" (none flagged; {r['kcomp']})")
        rank = r["kcomp_rank"] if r["kcomp_rank"] is not None else "-"
        lose = "-" if r["removable"] is None else r["removable"]
        lines.append(f"| {r['model']} | {r['corrupted']} | `{r['method']}` | {size} | {r['faith_k']:.3f} | {lose} | "
                     f"{kin} | {rank} | {r['rho']:.3f} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def flagged_lines(rows: list[dict]) -> str:
    return "\n".join(f"- {m}: {f}" for m, f in dict((r["model"], r["flagged"]) for r in rows).items())


def circuit_lines(rows: list[dict]) -> str:
    return "\n".join(f"- {r['model']}, {r['corrupted']} re-drawn, `{r['method']}`: {r['circuit']}"
                     for r in rows if r["method"] in ("exact", "eap-ig"))


# ---- composition --------------------------------------------------------------------------------

def layer_of(node: str) -> str:
    if node in ("embed", "logits"):
        return node
    return f"layer {node[1:].split('H')[0]}" if node.startswith("L") else f"layer {node[3:]}"


def composition_figures(run: Path) -> dict:
    from interp.detectors.reasoning.context import run_context
    from interp.detectors.reasoning.measures import trace_inputs
    from interp.runs.record import read_run

    model, context = load_model(run), run_context(run)
    tokens, corrupted, answer = trace_inputs(context, "id")
    lookup = {tuple(t.tolist()): int(b) for t, b in zip(context.split("id").tokens, context.bridge["id"])}
    bridge = torch.tensor([lookup[tuple(t.tolist())] for t in tokens])
    data = read_run(run).rebuild_task().data
    E = data.n_entities
    table = torch.full((E, data.n_relations), -1, dtype=torch.long)
    table[data.atomic[:, 0], data.atomic[:, 1] - E] = data.atomic[:, 2]
    changed = float((table[corrupted[:, 0], corrupted[:, 1] - E] != bridge).double().mean())

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return -logits[:, -1].log_softmax(-1).gather(-1, answer[:, None]).mean()

    out = {"queries": len(tokens), "bridge_changed": changed, "methods": {}}
    for method in ("exact", "eap-ig"):
        clock = time.perf_counter()
        scores = edge_attribution(model, tokens, corrupted, loss, method)
        seconds = time.perf_counter() - clock
        k, curve = smallest_circuit(model, scores, tokens, corrupted, loss)
        weight = scores.score.abs()
        by_source = weight.groupby(scores.source.map(layer_of)).sum() / weight.sum()
        by_target = weight.groupby(scores.target.map(layer_of)).sum() / weight.sum()
        circuit = prune_circuit(top_edges(scores, k=k))
        out["methods"][method] = {"k": k, "size": len(circuit), "edges": len(scores), "seconds": seconds,
                                  "faith_k": float(curve.faithfulness.loc[k]) if k is not None else float("nan"),
                                  "by_source": by_source, "by_target": by_target,
                                  "circuit": ", ".join(f"{edge_name(r)} ({r.score:+.2f})"
                                                       for r in circuit.iloc[:12].itertuples())
                                  + (" ..." if len(circuit) > 12 else ""),
                                  "layers": sorted({layer_of(n) for n in [*circuit.source, *circuit.target]})}
        print(method, {k_: v for k_, v in out["methods"][method].items() if k_ not in ("by_source", "by_target")},
              flush=True)
    out["lens"] = logit_lens(model, tokens, bridge, positions=[1]).mean_reciprocal_rank()[:, 0].tolist()
    trace = causal_trace(model, tokens, corrupted, answer, read_position=2, metric="rank")
    out["trace"] = trace.mean_change().tolist()
    out["clean_rank"], out["corrupted_rank"] = float(trace.clean.mean()), float(trace.corrupted.mean())
    out["accuracy"] = pd.read_csv(run / "metrics.csv").iloc[-1][["step", "train_acc", "test_id_acc", "test_ood_acc"]]
    return out


def composition_text(c: dict, trained_here: bool, train_seconds: float | None) -> str:
    acc = c["accuracy"]
    origin = (f"trained here (`interp train composition`, seed 0, {minutes(train_seconds)})" if trained_here
              else "passed with `--composition` (a `interp train composition` default run, seed 0)")
    layers = ["embed", *[f"layer {l}" for l in range(len(c["lens"]) - 1)], "logits"]
    shares = pd.DataFrame({"layer": layers, **{f"`{m}` out of": [float(v["by_source"].get(x, 0.0)) for x in layers]
                                                for m, v in c["methods"].items()},
                           **{f"`{m}` into": [float(v["by_target"].get(x, 0.0)) for x in layers]
                              for m, v in c["methods"].items()}})
    circuits = "\n".join(f"- `{m}`: " + (f"{v['size']} of {v['edges']} edges (top {v['k']}) " if v["k"] is not None
                                          else f"none below all {v['edges']} edges ")
                         + f"(faithfulness {v['faith_k']:.3f}; {v['seconds']:.1f} s to score), nodes in "
                         f"{', '.join(v['layers'])}: {v['circuit']}" for m, v in c["methods"].items())
    states = pd.DataFrame({"state": list(range(len(c["lens"]))), "bridge at r1, reciprocal rank": c["lens"],
                           **{f"trace at {p}": [row[i] for row in c["trace"]]
                              for i, p in enumerate(("h", "r1", "r2"))}})
    return f"""### Composition (Wang et al. 2024), ID queries

The run: {origin}; final evaluation at step {int(acc.step):,}: train {acc.train_acc:.3f}, ID test
{acc.test_id_acc:.3f}, OOD test {acc.test_ood_acc:.3f}. {c['queries']} ID test queries `h r1 r2`, the
head entity `h` replaced (`trace_inputs`): the bridge entity differs on {c['bridge_changed']:.1%} of them.
Metric: mean loss of the clean answer at `r2`. Share of all |score| on edges out of (sources) and into
(targets) each layer's nodes ("layer l": its heads and MLP):

{markdown_table(shares)}

Smallest circuit (top-k edges by |score|, less those on no path from `embed` to `logits`) with faithfulness
>= {LEVEL}, edges with their scores (loss, nats):

{circuits}

Same queries: logit lens of the bridge entity at `r1` (mean reciprocal rank) and the causal trace of
the answer (mean rise of its rank when one residual state of the clean run is taken from the corrupted
query; clean mean rank {c['clean_rank']:.2f}, corrupted {c['corrupted_rank']:.1f}); state l is the residual
before block l, the last after the last block:

{markdown_table(states)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="induction default runs with seeds 0..N-1 (default 3)")
    parser.add_argument("--composition", type=Path, default=None, help="a composition default run (default: train one)")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before, start = load_average(), time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            rows += induction_rows(f"induction default, seed {seed}",
                                   load_model(train("induction", Path(tmp) / f"induction{seed}", seed)))
        if PUBLISHED.exists():
            rows += induction_rows("published (Nanda)", load_model(PUBLISHED))
            published = "the published model"
        else:
            print(f"skipped: {PUBLISHED} is absent")
            published = f"not measured ({PUBLISHED.name} absent)"
        clock = time.perf_counter()
        run = args.composition or train("composition", Path(tmp) / "composition")
        composition = composition_figures(run)
        trained = None if args.composition else time.perf_counter() - clock
    after = load_average()
    text = f"""## Circuits on the toolkit's runs (`python benchmarks/bench_circuits.py`)

{machine()}. {load_note(before, after)} One process, {minutes(time.perf_counter() - start)} in all.
Measures only, no target (issue 33, item 4).

### Induction: default runs ({seeds_label(range(args.seeds))}), {published}

{BATCH} sequences `[BOS, r, r]` of {2 * HALF + 1} positions; corrupted: the second or the first copy
re-drawn; metric: mean loss of the second copy's tokens 2..{HALF}. "Smallest circuit": the smallest k
whose top-k edges by |score| (that method's) have faithfulness >= {LEVEL} (`circuits.faithfulness_curve`
at every k, edges 81), less its edges on no path from `embed` to `logits` (`circuits.prune_circuit`: the
same faithfulness); the cell gives the edges left and k. "Edges it can lose one at a time": how many of
that circuit's edges can each be left out alone with faithfulness still >= {LEVEL} (0: no circuit one
edge smaller inside it reaches the level, so its size is the model's, not the ranking's).
"Flagged K-comp. edge": an edge `L0Hi -> L1Hj.k` with `L0Hi` flagged `is_previous_token`
and `L1Hj` flagged `is_induction` by `circuits.induction_heads` (default thresholds); its rank is
that of the best such edge by |score|; where no pair is flagged, the edge from the layer-0 head with the
best previous-token score into the head with the best prefix matching stands in (named in the cell).
`eap-ig`: 5 steps. Flagged heads:

{flagged_lines(rows)}

{induction_table(rows)}

Circuits (first 8 edges by |score|):

{circuit_lines(rows)}

{composition_text(composition, trained is not None, trained)}"""
    print(text)
    if not args.no_write:
        write_section("circuits", text)


if __name__ == "__main__":
    main()
