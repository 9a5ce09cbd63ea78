"""Copying scores: empirical on the probe (Olsson et al. 2022) and from OV eigenvalues (Elhage et al. 2021).

No function here materialises a ``d_vocab x d_vocab`` matrix. The empirical score needs, per
head and second-half query, the logits of the key tokens and the sum of the ReLU'd logits over
the whole vocabulary: a small layer's full logits at once (reading the attention pattern in
place); a large layer's key logits alone, and the sum over fixed tiles of the vocabulary, each
tile's ``W_O W_U`` columns made in the tile, at most ``chunk_elements`` logits per worker (one
worker per intra-op thread on the CPU, see :mod:`circuits._parallel`). Neither a layer's
``W_O W_U`` nor any query's full logits are held for a large layer. On a vocabulary more than
``SAMPLE_SAVING`` times ``vocab_sample`` (language models: GPT-2's 50,257 ids), the part of that
sum over the ids outside the sequence is estimated from a fixed uniform sample of the vocabulary
(:func:`copying_from_layer`; ``docs/scores.md``, "Copying on large vocabularies").
"""

from __future__ import annotations

import pandas as pd
import torch
from transformer_lens import HookedTransformer
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm

from circuits._checks import check_model, positive_int, vocab_out
from circuits._hooks import head_frame, layer_means
from circuits._vocab_tiles import estimated_sums, vocab_tile_sums
from circuits.probes import DEFAULT_N_SEQS, DEFAULT_SEED, resolve_probe

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "DEFAULT_VOCAB_SAMPLE",
    "SAMPLE_SAVING",
    "LayerLogitMaps",
    "copying_from_layer",
    "copying_scores",
    "head_logit_maps",
    "ov_copying_scores",
    "unembed_directions",
]

#: Float32 logits held at once by each CPU worker of the empirical copying score (1 MiB, so that a
#: chunk stays in one core's cache while it is reduced).
DEFAULT_CHUNK_ELEMENTS = 1 << 18
#: Layers whose logits and logit maps (all heads) hold at most this many numbers are done in one
#: batched chunk.
_SMALL_LAYER_ELEMENTS = 1 << 22
#: Vocabulary ids the empirical copying score's denominator reads on a large vocabulary (the
#: ids outside each sequence; see :func:`copying_from_layer`). ``None``: the whole vocabulary.
DEFAULT_VOCAB_SAMPLE = 2048
#: The sample is used only when the vocabulary holds more than this many times its size (so every
#: vocabulary up to 8,192 ids, at the default, is read whole; below that the saving is small).
SAMPLE_SAVING = 4
#: Seed of the vocabulary sample: the same ids for every layer, call and model of one vocabulary size.
_SAMPLE_SEED = 0


def unembed_directions(model: HookedTransformer) -> torch.Tensor:
    """``(d_model, d_vocab_out)`` float32 map from a head's write to its centred direct logits.

    The final norm's linear part is folded in (mean-centring over ``d_model`` for LayerNorm /
    LayerNormPre, the weight ``w`` for LayerNorm / RMSNorm); its per-position scale is left out,
    which the copying score does not see (it is invariant to positive rescaling per position).
    Columns are centred over the vocabulary, so ``x @ result`` is ``logits - logits.mean()``.
    """
    w_u = model.W_U.detach().float()
    norm = getattr(model, "ln_final", None)
    if isinstance(norm, (LayerNorm, RMSNorm)):
        w_u = norm.w.detach().float()[:, None] * w_u
    else:
        w_u = w_u.clone()  # a copy: the centring below is done in place
    if isinstance(norm, (LayerNorm, LayerNormPre)):
        w_u -= w_u.mean(dim=0, keepdim=True)
    return w_u.sub_(w_u.mean(dim=1, keepdim=True))


def _gram(w: torch.Tensor) -> torch.Tensor:
    """``w @ w.T``, the lower-left block copied from the upper-right (three products, not four)."""
    half = w.shape[0] // 2
    top, bottom = w[:half], w[half:]
    gram = torch.empty(w.shape[0], w.shape[0], dtype=w.dtype, device=w.device)
    torch.mm(top, top.T, out=gram[:half, :half])
    torch.mm(top, bottom.T, out=gram[:half, half:])
    torch.mm(bottom, bottom.T, out=gram[half:, half:])
    gram[half:, :half] = gram[:half, half:].T
    return gram


