"""Linear probes: at which residual state a property of the input is linearly decodable.

Definition (docs/scores.md, "Linear probes"): for inputs ``tokens``, a target per sequence and
one read position per sequence, take the residual state ``x_l`` (``d_model``) at each state
``l = 0..L`` (as in the logit lens: before block ``l``, state 0 being the embeddings; ``l = L``
after the last block). A probe per state is a ridge least-squares fit on a *fit* set: features
standardised with the fit set's mean and standard deviation (``z = (x - mu) / sd``; a feature
constant on the fit set, ``sd`` at most 1e-6 of the state's largest, keeps ``sd = 1``), then

    W_l = (Z^T Z + ridge * n * I)^{-1} Z^T (Y - mean(Y)),   b_l = mean(Y)

over the ``n`` fit rows, where ``Y`` is

- ``kind="class"``: the one-hot of integer labels in ``[0, C)``; prediction
  ``argmax_c (z W_l + b_l)_c``; score = accuracy in [0, 1], to compare with the scored labels'
  majority share (what a constant guess gets);
- ``kind="scalar"``: a real target (an ordinal such as an attribute value); prediction
  ``z W_l + b_l``; score = the coefficient of determination on the scored rows,
  ``R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2`` in ``(-inf, 1]``: 1 = read exactly, 0 = no
  better than the scored rows' mean, negative = worse. A quantity the model stores as a magnitude
  along one direction is read well by this probe and poorly by a class probe, whose classes
  would have to be separable by hyperplanes.

The score that matters is on *other* inputs than the fit rows: high there means the state holds
the target along directions shared across inputs, linearly readable. The score on the fit rows
says little (with ``d_model`` features a probe can memorise a few hundred rows).

Linear probing is Alain & Bengio 2016 ("Understanding intermediate layers using linear classifier
probes"); the ridge least-squares fit is chosen for a closed form with no training run or seed. Wang et al. 2024 ("Grokked transformers are implicit reasoners", arXiv 2405.15071) read
the comparison task's attribute values off the entity positions; ``interp.comparison_probe``
applies this module there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from circuits._checks import is_int, is_real, unpadded
from circuits._residual import check_model, check_tokens, state_names

__all__ = ["KINDS", "LinearProbe", "fit_linear_probe", "probe_score", "residual_states_at"]

#: Default ridge strength (relative to the number of fit rows, on standardised features).
DEFAULT_RIDGE = 1e-2
#: Probe kinds: a classifier of integer labels, or a regression of a real target.
KINDS = ("class", "scalar")


@dataclass(frozen=True)
class LinearProbe:
    """One ridge fit per residual state (module docstring), float64.

    ``kind``: ``"class"`` or ``"scalar"``; ``mean``, ``scale``: (L + 1, d_model) standardisation;
    ``weight``: (L + 1, d_model, C), ``C`` the classes (1 for a scalar probe); ``bias``: (L + 1, C).
    """

    kind: str
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def n_classes(self) -> int:
        """Classes of a class probe (1 for a scalar probe)."""
        return int(self.weight.shape[-1])

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """Prediction per row and state, (n, L + 1) from states (n, L + 1, d_model): the class (int64) of a
        class probe, the value (float64) of a scalar probe."""
        if states.ndim != 3 or tuple(states.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"states must have shape (n, {self.mean.shape[0]}, {self.mean.shape[1]}), "
                             f"got {tuple(states.shape)}")
        z = (states.double().cpu() - self.mean) / self.scale
        out = torch.einsum("nsd,sdc->nsc", z, self.weight) + self.bias
        return out.argmax(-1) if self.kind == "class" else out[..., 0]


def residual_states_at(model: HookedTransformer, tokens: torch.Tensor,
                       positions: torch.Tensor | int = -1) -> torch.Tensor:
    """The ``L + 1`` residual states at one position per sequence: float (batch, L + 1, d_model), on the CPU.

    ``positions``: an int for every sequence (negative counts from the end) or a (batch,) integer
    tensor. Raises ``TypeError``/``ValueError`` (one line) for bad tokens or positions, and for
    states that are not finite (NaN or infinite weights).
    """
    model = check_model(model)
    tokens = check_tokens(model, tokens)
    batch, n_pos = tokens.shape
    pos = _read_positions(positions, batch, n_pos).to(tokens.device)
    names = state_names(model)
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, attention_mask=unpadded(tokens))
        rows = torch.arange(batch, device=tokens.device)
        states = torch.stack([cache[name][rows, pos] for name in names], dim=1).cpu()
    if not bool(torch.isfinite(states).all()):
        raise ValueError("the model's residual stream has NaN or infinite values on these tokens (check its weights)")
    return states


def fit_linear_probe(model: HookedTransformer, tokens: torch.Tensor, targets: torch.Tensor,
                     positions: torch.Tensor | int = -1, *, kind: str = "class", n_classes: int | None = None,
                     ridge: float = DEFAULT_RIDGE) -> LinearProbe:
    """Fit one ridge probe per residual state of ``model`` (module docstring).

    Args:
        model: any ``HookedTransformer``.
        tokens: int64 (batch, pos), the fit inputs.
        targets: (batch,): integer labels in ``[0, n_classes)`` with at least two distinct classes
            (``kind="class"``), or real values that are not all equal (``kind="scalar"``).
        positions: the read position, one for all or one per sequence (:func:`residual_states_at`).
        kind: ``"class"`` or ``"scalar"``.
        n_classes: class probes only; default ``targets.max() + 1``.
        ridge: > 0, the penalty relative to the number of fit rows.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not is_real(ridge) or not 0 < ridge < math.inf:
        raise ValueError(f"ridge must be a finite number > 0, got {ridge!r}")
    if n_classes is not None and (not is_int(n_classes) or n_classes < 2):
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    x = residual_states_at(model, tokens, positions).double()  # (n, S, d)
    targets = _check_targets(targets, x.shape[0], kind)
    if kind == "class":
        n_classes = int(targets.max()) + 1 if n_classes is None else int(n_classes)
        if int(targets.max()) >= n_classes:
            raise ValueError(f"labels must lie in [0, n_classes={n_classes}), got a label {int(targets.max())}")
        if targets.unique().numel() < 2:
            raise ValueError("the fit labels have a single class; a probe needs at least two")
        y = torch.nn.functional.one_hot(targets, n_classes).double()
    else:
        if bool((targets == targets[0]).all()):
            raise ValueError("the fit targets are all equal; a scalar probe needs some spread")
        y = targets[:, None]
    n, _, d = x.shape
    mean = x.mean(0)
    scale = x.std(0, unbiased=False)
    # a feature that varies only by float32 rounding on the fit set counts as constant
    scale = torch.where(scale > 1e-6 * scale.amax(-1, keepdim=True).clamp_min(1e-30), scale, torch.ones_like(scale))
    z = ((x - mean) / scale).transpose(0, 1)  # (S, n, d)
    bias = y.mean(0)
    gram = z.transpose(1, 2) @ z + ridge * n * torch.eye(d, dtype=torch.float64, device=z.device)
    weight = torch.linalg.solve(gram, z.transpose(1, 2) @ (y - bias))
    return LinearProbe(kind, mean, scale, weight, bias.expand(x.shape[1], -1).clone())


