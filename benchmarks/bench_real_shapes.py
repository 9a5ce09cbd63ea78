"""Time and measure circuits.induction_heads on real language-model shapes; write the `real-shapes` section.

    python benchmarks/bench_real_shapes.py [--repeats 3] [--no-write] [--shapes gpt2-small,pythia-160m]

Shapes (random weights, TransformerLens's default init, seed 0): GPT-2 small (12 layers,
d_model 768, 12 heads x 64, d_mlp 3072, d_vocab 50257, learned positions, LayerNorm, gelu_new)
and Pythia-160m (the same widths, d_vocab 50304, rotary positions on 16 dims, parallel attention
and MLP, gelu). Probe: ``circuits.repeated_tokens(model, n_seqs=16, half_len=50)``, 16 sequences
of 101 tokens.

Per shape, each measurement in a fresh subprocess (same model, same probe):

- time: ``--repeats`` rounds after one warm-up, interleaved within a round: one bare forward
  ``model(tokens)`` (logits included), ``induction_heads(model, tokens)``, and two parts of it for
  the breakdown (``previous_token_scores``: the pattern-only pass; ``ov_copying_scores``: weights
  only). The ratio is the median over rounds of ``induction_heads / forward`` within a round.
- peak memory: one process for the forward, one for ``induction_heads``. After the model is built
  and a 3-token warm-up forward has loaded the kernels, the kernel's peak-RSS mark is reset
  (``/proc/self/clear_refs`` = 5) and the RSS read as the baseline; the call runs once; its peak
  is ``VmHWM - baseline`` from ``/proc/self/status`` (where clear_refs is refused, the
  ``getrusage`` max RSS minus the RSS after the build, which can only understate it).
- agreement: the largest absolute difference of every score column between the default call and
  the hooked path (``circuits._fused.hooked_only``); and the largest relative difference of the
  copying score between the default call (the denominator's part outside each sequence estimated
  from a fixed sample of the vocabulary, ``docs/scores.md``, "Copying on large vocabularies") and
  the whole vocabulary read exactly (``vocab_sample=None``).

Targets: ``induction_heads`` at most 1.5x one forward (goal 1.1x); peak memory at most 2x the
forward's; differences from the hooked path at most 1e-4; the sampled copying score within 2 % of
the exact one (the tolerance of ``tests/test_copying.py``; the flags compare copying with twice its
chance level, so an error of 2 % moves only a head within 2 % of that threshold). The section also states the multiply-adds each call needs
(arithmetic from the shapes). Load averages are recorded before and after; a 1-minute load before
the run above half the cores marks the figures as taken on a busy machine (no target marked met).
Exit status 1 if a target is missed or could not be judged.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where ``circuits`` is imported from: this tree, or (``--before DIR``, in a child) an earlier one.
CODE = Path(os.environ.get("BENCH_CODE_ROOT", ROOT))
sys.path.insert(0, str(CODE))
sys.path.insert(0, str(ROOT / "benchmarks"))
warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)

from common import is_busy, load_average, load_note, machine, rounds_of_each, verdict, write_section  # noqa: E402

SHAPES = {
    "gpt2-small": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                       act_fn="gelu_new", normalization_type="LN"),
    "pythia-160m": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50304, n_ctx=2048,
                        act_fn="gelu", normalization_type="LN", positional_embedding_type="rotary", rotary_dim=16,
                        parallel_attn_mlp=True),
}
N_SEQS, HALF_LEN = 16, 50
RATIO_TARGET, MEMORY_TARGET, DIFF_TARGET, SAMPLE_TARGET = 1.5, 2.0, 1e-4, 0.02
COLUMNS = ("previous_token", "prefix_matching", "copying", "ov_copying")


def _build(shape: str):
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from circuits import repeated_tokens

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**SHAPES[shape])).eval()
    return model, repeated_tokens(model, n_seqs=N_SEQS, half_len=HALF_LEN)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(shape: str, what: str, repeats: int) -> dict:
    """One measurement in this (fresh) process; returns what the parent records."""
    import torch

    from circuits import induction_heads, ov_copying_scores, previous_token_scores
    from circuits._fused import fused_supported, hooked_only
    from circuits.copying import DEFAULT_VOCAB_SAMPLE, LayerLogitMaps

    model, tokens = _build(shape)
    torch.set_grad_enabled(False)
    calls = {
        "forward": lambda: model(tokens),
        "induction_heads": lambda: induction_heads(model, tokens),
        "previous_token_scores": lambda: previous_token_scores(model, tokens),
        "ov_copying_scores": lambda: ov_copying_scores(model),
    }
    if what == "time-before":  # the earlier tree: forward and induction_heads only
        return {"rounds": rounds_of_each({k: calls[k] for k in ("forward", "induction_heads")}, repeats)}
    if what == "time":
        return {"fused": fused_supported(model), "rounds": rounds_of_each(calls, repeats)}
    if what.startswith("memory:"):
        model(tokens[:1, :3])  # kernels and thread pools loaded before the baseline
        try:
            Path("/proc/self/clear_refs").write_text("5")
            base, method = _status_kib("VmRSS"), "VmHWM"
        except OSError:
            base, method = _status_kib("VmRSS"), "ru_maxrss"
        calls[what.split(":", 1)[1]]()
        peak = _status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_mib": (peak - base) / 1024, "method": method}
    table = induction_heads(model, tokens)
    with hooked_only():
        hooked = induction_heads(model, tokens)
    exact = induction_heads(model, tokens, vocab_sample=None)
    flags = ("is_previous_token", "is_induction")
    return {
        "hooked": max(float((table[c] - hooked[c]).abs().max()) for c in COLUMNS),
        "exact_rel": float(((table["copying"] - exact["copying"]).abs() / exact["copying"].abs()).max()),
        "flags_equal": all(bool((table[f] == other[f]).all()) for f in flags for other in (hooked, exact)),
        "max_copying": float(table["copying"].max()),
        "sample": DEFAULT_VOCAB_SAMPLE if LayerLogitMaps(model).sample is not None else None,
    }


def _run_child(shape: str, what: str, repeats: int, code: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "BENCH_CODE_ROOT": str(code)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, "--shapes", shape, "--repeats", str(repeats)],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def multiply_adds(shape: str, sample: int | None) -> dict[str, float]:
    """Multiply-adds from the shapes: the forward's weight products, and those of the copying score
    (per layer, the ``W_O W_U`` columns of every head, then each second-half query's logits over the
    vocabulary ids read: all of them, or ``sample`` of them plus the Gram matrix ``W_U W_U^T``)
    and of OV copying (``W_U W_E``)."""
    s = SHAPES[shape]
    d, v, hd = s["d_model"], s["d_vocab"], s["n_heads"] * s["d_head"]
    tokens, rows = N_SEQS * (2 * HALF_LEN + 1), N_SEQS * HALF_LEN
    forward = tokens * (s["n_layers"] * (3 * d * hd + hd * d + 2 * d * s["d_mlp"]) + d * v)
    read = v if sample is None else sample
    copying = s["n_layers"] * (hd * d * read + rows * hd * read) + (0 if sample is None else d * d * v)
    return {"forward": forward, "copying": copying, "ov": d * d * v}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--before", type=Path, default=None,
                        help="a tree holding the earlier circuits/ (e.g. from git archive), timed and measured too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if args.child:
        print(json.dumps(child(shapes[0], args.child, args.repeats)))
        return 0
    before = load_average()
    results = {}
    for shape in shapes:
        results[shape] = {what: _run_child(shape, what, args.repeats)
                          for what in ("time", "memory:forward", "memory:induction_heads", "diff")}
        if args.before is not None:
            results[shape]["before"] = _run_child(shape, "time-before", args.repeats, args.before)
            results[shape]["before_memory"] = _run_child(shape, "memory:induction_heads", 1, args.before)
        print(shape, json.dumps(results[shape]), flush=True)
    after = load_average()
    busy = is_busy(before)
    rows, before_rows, all_ok = [], [], True
    for shape, r in results.items():
        rounds = r["time"]["rounds"]
        best = {name: min(times) for name, times in rounds.items()}
        ratio = statistics.median(h / f for h, f in zip(rounds["induction_heads"], rounds["forward"]))
        mem_f, mem_h = r["memory:forward"]["peak_mib"], r["memory:induction_heads"]["peak_mib"]
        macs = multiply_adds(shape, r["diff"]["sample"])
        floor = (macs["copying"] + macs["ov"]) / macs["forward"]
        ok_t, ok_m = ratio <= RATIO_TARGET, mem_h <= MEMORY_TARGET * mem_f
        ok_d = r["diff"]["hooked"] <= DIFF_TARGET and r["diff"]["exact_rel"] <= SAMPLE_TARGET
        all_ok &= ok_t and ok_m and ok_d and r["diff"]["flags_equal"]
        path = "fused" if r["time"]["fused"] else "hooked"
        if "before" in r:
            old = r["before"]["rounds"]
            old_ratio = statistics.median(h / f for h, f in zip(old["induction_heads"], old["forward"]))
            old_mem = r["before_memory"]["peak_mib"]
            before_rows.append(f"| {shape} | {min(old['forward']):.2f} s | {min(old['induction_heads']):.2f} s | "
                               f"{old_ratio:.2f}x | {old_mem:.0f} MiB |")
        rows.append(
            f"| {shape} | {path} | {best['forward']:.2f} s | {best['induction_heads']:.2f} s | "
            f"{best['previous_token_scores']:.2f} s / {best['ov_copying_scores']:.2f} s | "
            f"**{ratio:.2f}x** ({verdict(ok_t, busy)}) | {mem_f:.0f} / {mem_h:.0f} MiB = {mem_h / mem_f:.2f}x "
            f"({verdict(ok_m, busy)}) | {r['diff']['hooked']:.1e} / {100 * r['diff']['exact_rel']:.2f} % "
            f"({verdict(ok_d and r['diff']['flags_equal'], False)}; copying scores up to {r['diff']['max_copying']:.1e}; "
            f"{'whole vocabulary' if r['diff']['sample'] is None else str(r['diff']['sample']) + ' ids sampled'}) | {macs['forward'] / 1e9:.0f} G / "
            f"{macs['copying'] / 1e9:.0f} G + {macs['ov'] / 1e9:.0f} G ({floor:.1f}x) |"
        )
    text = f"""## Head scores on real shapes (`benchmarks/bench_real_shapes.py`)

