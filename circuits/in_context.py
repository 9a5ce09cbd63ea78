"""Per-token loss and the in-context learning score of Olsson et al. 2022, on any HookedTransformer.

Definitions, ranges and tests: ``docs/scores.md`` ("Text detector").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from circuits._checks import check_model, check_tokens, is_int, positive_int, unpadded, vocab_out
from circuits._hooks import overflow_checked
from circuits._parallel import threads_for

__all__ = ["DEFAULT_EARLY", "DEFAULT_LATE", "icl_score_from_losses", "in_context_learning_score", "per_token_loss"]

#: Olsson et al.'s 50th and 500th tokens, read as the indices 50 and 500: with BOS at index 0 (the
#: text task) the 50th and 500th byte of the text; in a context without BOS, its 51st and 501st token.
DEFAULT_EARLY = 50
DEFAULT_LATE = 500
#: Largest attention pattern (sequences x heads x positions^2) per forward pass: small chunks
#: keep the allocations reusable (4 s for the 256 held-out contexts of a text run, 11 s at 1 << 24).
_CHUNK_ELEMENTS = 1 << 21


def _zero_heads(heads: list[tuple[int, int]]) -> list[tuple[str, object]]:
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def hook_for(layer_heads: list[int]):
        def hook(z: torch.Tensor, hook: object) -> torch.Tensor:
            z[:, :, layer_heads] = 0.0
            return z

        return hook

    return [(f"blocks.{layer}.attn.hook_z", hook_for(hs)) for layer, hs in sorted(by_layer.items())]


def _check_heads(model: HookedTransformer, ablate: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    entries = list(ablate) if isinstance(ablate, Iterable) else [ablate]
    wrong = [e for e in entries if not (isinstance(e, (tuple, list)) and len(e) == 2 and all(map(is_int, e)))]
    if wrong:
        raise ValueError(f"ablate must be (layer, head) pairs of ints, such as [(0, 1)]; got {wrong[0]!r} in it")
    heads = [(int(layer), int(head)) for layer, head in entries]
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    bad = [(la, h) for la, h in heads if not (0 <= la < n_layers and 0 <= h < n_heads)]
    if bad:
        raise ValueError(f"heads {bad} are not in the model ({n_layers} layers x {n_heads} heads)")
    return heads


@torch.inference_mode()
def per_token_loss(
    model: HookedTransformer, tokens: torch.Tensor, *, ablate: Iterable[tuple[int, int]] = ()
) -> torch.Tensor:
    """Next-token loss at every position: float tensor ``(batch, pos - 1)``, nats.

    ``loss[b, t - 1] = -ln p(tokens[b, t] | tokens[b, :t])``: column ``t - 1`` is the loss of the
    token at index ``t`` (``t = 1 .. pos - 1``), predicted at position ``t - 1``. Range
    ``[0, inf)``; ``ln d_vocab_out`` for a uniform prediction. ``ablate`` lists ``(layer, head)``
    pairs whose output is zero-ablated (their ``attn.hook_z`` set to 0; hooks are temporary). The
    forward runs in chunks of sequences so the attention patterns stay small. ``tokens``: integer
    ``(batch, pos)`` with ``2 <= pos <= n_ctx`` and ids in the vocabulary; the predicted ids must
    also be below ``d_vocab_out``.
    """
    model = check_model(model)
    tokens, _ = check_tokens(model, tokens, repeated=False)
    if int(tokens[:, 1:].max()) >= vocab_out(model):
        raise ValueError(f"token ids to predict must be below d_vocab_out={vocab_out(model)}, "
                         f"got up to {int(tokens[:, 1:].max())}")
    hooks = _zero_heads(_check_heads(model, ablate))
    batch, pos = tokens.shape
    per_pass = max(1, _CHUNK_ELEMENTS // (int(model.cfg.n_heads) * pos * pos))
    out = []
    with threads_for(model.cfg, tokens), overflow_checked(model):
        for start in range(0, batch, per_pass):
            chunk = tokens[start : start + per_pass]
            logits = model.run_with_hooks(chunk, fwd_hooks=hooks, attention_mask=unpadded(chunk))
            logits = logits[:, :-1].float()
            out.append(F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none"))
    return torch.cat(out).cpu()


def icl_score_from_losses(losses: torch.Tensor, early: int = DEFAULT_EARLY, late: int = DEFAULT_LATE) -> float:
    """``mean_b losses[b, late - 1] - mean_b losses[b, early - 1]``: the score of per-token losses.

    ``losses`` has the layout of :func:`per_token_loss` (column ``t - 1`` = the token at index
    ``t``). Needs at least one sequence and ``1 <= early < late <= losses.shape[1]``. NaN losses
    are ignored in each mean (NaN where a column holds nothing else).
    """
    if not isinstance(losses, torch.Tensor) or losses.ndim != 2 or not losses.is_floating_point() \
            or losses.shape[0] < 1:
        raise ValueError(f"losses must be a (batch >= 1, pos - 1) floating tensor, got "
                         f"{getattr(losses, 'dtype', type(losses).__name__)} {tuple(getattr(losses, 'shape', ()))}")
    early, late = positive_int("early", early), positive_int("late", late)
    if not 1 <= early < late <= losses.shape[1]:
        raise ValueError(f"need 1 <= early < late <= {losses.shape[1]} (the tokens scored), got early={early}, "
                         f"late={late}")
    return float(losses[:, late - 1].double().nanmean() - losses[:, early - 1].double().nanmean())


def in_context_learning_score(
    model: HookedTransformer,
    tokens: torch.Tensor,
    early: int = DEFAULT_EARLY,
    late: int = DEFAULT_LATE,
    *,
    ablate: Iterable[tuple[int, int]] = (),
) -> float:
    """Olsson et al.'s in-context learning score: loss of the token at index ``late`` minus that at ``early``, nats.

    ``score = mean_b L(b, late) - mean_b L(b, early)`` with ``L(b, t) = -ln p(tokens[b, t] |
    tokens[b, :t])``, the loss of the token at index ``t`` of each context (index 0 is the first
    token, BOS for the text task). Negative: later tokens are predicted better, the model uses its
    context; about 0 for a model that ignores it. Range ``(-inf, inf)``; Olsson et al. report
    about -0.4 nats for small models after the induction phase change (their 50th and 500th
    tokens, :data:`DEFAULT_EARLY` and :data:`DEFAULT_LATE` here: indices 50 and 500, which behind
    BOS are the 50th and 500th token of the text). Paper: Olsson et al. 2022, "In-context learning and induction heads".
    Only positions ``0 .. late`` are run. Raises ``ValueError`` when the model's ``n_ctx`` or the
    tokens are shorter than ``late + 1``, or when ``early`` and ``late`` are not ``1 <= early <
    late``. ``ablate`` zero-ablates heads as in :func:`per_token_loss`.
    """
    model = check_model(model)
    early, late = positive_int("early", early), positive_int("late", late)
    if not 1 <= early < late:
        raise ValueError(f"need 1 <= early < late, got early={early}, late={late}")
    n_ctx = int(model.cfg.n_ctx)
    if n_ctx < late + 1:
        raise ValueError(f"the model's context n_ctx={n_ctx} is shorter than late + 1 = {late + 1} tokens "
                         f"(the token at index {late} needs {late} before it)")
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.ndim != 2 or tokens.shape[1] < late + 1:
        raise ValueError(f"tokens must be (batch, pos) with pos >= late + 1 = {late + 1}, "
                         f"got shape {tuple(getattr(tokens, 'shape', ()))}")
    losses = per_token_loss(model, tokens[:, : late + 1], ablate=ablate)
    return icl_score_from_losses(losses, early, late)
