"""The argument types of the ``interp`` command: each turns one flag's text into a value or says,
in one line, what the flag accepts (argparse prints it and exits 2). No heavy imports."""

from __future__ import annotations

import argparse

__all__ = ["MEMORIZATION_HEAD", "device", "positive", "positive_float", "positive_list", "seed", "seed_list", "sizes"]


def device(text: str) -> str:
    """A device name (:mod:`interp.base.device`); whether this machine has it is checked when the command runs."""
    from interp.base.device import check_device_name

    try:
        return check_device_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seed(text: str) -> int:
    """A seed: an integer in ``[0, MAX_SEED]``, the range every command takes (``TrainOptions``)."""
    from interp.tasks.presets import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer in [0, {MAX_SEED}], got {text!r}")
    return value


def seed_list(text: str) -> list[int]:
    values = [seed(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}")
    return values


def positive_list(text: str) -> list[int]:
    values = [positive(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


#: Width of the memorisation models' heads: a model's d_model is a multiple of it.
MEMORIZATION_HEAD = 8


def sizes(text: str) -> list[tuple[int, int]]:
    """``32x1,64x2`` -> [(32, 1), (64, 2)]: D_MODELxLAYERS, d_model a multiple of the head width 8."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        d, x, n = part.lower().partition("x")
        try:
            size = (int(d), int(n)) if x else None
        except ValueError:
            size = None
        if size is None or min(size) < 1 or size[0] % MEMORIZATION_HEAD:
            raise argparse.ArgumentTypeError(
                f"expected sizes D_MODELxLAYERS such as 32x1,64x2 (d_model a positive multiple of "
                f"{MEMORIZATION_HEAD}, layers >= 1), got {part!r}")
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected sizes such as 32x1,64x2, got {text!r}")
    return sizes


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def bits_per_parameter(text: str) -> float:
    """A positive figure of bits per parameter, at most
    :data:`interp.analysis.capacity_figures.MAX_BITS_PER_PARAMETER`."""
    from interp.analysis.capacity_figures import MAX_BITS_PER_PARAMETER

    value = positive_float(text)
    if value > MAX_BITS_PER_PARAMETER:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BITS_PER_PARAMETER:g} (the bits of a float64 "
                                         f"parameter), got {value:g}")
    return value


def at_least_two(text: str) -> int:
    """An integer of 2 or more (a vocabulary: one token carries no information)."""
    value = positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 2, got {value}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
