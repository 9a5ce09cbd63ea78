"""The local learning coefficient of a model at its weights: SGLD chains on devinterp's sampler.

:func:`estimate_llc` is the one estimation path: the known-answer tests (``tests/test_llc.py``),
the calibration (:mod:`interp.detectors.llc.calibrate`) and the detector all call it.

Estimator (Lau et al. 2023; Hoogland et al. 2025). Around the weights ``w*`` of the model,
``chains`` SGLD chains sample the localised tempered posterior
``p(w) ~ exp(-nbeta * L(w) - gamma / 2 * |w - w*|^2)`` with devinterp's optimizer
(``devinterp.optim.SGMCMC.sgld``: step size ``epsilon``, localisation ``gamma``, inverse
temperature ``nbeta``). Step ``t`` of every chain uses batch ``data[t % len(data)]`` (the same
batches in every chain and at every checkpoint) and records ``L(w_t; B_t) - L(w*; B_t)``: the
loss at the chain's weights minus the loss of the starting weights on the same batch (paired,
which removes the batch-to-batch spread of the loss from the estimate). After ``burnin`` steps,
the mean of the ``draws`` recorded differences times ``nbeta`` is the chain's estimate; ``llc``
and ``llc_std`` are the mean and standard deviation (ddof 0) over chains. ``masks`` restricts
the chains to some weights (devinterp's ``create_param_masks``: one head's ``W_Q, W_K, W_V,
W_O, b_Q, b_K, b_V`` slices), the refined LLC of Wang et al. 2025; every other weight stays at
``w*``.

Why not ``devinterp.slt.llc.llc`` / ``sample``: they take a Hugging Face ``Dataset`` of
``input_ids`` and a per-token next-token loss of shape (batch, seq - 1), write every step's
per-token losses to a zarr store, average the LLC over the burn-in steps too, and turn a chain
whose loss goes NaN into a warning (its zeros stay in the store). The toolkit's runs have their
own losses (the answer token of modular addition and the fact tasks, float64 for modular
addition) and a diverged chain must be an error, so the chain loop is here (a dozen lines) and
the update rule, localisation, temperature and head masks are devinterp's.

A chain *diverges* when a loss or a weight is not finite, or when a recorded loss rise exceeds
:data:`DIVERGED_RISE` times ``1 + L(w*)`` (the chain left the basin); :attr:`LLCEstimate.diverged`
names the chain, the step and why, and no number is given for it. Deterministic for a seed: chain
``k`` draws its noise from a generator seeded :func:`chain_seed` ``(seed, k)`` (the chains of two
seeds never share their noise; seed 0's are seeded 0, 1, ...), so the chains run side by side on
:data:`CHAIN_THREADS` threads (each on one intra-op thread; torch releases the GIL in its ops) and
give what they give one after another.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["CHAIN_THREADS", "DIVERGED_RISE", "LLCEstimate", "Sampling", "devinterp_missing", "estimate_llc",
           "head_masks"]

#: A recorded loss rise above this many times ``1 + L(w*)`` is a diverged chain.
DIVERGED_RISE = 10.0
#: Threads the chains of one estimate (and the calibration's checks) run on, each on one intra-op
#: thread: one per core, at most 4.
CHAIN_THREADS = min(os.cpu_count() or 1, 4)


#: Chain ``k`` of seed ``s`` is seeded ``s * CHAIN_STRIDE + k``: at most this many chains.
CHAIN_STRIDE = 2 ** 20
#: Seeds are below this, so every chain's seed is below 2**64 (torch's limit) and no two (seed, chain) share one.
MAX_SEED = 2 ** 64 // CHAIN_STRIDE


def chain_seed(seed: int, chain: int) -> int:
    """The noise seed of chain ``chain`` of ``seed``: ``seed + chain`` made chains of neighbouring
    seeds the same chain (seed 0's chain 1 was seed 1's chain 0)."""
    return seed * CHAIN_STRIDE + chain


@dataclass(frozen=True)
class Sampling:
    """SGLD settings: step size, localisation, inverse temperature, chain shape, seed."""

    epsilon: float
    gamma: float
    nbeta: float
    chains: int = 2
    draws: int = 100
    burnin: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.epsilon < math.inf and 0 <= self.gamma < math.inf and 0 < self.nbeta < math.inf):
            raise ValueError(f"need finite epsilon > 0, gamma >= 0, nbeta > 0; got {self}")
        if not 1 <= self.chains <= CHAIN_STRIDE or self.draws < 2 or self.burnin < 0:
            raise ValueError(f"need 1 <= chains <= {CHAIN_STRIDE}, draws >= 2, burnin >= 0; got {self}")
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"need 0 <= seed < 2**44 (each chain's seed below 2**64); got {self}")


@dataclass(frozen=True)
class LLCEstimate:
    """The estimate of one model (or one restriction of it) and its chains' traces.

    ``per_chain``: each chain's LLC; ``trace``: (chains, burnin + draws) loss rises
    ``L(w_t; B_t) - L(w*; B_t)`` (NaN after a chain stopped); ``init_loss``: mean ``L(w*)`` over
    the batches used; ``diverged``: None, or which chain diverged, at which step and why (then
    ``llc`` and ``llc_std`` are NaN).
    """

    llc: float
    llc_std: float
    per_chain: tuple[float, ...]
    init_loss: float
    trace: np.ndarray = field(repr=False)
    sampling: Sampling
    diverged: str | None = None

    @property
    def draws(self) -> np.ndarray:
        """(chains, draws): the rises after burn-in."""
        return self.trace[:, self.sampling.burnin:]


def devinterp_missing() -> str | None:
    """None when devinterp is installed (found, not imported: its import takes seconds), else how to install it."""
    import importlib.util

    if importlib.util.find_spec("devinterp") is None:
        return 'devinterp is not installed: pip install "interp-circuits[llc]"'
    return None


def head_masks(model: torch.nn.Module, layer: int, head: int) -> dict[str, torch.Tensor | None]:
    """devinterp's masks of one attention head: its slices of ``W_Q, W_K, W_V, W_O`` (and Q/K/V biases)."""
    from devinterp.slt.weight_restrictions import create_param_masks

    return create_param_masks(model, f"l{layer}h{head}")