def head_logit_maps(w_o: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """``(n_heads, d_head, V)`` float32: the centred logits each head's ``z`` writes, ``W_O W_U``.

    ``w_o``: a layer's ``(n_heads, d_head, d_model)`` output weights; ``w_u``: the centred
    unembedding of :func:`unembed_directions`. As large as ``W_U``; computed once per layer.
    """
    return w_o.float() @ w_u


class LayerLogitMaps:
    """Per layer, what the copying score maps ``z`` with: ``W_O`` and, for small layers, ``W_O W_U``.

    ``maps.w_o(layer)``: the layer's ``(n_heads, d_head, d_model)`` float32 ``W_O``;
    ``maps[layer]``: its :func:`head_logit_maps`, the last one asked for kept. The fused path hands
    a layer's chunks over one after another, so each layer's maps are computed once per pass while
    only one layer's are held. Large layers never ask for the maps (see :func:`copying_from_layer`).
    """

    def __init__(self, model: HookedTransformer, vocab_sample: int | None = DEFAULT_VOCAB_SAMPLE) -> None:
        self.model = model
        self.w_u = unembed_directions(model)
        vocab = self.w_u.shape[-1]
        if vocab_sample is not None:
            vocab_sample = positive_int("vocab_sample", vocab_sample)
        #: The sampled vocabulary ids (sorted), their ``w_u`` columns and the Gram matrix
        #: ``w_u w_u^T`` of the whole vocabulary; all None when the whole vocabulary is read.
        self.sample: torch.Tensor | None = None
        self.w_u_sample: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        if vocab_sample is not None and vocab > SAMPLE_SAVING * vocab_sample:
            ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(_SAMPLE_SEED), device="cpu")
            ids = ids[:vocab_sample]
            self.sample = ids.sort().values.to(self.w_u.device)
            self.w_u_sample = self.w_u[:, self.sample].contiguous()
            self.gram = _gram(self.w_u)
        self._layer: int | None = None
        self._maps: torch.Tensor | None = None

    def w_o(self, layer: int) -> torch.Tensor:
        return self.model.blocks[layer].attn.W_O.detach().float()

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer != self._layer:
            self._maps = None  # freed before the next layer's are made
            self._maps = head_logit_maps(self.w_o(layer), self.w_u)
            self._layer = layer
        return self._maps


