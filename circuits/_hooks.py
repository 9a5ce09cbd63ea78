"""Each layer's attention pattern (and z) on a batch of tokens, reduced on the spot.

:func:`layer_means` is the one entry point of the head scores: it hands every layer's pattern
to a reduction and returns its batch mean per layer. Nothing is cached beyond the current
layer, so memory stays at one layer's pattern of one chunk of the batch.

Two paths compute the patterns. The fused path (:mod:`circuits._fused`) computes them straight
from the weights, for the architectures it reproduces, in parts of the batch that bound the
pass's memory, each layer's attention in cache-sized chunks of a part; parts and chunks depend
only on the batch and model shape, never on the thread count. Every other model takes its
hooked forward (:func:`run_attention_hooks`) on the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._checks import unpadded
from circuits._fused import fused_attention_layers, fused_supported, padded_length
from circuits._parallel import single_threaded, threads_for

__all__ = ["LayerCallback", "LayerReduce", "head_frame", "layer_means", "overflow_checked", "run_attention_hooks"]

#: ``callback(layer, pattern, z)``: pattern ``(batch, n_heads, q_pos, k_pos)``;
#: z ``(batch, pos, n_heads, d_head)`` or ``None`` when it was not asked for.
LayerCallback = Callable[[int, torch.Tensor, "torch.Tensor | None"], None]
#: ``reduce(layer, pattern, z, tokens)`` -> a tensor that is a mean over the sequences of
#: ``tokens`` (a chunk of the batch), e.g. ``(n_heads,)`` scores; arguments as in LayerCallback.
LayerReduce = Callable[[int, torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]

#: Attention-pattern numbers per part of the batch on the fused path (16 MiB of float32): each
#: part runs the whole pass, so this bounds its memory, activations included.
CHUNK_PATTERN_ELEMENTS = 1 << 22
#: Within a part small enough to run on one thread (:func:`circuits._parallel.single_threaded`),
#: each layer's attention runs in chunks of at most this many pattern numbers: 1 MiB, so that a
#: chunk's pattern stays in the core's L2 cache while it is normalised, read and reduced (the toy
#: model's head scores ~20 % faster than with its whole 4 MiB pattern at once). Larger parts run
#: each op on several threads, which small chunks would leave idle (a 4-layer d_vocab 5000 model:
#: 0.63 s in one chunk, 1.06 s in chunks of 1 MiB, measured on 2 threads), so they are one chunk.
CACHE_CHUNK_ELEMENTS = 1 << 18


def layer_means(
    model: HookedTransformer, tokens: torch.Tensor, reduce: LayerReduce, *, need_z: bool
) -> list[torch.Tensor]:
    """Per layer, the batch mean of ``reduce`` over ``tokens``: a list of ``n_layers`` CPU tensors.

    ``reduce`` returns a mean over the sequences it is given; on the fused path it sees chunks
    of the batch and the chunk means are combined weighted by chunk size, in chunk order. (Running
    the chunks on parallel threads was measured no faster on 2 cores: the ops are small and
    hold the interpreter between them.)
    """
    n_layers = int(model.cfg.n_layers)
    if not fused_supported(model):
        out: list[torch.Tensor | None] = [None] * n_layers

        def keep(layer: int, pattern: torch.Tensor, z: torch.Tensor | None) -> None:
            # TransformerLens sets a NaN pattern row to 0: it sums to 0, not 1 (to rounding, bfloat16's too)
            _check_finite(layer, "attention pattern", (pattern.float().sum(-1) - 1).abs().amax() < 0.05)
            out[layer] = _checked(layer, reduce(layer, pattern, z, tokens)).cpu()

        run_attention_hooks(model, tokens, keep, need_z=need_z)
        return out  # type: ignore[return-value]

    batch, length = tokens.shape
    per_seq = int(model.cfg.n_heads) * padded_length(length) ** 2  # pattern numbers per sequence
    n_parts = max(1, min(batch, -(-batch * per_seq // CHUNK_PATTERN_ELEMENTS)))
    sums: dict[int, torch.Tensor] = {}
    for part in tokens.tensor_split(n_parts):  # bounds the whole pass's memory, activations included
        small = single_threaded(model.cfg, part)
        chunk_seqs = max(1, CACHE_CHUNK_ELEMENTS // per_seq) if small else len(part)

        def add(layer: int, rows: slice, pattern: torch.Tensor, z: torch.Tensor | None) -> None:
            chunk = part[rows]
            value = _checked(layer, reduce(layer, pattern, z, chunk)) * len(chunk)
            sums[layer] = value if layer not in sums else sums[layer] + value

        with threads_for(model.cfg, part):
            fused_attention_layers(model, part, add, need_z=need_z, chunk_seqs=chunk_seqs)
    return [sums[layer].cpu() / batch for layer in range(n_layers)]


def _checked(layer: int, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a layer's reduction: NaN when its pattern or ``z`` was not finite), after checking
    it holds no NaN or infinity. Checking the small reduction, not the pattern or ``z``, costs nothing."""
    _check_finite(layer, "attention", torch.isfinite(value).all())
    return value


