"""Sums of a head's direct logits over a vocabulary, without holding ``W_O W_U`` or a query's logits.

:func:`vocab_tile_sums` reads every id, tile by tile; :func:`estimated_sums` reads a fixed sample
of ids and the exact first two moments, for the copying score's denominator on a large vocabulary
(:func:`circuits.copying.copying_from_layer`; ``docs/scores.md``, "Copying on large vocabularies").
"""

from __future__ import annotations

import torch

from circuits._parallel import parallel_map

__all__ = ["estimated_sums", "vocab_tile_sums"]


def vocab_tile_sums(zq: torch.Tensor, w_o: torch.Tensor, w_u: torch.Tensor, chunk_elements: int,
                    moments: bool = False) -> torch.Tensor:
    """``(n_heads, rows)``: ``sum_v relu(l_v)``, ``l = zq[h, r] @ W_O[h] @ w_u``, over the columns of ``w_u``.

    ``moments=True``: ``(2, n_heads, rows)``, ``sum_v |l_v|`` and ``sum_v l_v ** 2`` instead.
    The columns are cut into fixed tiles of ``max(1, chunk_elements // rows)`` ids (rows cut too
    when ``chunk_elements < rows``); per tile, one product makes the tile's ``W_O W_U`` columns of
    every head and one per head (and chunk of rows) its logits, reduced at once. The tiles are
    shared out in contiguous runs to single-threaded workers
    (:func:`circuits._parallel.parallel_map`), each writing into buffers it allocates once (a
    fresh buffer per product costs page faults that were measured to double the product's time);
    the per-tile sums are added in tile order, so the result does not depend on the thread count.
    """
    n_heads, rows, d_head = zq.shape
    vocab = w_u.shape[-1]
    w_o_flat = w_o.reshape(-1, w_o.shape[-1])  # (n_heads * d_head, d_model)
    width = max(1, min(vocab, chunk_elements // rows))
    row_chunk = max(1, min(rows, chunk_elements // width))
    starts = list(range(0, vocab, width))
    n_runs = min(len(starts), torch.get_num_threads()) if zq.device.type == "cpu" else 1
    runs = [starts[i::n_runs] for i in range(n_runs)]
    n_sums = 2 if moments else 1

    def run_sums(run: list[int]) -> torch.Tensor:
        out = torch.empty(len(run), n_sums, n_heads, rows, dtype=torch.float32, device=zq.device)
        tile_buf = torch.empty(w_o_flat.shape[0] * width, dtype=torch.float32, device=zq.device)
        logit_buf = torch.empty(row_chunk * width, dtype=torch.float32, device=zq.device)
        for index, start in enumerate(run):
            cols = min(width, vocab - start)
            tile = torch.mm(w_o_flat, w_u[:, start : start + cols], out=tile_buf[: w_o_flat.shape[0] * cols].view(-1, cols))
            tile = tile.view(n_heads, d_head, cols)
            for head in range(n_heads):
                for r0 in range(0, rows, row_chunk):
                    r1 = min(rows, r0 + row_chunk)
                    logits = torch.mm(zq[head, r0:r1], tile[head], out=logit_buf[: (r1 - r0) * cols].view(-1, cols))
                    if moments:
                        torch.linalg.vector_norm(logits, ord=1, dim=-1, out=out[index, 0, head, r0:r1])
                        torch.linalg.vector_norm(logits, ord=2, dim=-1, out=out[index, 1, head, r0:r1])
                        out[index, 1, head, r0:r1].square_()
                    else:
                        torch.sum(logits.relu_(), dim=-1, out=out[index, 0, head, r0:r1])
        return out

    per_tile = torch.empty(len(starts), n_sums, n_heads, rows, dtype=torch.float32, device=zq.device)
    for i, sums in enumerate(parallel_map(run_sums, runs, device=zq.device)):
        per_tile[i::n_runs] = sums
    total = per_tile.sum(dim=0)
    return total if moments else total[0]


def estimated_sums(zq: torch.Tensor, w_o: torch.Tensor, maps, key_logits: torch.Tensor, tokens: torch.Tensor,
                   valid: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """``(n_heads, rows)``: an estimate of ``sum_v relu(l_v)`` over the whole vocabulary from ``maps.sample``.

    ``maps``: the :class:`circuits.copying.LayerLogitMaps` (``w_u``, ``sample``, ``w_u_sample``,
    ``gram``); ``key_logits``: ``(n_heads, batch, N, L)`` logits of each sequence's key tokens;
    ``valid``: ``(batch, L)``, the key ids that have an output logit; rows are ``batch x N``.

    Per query, the vocabulary splits into the sequence's distinct ids ``C`` (exact, from the key
    logits) and the rest ``R``. Since ``relu(l) = (l + |l|) / 2`` and ``w_u`` is centred over the
    vocabulary (``sum_V l = 0``), ``sum_R relu(l) = (-sum_C l + sum_R |l|) / 2``. The first two
    moments over ``R`` are exact: ``sum_R l ** 2 = x G x^T - sum_C l ** 2``, ``G = w_u w_u^T``.
    ``sum_R |l|`` is estimated from the sampled ids outside ``C`` (``m`` of them, means ``a1`` of
    ``|l|`` and ``a2`` of ``l ** 2``) as ``|R| * a1 * sqrt(mean_R(l ** 2) / a2)``: the sample's
    mean absolute logit, rescaled by the ratio of the exact to the sampled root mean square.
    The sample's share of the error that comes from the scale of ``l`` in the head's directions
    cancels; what is left comes from the shape of the distribution of ``l`` alone.
    """
    n_heads, batch, n, length = key_logits.shape
    earlier = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril(-1)
    keyed = torch.where(valid, tokens, -1)  # ids without an output logit match no real id
    repeat = ((keyed[:, :, None] == keyed[:, None, :]) & earlier).any(dim=-1)
    first = (valid & ~repeat)[None, :, None, :]  # each distinct id of a sequence once
    first_sampled = first & torch.isin(tokens, maps.sample)[None, :, None, :]

    def over(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum(dim=-1).reshape(n_heads, -1)

    context_relu, context_sum, context_sq = (over(first, key_logits.relu()), over(first, key_logits),
                                             over(first, key_logits.square()))
    sampled = vocab_tile_sums(zq, w_o, maps.w_u_sample, chunk_elements, moments=True)
    rest_abs = (sampled[0] - over(first_sampled, key_logits.abs())).clamp_min(0.0)
    rest_sq_sampled = (sampled[1] - over(first_sampled, key_logits.square())).clamp_min(0.0)
    quad = torch.einsum("hdm,mn,hen->hde", w_o, maps.gram, w_o)  # (n_heads, d_head, d_head)
    total_sq = (torch.bmm(zq, quad) * zq).sum(dim=-1)
    n_rest = (maps.w_u.shape[-1] - first.sum(dim=-1)).expand(1, batch, n).reshape(1, -1).to(zq.dtype)
    m_rest = (maps.sample.numel() - first_sampled.sum(dim=-1)).expand(1, batch, n).reshape(1, -1).clamp_min(1).to(zq.dtype)
    rest_sq = (total_sq - context_sq).clamp_min(0.0)
    rms_ratio = torch.where(rest_sq_sampled > 0,
                            (rest_sq / n_rest).sqrt() / (rest_sq_sampled / m_rest).clamp_min(1e-30).sqrt(), 0.0)
    rest_abs_estimate = n_rest * rest_abs / m_rest * rms_ratio
    return context_relu + ((rest_abs_estimate - context_sum) / 2).clamp_min(0.0)