def probe_score(model: HookedTransformer, probe: LinearProbe, tokens: torch.Tensor, targets: torch.Tensor,
                positions: torch.Tensor | int = -1) -> torch.Tensor:
    """The probe's score on these inputs per residual state, float64 (L + 1,): the accuracy of a class
    probe, in [0, 1], or the R^2 of a scalar probe, in (-inf, 1] (module docstring)."""
    states = residual_states_at(model, tokens, positions)
    targets = _check_targets(targets, states.shape[0], probe.kind)
    predicted = probe.predict(states)
    if probe.kind == "class":
        if int(targets.max()) >= probe.n_classes:
            raise ValueError(f"labels must lie in [0, {probe.n_classes}), the probe's classes; got "
                             f"{int(targets.max())}")
        return (predicted == targets[:, None]).double().mean(0)
    spread = ((targets - targets.mean()) ** 2).sum()
    if not spread > 0:
        raise ValueError("the scored targets are all equal; R^2 is undefined")
    return 1.0 - ((predicted - targets[:, None]) ** 2).sum(0) / spread


def _check_targets(targets: object, batch: int, kind: str) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor) or targets.dtype == torch.bool or targets.is_complex() \
            or (kind == "class" and targets.is_floating_point()):
        wanted = "an integer" if kind == "class" else "a real"
        raise TypeError(f"targets of a {kind} probe must be {wanted} torch.Tensor, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if targets.ndim != 1 or targets.shape[0] != batch:
        raise ValueError(f"targets must have shape ({batch},), one per sequence, got {tuple(targets.shape)}")
    if kind == "scalar":
        targets = targets.double().cpu()
        if not bool(torch.isfinite(targets).all()):
            raise ValueError("targets must be finite")
        return targets
    if int(targets.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(targets.min())}")
    return targets.long().cpu()


def _read_positions(positions: object, batch: int, n_pos: int) -> torch.Tensor:
    if is_int(positions):
        positions = torch.full((batch,), int(positions), dtype=torch.long)
    if not isinstance(positions, torch.Tensor) or positions.dtype == torch.bool or positions.is_floating_point():
        raise TypeError("positions must be an int or an integer torch.Tensor, one per sequence")
    if tuple(positions.shape) != (batch,):
        raise ValueError(f"positions must have shape ({batch},), one per sequence, got {tuple(positions.shape)}")
    if int(positions.min()) < -n_pos or int(positions.max()) >= n_pos:
        raise ValueError(f"positions must lie in [-{n_pos}, {n_pos}) for sequences of {n_pos} tokens, got "
                         f"[{int(positions.min())}, {int(positions.max())}]")
    return positions.long() % n_pos
