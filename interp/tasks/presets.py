"""Training recipes: one dataclass of options, and the named presets of each task."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


LR_SCHEDULES = ("constant", "linear", "cooldown")
#: Largest seed a run takes (torch and numpy generators accept it on every platform).
MAX_SEED = 2**63 - 1
#: Share of the run over which the ``cooldown`` schedule decays the learning rate to 0.
COOLDOWN_SHARE = 0.25


@dataclass(frozen=True)
class TrainOptions:
    """Everything that determines a training run (with the seed, it determines it exactly).

    ``steps`` are optimiser steps; for modular addition, which trains full-batch, a step is an
    epoch. The learning rate warms up linearly over ``warmup_steps``; ``lr_schedule`` is
    ``"constant"`` after that, ``"linear"``: decaying linearly to 0 at the last step, or
    ``"cooldown"``: constant, then decaying linearly to 0 over the last quarter (:meth:`lr_at`).
    Weight decay is ``weight_decay`` throughout, or, with ``weight_decay_end``
    set, rises (or falls) linearly to it at the last step (:meth:`weight_decay_at`), the ramp
    starting after the share ``weight_decay_ramp_start`` of the run (before it the decay stays
    ``weight_decay``); both schedules run over ``steps``, so a shorter run moves through them faster.
    ``grokfast_lambda`` > 0 turns on the Grokfast-EMA gradient filter (Lee et al. 2024,
    "Grokfast: accelerated grokking by amplifying slow gradients"): each step adds
    ``lambda * EMA_alpha(gradients)`` to the gradient, amplifying its slow component.
    """

    task: str
    preset: str = "default"
    seed: int = 0
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_end: float | None = None  # None: constant weight decay
    weight_decay_ramp_start: float = 0.0  # share of the run before the ramp to weight_decay_end starts
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8  # AdamW's epsilon (torch's default); larger damps the slingshot (Thilak et al. 2022)
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # or "linear", "cooldown"
    batch_size: int | None = None  # None: full batch (modular addition)
    frac_train: float | None = None  # modular addition: share of the p^2 pairs to train on
    p: int | None = None  # modular addition: the modulus
    d_model: int | None = None  # modular addition: residual width (None: 128); heads and MLP scale with it
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 0.0
    eval_every: int = 50
    checkpoint_every: int | None = None  # None: steps // 20
    float64_loss: bool = False
    corpus: str | None = None  # text: folder of text files (None: the standard library, interp.tasks.text)
    # composition / comparison (interp.tasks.composition, interp.tasks.comparison); None: the task's default
    n_entities: int | None = None
    n_relations: int | None = None  # composition
    facts_per_entity: int | None = None  # composition: relations (atomic facts) per entity
    n_attributes: int | None = None  # comparison
    n_values: int | None = None  # comparison: values 0..n_values-1
    ood_share: float | None = None  # share of atomic facts (composition) / entities per attribute (comparison)
    phi: float | None = None  # inferred/atomic ratio of the training set (Wang et al. 2024)
    n_layers: int | None = None  # composition / comparison: model depth (None: 4)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        for name in ("steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("checkpoint_every", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.frac_train is not None and not 0.0 < self.frac_train < 1.0:
            raise ValueError(f"frac_train must be in (0, 1), got {self.frac_train!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.grokfast_alpha < 1.0:  # the filter's running average: 1 freezes it, > 1 diverges
            raise ValueError(f"grokfast_alpha must be in [0, 1), got {self.grokfast_alpha!r}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps!r}")
        if not 0.0 <= self.weight_decay_ramp_start < 1.0:
            raise ValueError(f"weight_decay_ramp_start must be in [0, 1), got {self.weight_decay_ramp_start}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")

    def lr_at(self, step: int) -> float:
        """Learning rate of the update made at ``step`` (0-based).

        The linear schedule decays towards ``steps``: a run extended with ``--steps`` continues
        from the rate of the longer schedule at its resume step.
        """
        lr = self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr
        if self.lr_schedule == "linear":
            lr *= 1.0 - step / self.steps
        elif self.lr_schedule == "cooldown":  # constant, then linear to 0 over the last COOLDOWN_SHARE
            lr *= min(1.0, (1.0 - step / self.steps) / COOLDOWN_SHARE)
        return lr

    def weight_decay_at(self, step: int) -> float:
        """Weight decay of the update made at ``step``: constant, or, when ``weight_decay_end`` is
        set, ``weight_decay`` up to step ``weight_decay_ramp_start * steps`` and then linear to
        ``weight_decay_end`` at the last step."""
        start = self.weight_decay_ramp_start * self.steps
        if self.weight_decay_end is None or step <= start:
            return self.weight_decay
        share = (step - start) / (self.steps - start)
        return self.weight_decay + (self.weight_decay_end - self.weight_decay) * min(1.0, share)

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
        # Batches of 64 sequences of 64 tokens with copies of every length (interp.tasks.induction).
        # At lr 2e-2 the heads form by step 200-300 on seeds 0-6; the linear decay then settles
        # them (best layer-1 prefix matching 0.85-0.94 at every repeat length 4-31 on seeds 0-3).
        # Trained longer, the heads hand attention back to BOS (0.92 at step 300 -> 0.85 at 400 on
        # seed 1; 0.67 at step 1000 on the earlier data): docs/training.md has the measurements.
        "default": TrainOptions(
            task="induction", steps=400, lr=2e-2, weight_decay=0.01, warmup_steps=50,
            lr_schedule="linear", batch_size=64, eval_every=20,
        ),
    },
    "text": {
        # Contexts of BOS and 511 bytes of the standard library (interp.tasks.text), 4 per step, on the
        # 2-layer attention-only model with sinusoid-started positions. At lr 1e-2 the
        # previous-token heads form over the first ~2,000 steps and the induction heads and the
        # in-context learning score follow together (seed 0, constant lr: best prefix matching
        # 0.10 at step 1,600, 0.56 at 2,600; score -0.10 -> -0.45 nats); the cooldown settles
        # them. Random positions: no previous-token head in 1,000 steps. BENCHMARKS.md ("Training
        # on text") measures seeds 0-2 of the preset itself: prefix matching 0.70-0.80, score
        # -0.55 to -0.56; the two change points 0-5 % of the run apart on seeds 0-1, 30 % on seed 2.
        "default": TrainOptions(
            task="text", steps=4000, lr=1e-2, weight_decay=0.01, warmup_steps=50, lr_schedule="cooldown",
            batch_size=4, eval_every=100, checkpoint_every=200,
        ),
        # The same with a ReLU MLP of width 256 in both layers (interp.tasks.text.PRESET_MODELS).
        # No benchmark or document measures its training.
        "mlp": TrainOptions(
            task="text", steps=4000, lr=1e-2, weight_decay=0.01, warmup_steps=50, lr_schedule="cooldown",
            batch_size=4, eval_every=100, checkpoint_every=200,
        ),
    },
    "modadd": {
        # Nanda et al. 2023, unchanged: AdamW lr 1e-3, weight decay 1, betas (0.9, 0.98),
        # full batch, 30 % train, float64 loss, 40k epochs (10-step linear warm-up as in their code).
        "nanda2023": TrainOptions(
            task="modadd", preset="nanda2023", steps=40_000, lr=1e-3, weight_decay=1.0,
            warmup_steps=10, frac_train=0.3, p=113, eval_every=100, float64_loss=True,
        ),
        # Same model, data and split. Weight decay rising linearly from 1 to 14 over the run
        # (Omnigrok, Liu et al. 2023: weight-norm pressure sets the wait; starting low it leaves
        # memorisation fast, rising it shortens the slow seeds' wait) and Grokfast-EMA (Lee et
        # al. 2024) at lr 3e-3. AdamW's epsilon 1e-5: at torch's 1e-8 the losses of some seeds
        # jumped after grokking (seed 0: test loss 0.003 -> 1.2) once the gradients were tiny, the
        # slingshot of Thilak et al. 2022, which a larger epsilon damps. Constant weight decay 2
        # grokked seed 0 but not seed 2 in 1,500 epochs; constant 3 generalised seed 0 too soon.
        # docs/training.md has the measurements (BENCHMARKS.md, "Training" and "The late spike
        # and AdamW's epsilon").
        "default": TrainOptions(
            task="modadd", preset="default", steps=1500, lr=3e-3, weight_decay=1.0, weight_decay_end=14.0,
            adam_eps=1e-5, warmup_steps=10, frac_train=0.3, p=113, eval_every=20, float64_loss=True,
            grokfast_alpha=0.98, grokfast_lambda=2.0,
        ),
    },
    "composition": {
        # Wang et al. 2024 scaled down (docs/training.md, "Composition and comparison"): 100
        # entities, 20 relations, 10 per entity, 5 % OOD facts, phi 9 (8,550 chains: nearly all ID
        # chains), GPT-2-style 4 layers of 128, batches of 256, AdamW betas (0.9, 0.999). Weight
        # decay 0.01 for the first third (memorise), then rising linearly to 2 (generalise), and a
        # cooldown (lr to 0 over the last quarter). Seed 0: train 0.99 at step 700, ID 0.9 at
        # 2,350 (3.4x later); end train 1.00, ID 0.97, OOD 0.00; 356 s on one busy core. With
        # betas (0.9, 0.98) the training accuracy stalls at 0.97-0.98 until the learning rate
        # falls (train 0.99 at 1,600-1,750, a delay of 1.1-1.5x); a ramp from the start let ID
        # rise with memorisation; phi 4-7 memorised but hardly generalised.
        "default": TrainOptions(
            task="composition", steps=3000, lr=1e-3, weight_decay=0.01, weight_decay_end=2.0,
            weight_decay_ramp_start=1 / 3, betas=(0.9, 0.999), warmup_steps=100, lr_schedule="cooldown",
            batch_size=256, eval_every=50, n_entities=100, n_relations=20, facts_per_entity=10,
            ood_share=0.05, phi=9.0,
        ),
    },
    "comparison": {
        # Wang et al. 2024 scaled down (docs/training.md, "Composition and comparison"): 200
        # entities, 5 attributes, values 0-19, 10 % OOD entities per attribute, phi 20 (18,000
        # comparisons), GPT-2-style 4 layers of 128, batches of 512, lr 2e-3 with weight decay 1
        # and a cooldown, 2,000 steps. Seeds 0 / 1: ID 0.9 from step 300, OOD 0.8 at 800 / 950, end
        # ID 0.95 / 0.96, OOD 0.87 / 0.88 (target 0.8 held, goal 0.9 missed); 528 / 499 s (0.25-0.26
        # s a step) on one busy core. The OOD comparisons wait for the atomic facts (0.8 memorised
        # at the end): batches of 256 (half the sightings of each atomic fact a step) left seed 1 at
        # OOD 0.49 after 3,000 steps (seed 0: 0.87); lr 1e-3 (the previous pilot): OOD 0.79 after
        # 4,000 steps; 100 entities: OOD 0.5-0.69.
        "default": TrainOptions(
            task="comparison", steps=2000, lr=2e-3, weight_decay=1.0, warmup_steps=100, lr_schedule="cooldown",
            batch_size=512, eval_every=50, n_entities=200, n_attributes=5, n_values=20, ood_share=0.1, phi=20.0,
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
#: Their capacities are about 4.7k, 14k, 27k and 43k bits (25, 74, 139 and 222 sequences of 32
#: tokens over 64 ids, 192 bits each), so every model gets data sets below and well above its
#: capacity. The widest that fit in 20 minutes with 2 workers: BENCHMARKS.md has the time.
MEMORIZATION_SIZES: list[tuple[int, int]] = [(8, 1), (16, 1), (24, 1), (32, 1)]
MEMORIZATION_DATASETS: list[int] = [32, 64, 128, 256, 512]

#: ``interp sweep`` defaults: the grid of each task (with its default preset and seed 0). For
#: modadd, widths 8-64 (2.8k-65k parameters; capacity 6.8k-158k bits at 2.44 bits/parameter)
#: x training fractions 0.1-0.5 (8.7k-43.5k bits of labels, 3,831 x log2 113 = 26k at 0.3): the
#: labels' bits run from 0.06x to 6.4x the capacity (docs/training.md, "Sweeps"); --seed 0,1
#: doubles the cells.
SWEEP_GRIDS: dict[str, dict[str, list]] = {
    "modadd": {"d_model": [8, 16, 32, 64], "frac_train": [0.1, 0.3, 0.5]},
}
