"""Causal tracing: which residual states carry what the answer depends on.

Definition (docs/scores.md, "Causal tracing"): a *clean* input ``tokens`` with target ``t`` (usually
the clean answer) and a *corrupted* input of the same shape whose answer differs (Wang et al.
2024 change the head entity, or a relation, of a two-hop query). For every residual state
``l = 0..L`` (as in the logit lens: before block ``l``, or after the last block for ``l = L``)
and position ``p``, run the clean input with the state ``(l, p)`` replaced by the corrupted
run's, and read at ``read_position``:

    metric = rank of t (1 = top; in [1, d_vocab_out])   or   the logit of t (model output)
    change[l, p] = metric(patched at l, p) - metric(clean)

A state the answer depends on moves the metric towards its corrupted value (rank up, logit
down); a state that does not matter leaves it (change 0); states at positions after
``read_position`` never matter (causal attention). Patching at ``l = L`` changes only the read
position itself. Meng et al. 2022 ("Locating and editing factual associations in GPT", ROME)
introduced causal tracing by restoring clean states into a corrupted run; this is the reverse
direction (noising the clean run), as in Wang et al. 2024 ("Grokked transformers are implicit
reasoners", arXiv 2405.15071, sections 3 and 4), who measure the change of the target's rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from circuits._checks import is_int, unpadded
from circuits._hooks import overflow_checked
from circuits._residual import check_model, check_positions, check_targets, check_tokens, state_names, \
    target_ranks

__all__ = ["CausalTrace", "causal_trace"]

METRICS = ("rank", "logit")


@dataclass(frozen=True)
class CausalTrace:
    """Result of :func:`causal_trace`: float tensors of the metric (``"rank"`` or ``"logit"``).

    ``clean``, ``corrupted`` (batch,): the metric on the two inputs; ``patched`` (batch,
    n_layers + 1, len(positions)): with one state patched; ``positions``: the positions patched.
    """

    metric: str
    clean: torch.Tensor
    corrupted: torch.Tensor
    patched: torch.Tensor
    positions: tuple[int, ...]

    @property
    def change(self) -> torch.Tensor:
        """``patched - clean`` (batch, n_layers + 1, positions)."""
        return self.patched - self.clean[:, None, None]

    def mean_change(self) -> torch.Tensor:
        """Mean over the batch of :attr:`change`: (n_layers + 1, positions), the heatmap."""
        return self.change.mean(0)


def causal_trace(model: HookedTransformer, tokens: torch.Tensor, corrupted: torch.Tensor,
                 target: torch.Tensor | int, read_position: int | torch.Tensor = -1,
                 positions: list[int] | int | None = None, metric: str = "rank") -> CausalTrace:
    """Patch each (state, position) of the clean run with the corrupted run's; measure the target.

    Args:
        model: any ``HookedTransformer``; its own hooked forward runs the patched inputs.
        tokens, corrupted: int64 (batch, pos) of the same shape, ids in ``[0, d_vocab)``.
        target: id(s) in ``[0, d_vocab_out)``: an int or a (batch,) tensor.
        read_position: where the target is read: an int (negative counts from the end) or a
            (batch,) tensor of positions.
        positions: positions to patch (default all).
        metric: ``"rank"`` (1-based rank of the target) or ``"logit"`` (its logit).

    One forward per state over the batch repeated once per patched position. Raises
    ``TypeError``/``ValueError`` (one line) for mismatched shapes, ids outside the vocabularies,
    positions outside the sequence or an unknown metric.
    """
    model = check_model(model)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    tokens = check_tokens(model, tokens)
    corrupted = check_tokens(model, corrupted, "corrupted")
    if corrupted.shape != tokens.shape:
        raise ValueError(f"corrupted must have the shape of tokens {tuple(tokens.shape)}, got "
                         f"{tuple(corrupted.shape)}")
    batch, n_pos = tokens.shape
    target = check_targets(model, target, (batch,))
    read = _read_positions(read_position, batch, n_pos).to(tokens.device)
    pos = check_positions(positions, n_pos)
    names = state_names(model)
    rows = torch.arange(batch, device=tokens.device)

    def measure(logits: torch.Tensor, reps: int = 1) -> torch.Tensor:
        at = logits[torch.arange(logits.shape[0], device=logits.device), read.repeat(reps)]
        tgt = target.repeat(reps)
        if metric == "rank":
            return target_ranks(at, tgt).double()
        return at.gather(-1, tgt[:, None])[:, 0].double()

    patch_rows = torch.arange(batch * len(pos), device=tokens.device)
    patch_cols = torch.tensor(pos, device=tokens.device).repeat_interleave(batch)
    with torch.inference_mode(), overflow_checked(model):
        clean = measure(model(tokens, attention_mask=unpadded(tokens)))
        corrupted_logits, cache = model.run_with_cache(corrupted, names_filter=lambda name: name in names,
                                                     attention_mask=unpadded(corrupted))
        corrupt = measure(corrupted_logits)
        repeated = tokens.repeat(len(pos), 1)
        patched = []
        for name in names:
            source = cache[name][rows.repeat(len(pos)), patch_cols]  # (batch * P, d_model)

            def hook(resid, hook, source=source):
                resid = resid.clone()
                resid[patch_rows, patch_cols] = source
                return resid

            logits = model.run_with_hooks(repeated, fwd_hooks=[(name, hook)], attention_mask=unpadded(repeated))
            patched.append(measure(logits, len(pos)).view(len(pos), batch).T)
    return CausalTrace(metric, clean.cpu(), corrupt.cpu(), torch.stack(patched, dim=1).cpu(), tuple(pos))


def _read_positions(read_position: object, batch: int, n_pos: int) -> torch.Tensor:
    if isinstance(read_position, torch.Tensor):
        if read_position.dtype == torch.bool or read_position.is_floating_point() \
                or tuple(read_position.shape) != (batch,):
            raise ValueError(f"read_position must be an int or an integer tensor of shape ({batch},), got "
                             f"{read_position.dtype} of shape {tuple(read_position.shape)}")
        values = read_position.tolist()
    elif is_int(read_position):
        values = [int(read_position)] * batch
    else:
        raise TypeError(f"read_position must be an int or a tensor, got {type(read_position).__name__}")
    return torch.tensor(check_positions(values, n_pos, "read_position"), dtype=torch.long)  # moved by the caller