def _check_finite(layer: int, what: str, finite: torch.Tensor) -> None:
    if not bool(finite):
        raise _not_finite(layer, what)


def _not_finite(layer: int, what: str) -> ValueError:
    return ValueError(f"the forward pass is not finite: layer {layer}'s {what} holds NaN or infinity on these "
                      "tokens (finite weights whose activations overflow their dtype)")


@contextmanager
def overflow_checked(model: HookedTransformer) -> Iterator[None]:
    """``ValueError`` (one line) after the block when, in a forward run inside it, a layer's attention
    scores held NaN or +inf (or a row of -inf). TransformerLens sets the NaN rows of the pattern that follow to 0, so
    such a forward goes on with finite, wrong numbers: every loss read from it (a head ablated or
    not) would be a number, and no head would seem to matter."""
    bad: set[int] = set()

    def hook(scores: torch.Tensor, hook: object) -> None:
        # a row's max is NaN or +inf when the row holds one, -inf when it is all -inf: each a NaN row
        # of the pattern; one read-only pass (two elementwise checks of every score cost a fifth of
        # per_token_loss on 512-token contexts)
        if not bool(torch.isfinite(scores.amax(-1)).all()):
            bad.add(int(hook.layer()))  # type: ignore[attr-defined]

    names = [f"blocks.{layer}.attn.hook_attn_scores" for layer in range(int(model.cfg.n_layers))]
    with model.hooks(fwd_hooks=[(name, hook) for name in names]):
        yield
    if bad:
        raise _not_finite(min(bad), "attention")


class _Done(Exception):
    """Raised by the last layer's hook: nothing after the last attention layer is needed."""


def run_attention_hooks(
    model: HookedTransformer, tokens: torch.Tensor, callback: LayerCallback, *, need_z: bool
) -> None:
    """Run ``model``'s hooked forward once on ``tokens`` calling ``callback`` for every layer, in order.

    Small passes run on one intra-op thread (see :mod:`circuits._parallel`). The pass stops
    right after the last layer's attention (its MLP, the final norm and the unembedding are
    skipped). Hooks are temporary (``run_with_hooks`` removes them, also when the pass is cut
    short or fails); the model is unchanged.
    """
    n_layers = int(model.cfg.n_layers)
    patterns: dict[int, torch.Tensor] = {}

    def on_pattern(layer: int) -> Callable[[torch.Tensor, object], None]:
        def hook(pattern: torch.Tensor, hook: object) -> None:
            if need_z:
                patterns[layer] = pattern
                return
            callback(layer, pattern, None)
            if layer == n_layers - 1:
                raise _Done

        return hook

    def on_z(layer: int) -> Callable[[torch.Tensor, object], None]:
        def hook(z: torch.Tensor, hook: object) -> None:
            callback(layer, patterns.pop(layer), z)
            if layer == n_layers - 1:
                raise _Done

        return hook

    fwd_hooks: list[tuple[str, Callable[[torch.Tensor, object], None]]] = []
    for layer in range(n_layers):
        fwd_hooks.append((f"blocks.{layer}.attn.hook_pattern", on_pattern(layer)))
        if need_z:
            fwd_hooks.append((f"blocks.{layer}.attn.hook_z", on_z(layer)))
    try:
        with threads_for(model.cfg, tokens):
            model.run_with_hooks(tokens, return_type=None, stop_at_layer=n_layers, fwd_hooks=fwd_hooks,
                                 attention_mask=unpadded(tokens))
    except _Done:
        pass
    else:
        raise ValueError("the model's forward pass never reached the attention hooks of its last layer")


def head_frame(n_layers: int, n_heads: int, columns: Mapping[str, torch.Tensor | np.ndarray]) -> pd.DataFrame:
    """DataFrame with integer ``layer``, ``head`` and one column per ``(n_layers, n_heads)`` array.

    One row per head, sorted by (layer, head). Float tensors become float64, bool stay bool.
    """
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    data: dict[str, np.ndarray] = {"layer": layer.ravel().astype(np.int64), "head": head.ravel().astype(np.int64)}
    for name, values in columns.items():
        arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if arr.shape != (n_layers, n_heads):
            raise ValueError(f"column {name!r} has shape {arr.shape}, expected {(n_layers, n_heads)}")
        data[name] = arr.ravel() if arr.dtype == np.bool_ else arr.ravel().astype(np.float64)
    return pd.DataFrame(data)
