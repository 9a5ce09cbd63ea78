"""Training recipes: one dataclass of options, and the named presets of each task."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainOptions:
    """Everything that determines a training run (with the seed, it determines it exactly).

    ``steps`` are optimiser steps; for modular addition, which trains full-batch, a step is an
    epoch. ``grokfast_lambda`` > 0 turns on the Grokfast-EMA gradient filter (Lee et al. 2024,
    "Grokfast: accelerated grokking by amplifying slow gradients"): each step adds
    ``lambda * EMA_alpha(gradients)`` to the gradient, amplifying its slow component.
    """

    task: str
    preset: str = "default"
    seed: int = 0
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 0
    batch_size: int | None = None  # None: full batch (modular addition)
    frac_train: float | None = None  # modular addition: share of the p^2 pairs to train on
    p: int | None = None  # modular addition: the modulus
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 0.0
    eval_every: int = 50
    checkpoint_every: int | None = None  # None: steps // 20
    float64_loss: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


PRESETS: dict[str, dict[str, TrainOptions]] = {
    "induction": {
        # Batches of 64 sequences of 64 tokens, one repeated span each. At lr 1e-2 the induction
        # head forms after ~300-400 steps (best layer-1 prefix matching 0.77 at 350, 0.92 at 400;
        # at lr 1e-3 nothing had started by step 800); the last 200 steps sharpen it.
        "default": TrainOptions(
            task="induction", steps=600, lr=1e-2, weight_decay=0.01, warmup_steps=50,
            batch_size=64, eval_every=25,
        ),
    },
    "modadd": {
        # Nanda et al. 2023, unchanged: AdamW lr 1e-3, weight decay 1, betas (0.9, 0.98),
        # full batch, 30 % train, float64 loss, 40k epochs (10-step linear warm-up as in their code).
        "nanda2023": TrainOptions(
            task="modadd", preset="nanda2023", steps=40_000, lr=1e-3, weight_decay=1.0,
            warmup_steps=10, frac_train=0.3, p=113, eval_every=100, float64_loss=True,
        ),
        # Same model, data and split. Weight decay 2 (Omnigrok, Liu et al. 2023: stronger weight-norm
        # pressure shortens the wait) and Grokfast-EMA (Lee et al. 2024) at lr 3e-3: train 99 % at
        # epoch 180, test 99 % at 600 (seed 0). Weight decay 1 took 1820 epochs; 3 generalised
        # too soon to count as grokking (test 99 % at 440 vs train 99 % at 280); lr 5e-3 was slower.
        "default": TrainOptions(
            task="modadd", preset="default", steps=1500, lr=3e-3, weight_decay=2.0,
            warmup_steps=10, frac_train=0.3, p=113, eval_every=20, float64_loss=True,
            grokfast_alpha=0.98, grokfast_lambda=2.0,
        ),
    },
}


def preset(task: str, name: str = "default", **overrides: Any) -> TrainOptions:
    """The named preset of a task, with overrides (``None`` values are ignored)."""
    if task not in PRESETS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(PRESETS))}")
    if name not in PRESETS[task]:
        raise ValueError(f"unknown preset {name!r} for {task}; known: {', '.join(sorted(PRESETS[task]))}")
    base = PRESETS[task][name]
    return dataclasses.replace(base, preset=name, **{k: v for k, v in overrides.items() if v is not None})


#: ``interp memorization`` defaults: model sizes (d_model, layers) x data-set sizes (sequences).
#: Their capacities are about 4.8k, 14k and 27k bits (25, 73 and 141 sequences of 32 tokens over
#: 64 ids, 192 bits each), so every model gets data sets below and well above its capacity.
#: BENCHMARKS.md has the figures and the time.
MEMORIZATION_SIZES: list[tuple[int, int]] = [(8, 1), (16, 1), (24, 1)]
MEMORIZATION_DATASETS: list[int] = [32, 64, 128, 256, 512]
