"""Modular addition data (Nanda et al. 2023): every pair (a, b) as ``[a, b, =]`` with ``=`` = p."""

from __future__ import annotations

import torch

from circuits import modadd_answers, modadd_inputs
from interp.tasks.fast_forward import last_position_logits
from interp.tasks.models import modadd_config, on_device_of


def all_pairs(p: int) -> torch.Tensor:
    """LongTensor (p*p, 3): row ``a*p + b`` is ``[a, b, p]`` (the ``=`` token is id p)."""
    return modadd_inputs(p)


def answers(p: int) -> torch.Tensor:
    """LongTensor (p*p,): ``(a + b) mod p`` in the row order of :func:`all_pairs`."""
    return modadd_answers(p)


def train_mask(p: int, frac_train: float = 0.3, seed: int = 0) -> torch.Tensor:
    """BoolTensor (p*p,): a seeded random ``frac_train`` share of the pairs, in all_pairs order."""
    if not 0.0 < frac_train < 1.0:
        raise ValueError(f"frac_train must be in (0, 1), got {frac_train}")
    n = p * p
    if not 1 <= round(frac_train * n) <= n - 1:
        raise ValueError(f"frac_train={frac_train} leaves {'no training' if round(frac_train * n) < 1 else 'no test'} "
                         f"pair of the {n} (p={p}): it must give between 1 and {n - 1} training pairs")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[: round(frac_train * n)]] = True
    return mask


#: The largest modulus trained: 4 million pairs (Nanda et al.'s 113 has 12,769).
MAX_P = 2047


class ModAddTask:
    """a + b mod p, full batch on a seeded ``frac_train`` split, answer read at the last position."""

    name = "modadd"
    #: The task-specific fields of ``TrainOptions`` it reads (``interp sweep`` checks grid keys against them).
    option_names = ("p", "frac_train", "d_model", "float64_loss")

    def __init__(self, options) -> None:  # options: interp.presets.TrainOptions
        self.options = options
        self.p = 113 if options.p is None else options.p
        if isinstance(self.p, bool) or not isinstance(self.p, int) or self.p < 3 or self.p % 2 == 0:
            raise ValueError(f"p must be an odd int >= 3 (the Fourier analysis reads an odd modulus), got {self.p!r}")
        if self.p > MAX_P:  # p^2 pairs, every one in every full batch: p = 100003 asked torch for 80 GB
            raise ValueError(f"p={self.p} is above {MAX_P}: its {self.p ** 2:,} pairs would not fit a full batch "
                             "in memory")
        self.frac_train = 0.3 if options.frac_train is None else options.frac_train
        self.cfg = modadd_config(self.p, d_model=128 if options.d_model is None else options.d_model)
        x, y = all_pairs(self.p), answers(self.p)
        self.mask = train_mask(self.p, self.frac_train, options.seed)
        self.x_train, self.y_train = x[self.mask], y[self.mask]
        self.x_test, self.y_test = x[~self.mask], y[~self.mask]

    def model_config(self):
        return self.cfg

    def describe(self) -> dict:
        return {"name": self.name, "p": self.p, "frac_train": self.frac_train, "split_seed": self.options.seed}

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.options.float64_loss:
            logits = logits.double()
        return torch.nn.functional.cross_entropy(logits, labels)

    def train_loss(self, model, step: int) -> torch.Tensor:
        x, y = on_device_of(model, self.x_train, self.y_train)
        logits = last_position_logits(model, x)
        if logits.requires_grad:
            logits.register_hook(_flush_subnormals)
        return self._loss(logits, y)

    def evaluate(self, model, step: int) -> dict[str, float]:
        """Loss and accuracy on the training split and on the held-out pairs."""
        out = {}
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            x, y = on_device_of(model, x, y)
            logits = last_position_logits(model, x)
            out[f"{split}_loss"] = self._loss(logits, y).item()
            out[f"{split}_acc"] = (logits.argmax(-1) == y).float().mean().item()
        return out


def _flush_subnormals(grad: torch.Tensor) -> torch.Tensor:
    """Zero gradient entries below the smallest normal float (what the CPU's flush-to-zero does).

    Once the training loss is ~1e-6, the float64 loss sends back logit gradients that are
    subnormal in float32; every matmul of the backward pass that touches them runs several times
    slower on x86 (180 vs 80 ms an epoch on 2 cores). ``torch.set_flush_denormal`` would fix that
    only for threads created after it is called, so flush here, on every thread's input.
    """
    return grad.masked_fill(grad.abs() < torch.finfo(grad.dtype).tiny, 0.0)