def estimate_llc(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
                 data: Sequence[Any], sampling: Sampling,
                 masks: dict[str, torch.Tensor | None] | None = None) -> LLCEstimate:
    """The LLC of ``model`` at its weights (module docstring); ``model`` itself is not changed.

    ``loss_fn(model, batch)`` is the mean loss of one batch (a scalar tensor with gradients);
    ``data`` the batches (cycled); ``masks`` None for every weight, else devinterp's parameter
    masks (name -> bool tensor, or None for the whole parameter; other parameters stay fixed).
    """
    steps = sampling.burnin + sampling.draws
    used = [data[t % len(data)] for t in range(min(steps, len(data)))]
    with torch.no_grad():
        init = [float(loss_fn(model, batch)) for batch in used]
    init_loss = float(np.mean(init))
    if not math.isfinite(init_loss):
        raise ValueError(f"the loss at the starting weights is not finite ({init_loss})")
    limit = DIVERGED_RISE * (1.0 + abs(init_loss))

    def run(chain: int) -> tuple[np.ndarray, str | None]:
        from circuits import one_thread

        with one_thread():
            return _chain(model, loss_fn, used, init, limit, sampling, masks, chain)

    threads = min(sampling.chains, CHAIN_THREADS)
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            chains = list(pool.map(run, range(sampling.chains)))
    else:
        chains = []
        for chain in range(sampling.chains):
            chains.append(run(chain))
            if chains[-1][1]:  # diverged: the later chains would not change the answer
                break
    trace = np.full((sampling.chains, steps), np.nan)
    trace[:len(chains)] = [row for row, _ in chains]
    diverged = next((why for _, why in chains if why), None)
    if diverged:
        return LLCEstimate(math.nan, math.nan, (), init_loss, trace, sampling, diverged)
    per_chain = tuple(float(sampling.nbeta * row[sampling.burnin:].mean()) for row in trace)
    return LLCEstimate(float(np.mean(per_chain)), float(np.std(per_chain)), per_chain, init_loss, trace, sampling)


def _chain(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], used: list[Any],
           init: list[float], limit: float, sampling: Sampling, masks: dict[str, torch.Tensor | None] | None,
           chain: int) -> tuple[np.ndarray, str | None]:
    """One SGLD chain from a copy of ``model``: its recorded rises (NaN after it stopped), and why it
    diverged or None."""
    from devinterp.optim import SGMCMC

    steps = sampling.burnin + sampling.draws
    row = np.full(steps, np.nan)
    walker = copy.deepcopy(model)
    walker.train()
    params = dict(walker.named_parameters())
    chosen = masks if masks is not None else dict.fromkeys(params)
    for name, param in params.items():
        param.requires_grad_(name in chosen)
    groups = [{"params": [params[name]], **({} if mask is None else {"mask": [mask.to(params[name].device)]})}
              for name, mask in chosen.items()]
    optimizer = SGMCMC.sgld(groups, lr=sampling.epsilon, localization=sampling.gamma, nbeta=sampling.nbeta)
    noise = torch.Generator(device=next(walker.parameters()).device).manual_seed(chain_seed(sampling.seed, chain))
    for t in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(walker, used[t % len(used)])
        rise = float(loss.detach()) - init[t % len(used)]
        if not math.isfinite(rise) or rise > limit:
            why = "the loss is not finite" if not math.isfinite(rise) else (
                f"the loss rose by {rise:.3g} (limit {limit:.3g}, {DIVERGED_RISE:g} x (1 + L(w*)))")
            return row, f"SGLD chain {chain} diverged at step {t} of {steps}: {why}"
        row[t] = rise
        loss.backward()
        optimizer.step(noise_generator=noise)
    if not all(bool(torch.isfinite(params[name]).all()) for name in chosen):
        return row, f"SGLD chain {chain} diverged at its last step: a weight is not finite"
    return row, None