`python benchmarks/bench_real_shapes.py` -- random weights (default init, seed 0), probe
`repeated_tokens(model, n_seqs={N_SEQS}, half_len={HALF_LEN})` (16 x 101 tokens); {machine()}.
{load_note(before, after)} Times: best of {args.repeats} interleaved rounds after a warm-up, one
process per shape; the ratio is the median over rounds of `induction_heads / forward` within a round.
Peak memory: a fresh process per call; after the model is built and a 3-token forward has loaded
the kernels, the kernel's peak-RSS mark is reset (`/proc/self/clear_refs`), the call runs once, and
the peak is `VmHWM` minus the RSS before the call (method: {results[shapes[0]]['memory:forward']['method']}).
Differences: the largest absolute one over the four score columns, default call against the
hooked path (`hooked_only()`), and the largest relative one of the copying score against the whole
vocabulary read exactly (`vocab_sample=None`; the default estimates the denominator's part outside
each sequence from a fixed sample of ids, `docs/scores.md`, "Copying on large vocabularies"); the
`is_*` flags are equal in all three. Multiply-adds from the shapes: one forward / the copying score
(per layer `W_O W_U` for every head, then every second-half query's logits over the ids read, and
the Gram matrix `W_U W_U^T` when sampling) + OV copying (`W_U W_E`), and in brackets their ratio,
the cost of the scores' arithmetic alone in forwards at equal speed.

| shape | path | forward | `induction_heads` | pattern-only pass / OV copying | ratio (<= {RATIO_TARGET}x, goal 1.1x) | peak memory forward / scores (<= {MEMORY_TARGET:g}x) | max diff hooked (<= 1e-4) / copying vs exact (<= 2 %) | multiply-adds forward / copying + OV |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    if before_rows:
        text += f"""
Before (`--before {args.before.name}`: the same script, children importing `circuits/` from that earlier
tree, timed in the same run; peak memory of `induction_heads` measured the same way):

| shape | forward | `induction_heads` | ratio | peak memory of `induction_heads` |
|---|---|---|---|---|
{chr(10).join(before_rows)}
"""
    print(text)
    if not args.no_write:
        write_section("real-shapes", text)
    return 0 if all_ok and not busy else 1


if __name__ == "__main__":
    raise SystemExit(main())
