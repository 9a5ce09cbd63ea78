"""Time circuits.fourier_report and circuits.progress_measures; write the `fourier` section of BENCHMARKS.md.

    python benchmarks/bench_fourier.py [--repeats 3] [--checkpoints 50]

Measures, best of ``--repeats`` (wall clock, torch's default thread count):

- ``fourier_report`` on the published p = 113 model of Nanda et al. 2023;
- the same analysis done the straightforward way (``run_with_cache`` over all p^2 inputs, an
  explicit float64 2D Fourier transform of every neuron, projections in the full basis), as the
  peer baseline;
- ``progress_measures`` over ``--checkpoints`` in-memory checkpoints (the published model with
  shrinking Gaussian perturbations, one per "step").

The section between ``<!-- fourier:start -->`` and ``<!-- fourier:end -->`` is replaced (or
appended); every other section of BENCHMARKS.md is left as it is.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import interp  # noqa: E402
from circuits import fourier_report, progress_measures  # noqa: E402
from circuits.fourier import fourier_basis  # noqa: E402
from common import best_of, load_average, load_note, machine, write_section  # noqa: E402

PUBLISHED = ROOT.parent / "shared" / "data" / "nanda2023_modadd_p113_frac0.3.pth"


def naive_report(model, p: int = 113) -> dict[str, float]:
    """The textbook computation: full forward with cache, explicit 2D DFT, full-basis projections."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens)
        logits = logits[:, -1].double()
        acts = cache["blocks.0.mlp.hook_post"][:, -1].double().reshape(p, p, -1)
        f = fourier_basis(p)
        coeffs = torch.einsum("ia,abn,jb->ijn", f, acts, f)
        coeffs[0, 0] = 0
        total = coeffs.pow(2).sum(dim=(0, 1))
        fracs = torch.stack(
            [coeffs[[0, 2 * k - 1, 2 * k]][:, [0, 2 * k - 1, 2 * k]].pow(2).sum(dim=(0, 1)) for k in range(1, (p + 1) // 2)]
        ) / total
        labels = (a + b) % p
        table = logits.reshape(p, p, p)
        full = torch.einsum("ia,abc,jb->ijc", f, table, f)  # logits in the 2D basis
        restricted = torch.zeros_like(table)
        for k in (3, 6, 23, 39):
            s = (a + b).double()
            for fn in (torch.cos, torch.sin):
                v = fn(2 * math.pi * k * s / p)
                v = v / v.norm()
                restricted += (v[:, None] * (v @ logits)[None, :]).reshape(p, p, p)
        restricted += table.mean(dim=(0, 1))
        loss = torch.nn.functional.cross_entropy(restricted.reshape(p * p, p), labels)
    return {"fracs": float(fracs.max()), "full": float(full.abs().max()), "loss": float(loss)}


def perturbed_checkpoints(model, n: int) -> dict[int, torch.nn.Module]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for i in range(n):
        m = copy.deepcopy(model)
        scale = 0.05 * (n - 1 - i) / max(1, n - 1)
        with torch.no_grad():
            for t in m.parameters():
                t.add_(scale * t.std() * torch.randn(t.shape, generator=gen))
        out[100 * i] = m
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    before = load_average()
    model = interp.load_model(PUBLISHED)
    report = fourier_report(model)  # warm-up
    t_report = best_of(lambda: fourier_report(model), args.repeats)
    t_naive = best_of(lambda: naive_report(model), args.repeats)
    ckpts = perturbed_checkpoints(model, args.checkpoints)
    t_progress = best_of(lambda: progress_measures(ckpts), args.repeats)
    measures = progress_measures(ckpts)
    after = load_average()
    lines = [
        "## Fourier report and progress measures (`benchmarks/bench_fourier.py`)",
        "",
        f"Published p = 113 model of Nanda et al. 2023; best of {args.repeats}, wall clock, "
        f"{machine()}. {load_note(before, after)}",
        "",
        "| what | time |",
        "| --- | --- |",
        f"| `fourier_report` (spectra, key frequencies, 4 losses, Gini, weight norm) | {t_report * 1000:.0f} ms |",
        f"| same analysis done naively (`run_with_cache`, explicit 2D DFT in float64) | {t_naive * 1000:.0f} ms |",
        f"| `progress_measures` over {args.checkpoints} in-memory checkpoints | {t_progress:.2f} s "
        f"({t_progress / args.checkpoints * 1000:.0f} ms per checkpoint) |",
        "",
        f"Key frequencies {report.key_frequencies}; loss {report.loss:.5f}, restricted loss "
        f"{report.restricted_loss:.5f}, excluded loss {report.excluded_loss:.2f}; Gini of the Fourier norms "
        f"of W_E / W_L {report.gini_embed:.2f} / {report.gini_unembed:.2f}; "
        f"{len(measures)} rows of progress measures.",
        "The speed comes from a closed-form last-position forward (the query at `=` is the same for every "
        "input, so attention reduces to per-token tables) and from computing each neuron's 3x3-block "
        "energies from four p x d_mlp marginal sums (rows, columns, a+b and b-a diagonals) instead of a "
        "full 2D transform. The report runs on one intra-op thread; `progress_measures` scores checkpoints "
        "on one single-threaded worker per core.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("fourier", text)


if __name__ == "__main__":
    main()