def copying_from_layer(
    pattern: torch.Tensor,
    z: torch.Tensor,
    maps: LayerLogitMaps,
    layer: int,
    tokens: torch.Tensor,
    half_len: int,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Empirical copying score of each head of one layer; shape ``(n_heads,)``, in [0, 1].

    Args:
        pattern: ``(batch, n_heads, L, L)`` attention pattern on ``[x0, r, r]``, ``L = 2N + 1``.
        z: ``(batch, L, n_heads, d_head)`` attention-weighted values (hook ``z``).
        maps: the model's :class:`LayerLogitMaps`; ``layer``: which layer.
        tokens: ``(batch, L)`` token ids.
        half_len: N.
        chunk_elements: logits held at once per task (default: the whole layer in one chunk when it
            and its maps have at most 2**22 numbers; else tiles of the vocabulary, 2**18 logits per
            single-threaded worker on the CPU, 2**24 elsewhere).

    At each second-half query ``q = N+1..2N`` the head's direct write ``z[q] @ W_O`` is mapped to
    logits ``l`` (centred over the vocabulary); ``w = relu(l) / sum(relu(l))`` (``w = 0`` when the
    head raises no logit); the position score is ``sum_k A[q, k] * w[x_k]`` and the head's score is
    its mean. Key tokens without an output logit (id >= V) count as ``w = 0``.

    Large layers never hold a layer's ``W_O W_U`` nor a query's full logits: the numerator needs
    the logits of the key tokens only, and the denominator ``sum relu(l)`` is accumulated over
    tiles of the vocabulary, each tile's ``W_O W_U`` columns made in the tile
    (:func:`circuits._vocab_tiles.vocab_tile_sums`).

    When ``maps.sample`` is set (a vocabulary more than :data:`SAMPLE_SAVING` times the sample),
    the denominator is split over the sequence's own distinct ids ``C``, read exactly from the key
    logits, and the rest ``R`` of the vocabulary, estimated from the sampled ids outside ``C``
    with the first two moments of ``l`` over ``R`` exact (see
    :func:`circuits._vocab_tiles.estimated_sums`). A head that copies puts its large logits on
    ``C``, which is exact; the estimate covers the many small logits of the rest.
    """
    batch, n_heads, length, _ = pattern.shape
    n = int(half_len)
    w_u = maps.w_u
    vocab = w_u.shape[-1]
    rows = batch * n
    device = z.device
    # The second-half queries: (n_heads, batch, N, L) attention (a view of float32 patterns) and
    # (n_heads, rows, d_head) z.
    attn = pattern[:, :, n + 1 :, :].transpose(0, 1).float()
    zq = z[:, n + 1 :].permute(2, 0, 1, 3).float().reshape(n_heads, rows, -1)
    valid = tokens < vocab
    if not bool(valid.all()):
        attn = attn * valid[None, :, None, :]
        tokens = tokens.clamp(max=vocab - 1)
    d_head = zq.shape[-1]
    small = maps.sample is None and n_heads * (rows + d_head) * vocab <= _SMALL_LAYER_ELEMENTS
    if chunk_elements is not None:
        chunk_elements = positive_int("chunk_elements", chunk_elements)
    else:
        chunk_elements = DEFAULT_CHUNK_ELEMENTS if device.type == "cpu" else 1 << 24
        if small:
            chunk_elements = max(chunk_elements, _SMALL_LAYER_ELEMENTS)
    if small and n_heads * rows * vocab <= chunk_elements:  # one chunk: the pattern is read in place
        logits = torch.bmm(zq, maps[layer]).view(n_heads, batch, n, vocab)
        keys = tokens[None, :, None, :].expand(n_heads, batch, n, length)
        return _position_scores(logits, keys, attn).sum(dim=(1, 2)) / rows
    w_o = maps.w_o(layer)
    # Numerator: the logits of each sequence's own key tokens, (n_heads, batch, d_head, L).
    key_maps = (w_o.reshape(-1, w_o.shape[-1]) @ w_u[:, tokens.flatten()]).view(n_heads, d_head, batch, length)
    key_logits = torch.matmul(zq.view(n_heads, batch, n, d_head), key_maps.transpose(1, 2))
    copied = (key_logits.relu() * attn).sum(dim=-1).reshape(n_heads, rows)
    if maps.sample is None:
        positive = vocab_tile_sums(zq, w_o, w_u, int(chunk_elements))
    else:
        positive = estimated_sums(zq, w_o, maps, key_logits, tokens, valid, int(chunk_elements))
    scores = torch.where(positive == 0, 0.0, copied / positive.clamp_min(torch.finfo(torch.float32).tiny))  # NaN stays
    return scores.sum(dim=-1) / rows


def _position_scores(logits: torch.Tensor, keys: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``sum_k A[k] * w[x_k]`` per query, ``w = relu(l) / sum(relu(l))`` (0 when no logit is positive).

    ``logits``: ``(..., V)`` (ReLU'd in place); ``keys``: ``(..., L)`` token ids; ``attn``: ``(..., L)``.
    """
    positive = logits.relu_().sum(dim=-1)  # the ReLU'd logits over the whole vocabulary
    copied = logits.gather(-1, keys).mul_(attn).sum(dim=-1)
    return torch.where(positive == 0, 0.0, copied / positive.clamp_min(torch.finfo(torch.float32).tiny))  # NaN stays


@torch.inference_mode()
def copying_scores(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int = DEFAULT_N_SEQS,
    half_len: int | None = None,
    seed: int = DEFAULT_SEED,
    chunk_elements: int | None = None,
    vocab_sample: int | None = DEFAULT_VOCAB_SAMPLE,
) -> pd.DataFrame:
    """Empirical copying score of every head on ``[x0, r, r]``: columns ``layer, head, score``.

    At each second-half query q the head's direct write ``z @ W_O`` is mapped to logits with
    ``W_U`` (through the final norm's linear part), the mean over the vocabulary is subtracted, a
    ReLU applied and the result normalised to sum 1, giving ``w``; the position score is
    ``sum_k A[q, k] * w[x_k]`` and the head score its mean over positions and the batch.
    Range [0, 1]: 1 = the head raises only the tokens it attends to; a head whose write is unrelated
    to what it attends to scores about ``1 / d_vocab_out``; an anti-copying head scores about 0.
    After the copying criterion of Olsson et al. 2022, "In-context learning and induction heads".
    One batched forward pass; logits are computed in bounded chunks of ``chunk_elements`` per worker.
    On a vocabulary of more than ``SAMPLE_SAVING * vocab_sample`` ids the denominator's part over
    the ids outside each sequence is estimated from ``vocab_sample`` fixed uniformly drawn ids
    (:func:`copying_from_layer`); ``vocab_sample=None`` reads the whole vocabulary.
    """
    model = check_model(model)
    tokens, n = resolve_probe(model, tokens, n_seqs, half_len, seed, repeated=True)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    maps = LayerLogitMaps(model, vocab_sample)

    def reduce(layer: int, pattern: torch.Tensor, z: torch.Tensor | None, chunk: torch.Tensor) -> torch.Tensor:
        assert z is not None
        return copying_from_layer(pattern, z, maps, layer, chunk, n, chunk_elements)

    out = torch.stack(layer_means(model, tokens, reduce, need_z=True))
    return head_frame(n_layers, n_heads, {"score": out})


def ov_copying_tensor(model: HookedTransformer) -> torch.Tensor:
    """``(n_layers, n_heads)`` float64 OV copying scores; see :func:`ov_copying_scores`."""
    vocab = min(int(model.cfg.d_vocab), vocab_out(model))
    w_e = model.W_E.detach()[:vocab]
    w_u = model.W_U.detach()[:, :vocab]
    if w_e.dtype not in (torch.float32, torch.float64):
        w_e, w_u = w_e.float(), w_u.float()
    unembed_embed = (w_u @ w_e).double()  # (d_model, d_model), no copy of the vocabulary-sized factors
    if not bool(torch.isfinite(unembed_embed).all()):  # finite weights whose product overflows float32
        unembed_embed = w_u.double() @ w_e.double()
    w_v = model.W_V.detach().double()
    w_o = model.W_O.detach().double()
    # W_O (W_U W_E) W_V is a cyclic permutation of W_E W_V W_O W_U: the same non-zero eigenvalues,
    # from a d_head x d_head matrix.
    circuit = w_o @ unembed_embed @ w_v
    if not bool(torch.isfinite(circuit).all()):
        raise ValueError("the OV circuits W_E W_V W_O W_U overflow float64: no OV copying score")
    eig = torch.linalg.eigvals(circuit)  # (n_layers, n_heads, d_head)
    total = eig.abs().sum(dim=-1)
    return torch.where(total > 0, eig.real.sum(dim=-1) / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


@torch.inference_mode()
def ov_copying_scores(
    model: HookedTransformer,
    tokens: torch.Tensor | None = None,
    *,
    n_seqs: int | None = None,
    half_len: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """OV-circuit copying score of every head from the weights: columns ``layer, head, score``.

    With ``lambda`` the eigenvalues of the full OV circuit ``W_E W_V W_O W_U`` (token to logit,
    biases and LayerNorm ignored; restricted to the ids that are both inputs and outputs),
    score = ``Re(sum lambda) / sum |lambda|``, in [-1, 1]: +1 = every eigenvalue real and positive
    (typical of a head that copies, though positive eigenvalues do not make every diagonal entry,
    a token's effect on its own logit, positive), -1 = every one negative (typical of suppression),
    ~0 = neither.
    Elhage et al. 2021, "A mathematical framework for transformer circuits". The eigenvalues come
    from the ``d_head x d_head`` product ``W_O (W_U W_E) W_V``, never a ``d_vocab x d_vocab``
    matrix. ``tokens`` and probe options are accepted for a uniform
    signature with the other detectors and ignored (weights only).
    """
    model = check_model(model)
    return head_frame(int(model.cfg.n_layers), int(model.cfg.n_heads), {"score": ov_copying_tensor(model)})
