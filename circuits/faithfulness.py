"""Circuits from edge scores, and how faithful they are.

Definition (docs/scores.md, "Edge attribution"). A circuit is a set of edges of the graph of
:func:`circuits.edge_attribution`, usually the top edges by ``|score|`` (:func:`top_edges`).
Running the circuit means running the clean input with every edge *outside* it patched from the
corrupted run (each input then reads, from a circuit edge, what its source writes in this run,
and from any other edge what the source wrote on the corrupted run). Its faithfulness is

    faithfulness = (m(circuit) - m(corrupted)) / (m(clean) - m(corrupted))

1 when the circuit alone keeps the metric at its clean value, 0 when it does no better than the
corrupted run; it can leave [0, 1] (a circuit without an edge that worked against the behaviour
does better than the whole model). The empty circuit gives 0 and the whole graph 1.

An edge of a circuit that lies on no path from ``embed`` to ``logits`` inside the circuit cannot
change its run: a node with no circuit edge in (other than ``embed``) reads only corrupted values
and so writes its corrupted output, the same value a patched edge carries; a node with no circuit
edge out (other than ``logits``) is read only through patched edges. :func:`prune_circuit` drops
such edges, leaving the faithfulness as it was (up to rounding), and :func:`smallest_circuit`
returns its circuit pruned (the EAP-IG code of Hanna et al. 2024 prunes the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from circuits._edge_graph import EDGE_COLUMNS, Graph, build_graph, check_edge_model, check_pair, metric_number, \
    run_sources
from circuits._checks import is_int, is_real
from circuits._edge_patching import patched_metrics
from circuits._hooks import overflow_checked
from circuits.edge_attribution import edge_attribution

__all__ = ["CircuitMetrics", "FoundCircuit", "circuit_faithfulness", "circuit_metrics", "faithfulness_curve",
           "prune_circuit", "smallest_circuit", "top_edges"]


def top_edges(scores: pd.DataFrame, k: int | None = None, threshold: float | None = None) -> pd.DataFrame:
    """The edges of ``scores`` by decreasing ``|score|`` (ties keep their order): the first ``k``,
    those with ``|score| >= threshold``, or both conditions at once; all edges when neither is given.
    """
    missing = [c for c in [*EDGE_COLUMNS, "score"] if c not in getattr(scores, "columns", ())]
    if missing:
        raise ValueError(f"scores must be a DataFrame with columns source, target, input, score; missing {missing}")
    if k is not None and (not is_int(k) or k < 0):
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    if threshold is not None and (not is_real(threshold) or np.isnan(threshold)):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    _check_scores(scores)
    ranked = scores.iloc[np.argsort(-scores["score"].abs().to_numpy(), kind="stable")]
    if threshold is not None:
        ranked = ranked[ranked["score"].abs() >= threshold]
    if k is not None:
        ranked = ranked.iloc[:k]
    return ranked.reset_index(drop=True)


def _check_scores(scores: pd.DataFrame) -> None:
    """``ValueError`` (one line) for scores that are not finite numbers, or an edge scored twice: NaN
    ranked in table order and a doubled edge counted twice in a circuit's size."""
    values = pd.to_numeric(scores["score"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if not np.isfinite(values).all():
        raise ValueError(f"scores must be finite numbers; {int((~np.isfinite(values)).sum())} of {len(values)} "
                         "are not (NaN, infinite or not numbers)")
    doubled = scores[EDGE_COLUMNS].duplicated()
    if doubled.any():
        s, t, i = scores.loc[doubled, EDGE_COLUMNS].iloc[0]
        raise ValueError(f"scores hold the edge {s} -> {t}{'.' + i if i else ''} more than once: one row per edge")


def prune_circuit(edges: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``edges`` (columns source, target, input, and any others) that lie on a path from
    ``embed`` to ``logits`` made of ``edges``, in their order; the others cannot change the
    circuit's run (module docstring)."""
    missing = [c for c in EDGE_COLUMNS if c not in getattr(edges, "columns", ())]
    if missing:
        raise ValueError(f"edges must be a DataFrame with columns source, target, input; missing {missing}")
    pairs = list(zip(edges["source"], edges["target"]))
    fed, used = _closure({"embed"}, pairs), _closure({"logits"}, [(t, s) for s, t in pairs])
    keep = [s in fed and t in used for s, t in pairs]
    return edges.iloc[np.flatnonzero(keep)].reset_index(drop=True)  # a list would pick columns when empty


def _closure(start: set[str], arrows: list[tuple[str, str]]) -> set[str]:
    """The nodes reachable from ``start`` along ``arrows`` (from, to)."""
    reached, grew = set(start), True
    while grew:
        new = {b for a, b in arrows if a in reached} - reached
        reached |= new
        grew = bool(new)
    return reached


def circuit_faithfulness(model: HookedTransformer, edges: pd.DataFrame | Iterable[Sequence[str]],
                         clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                         metric: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Faithfulness of the circuit made of ``edges`` (module docstring).

    ``edges``: a DataFrame with columns source, target, input (as :func:`circuits.edge_attribution`
    returns, or :func:`top_edges`), or (source, target, input) tuples; ``input`` is ``q``, ``k``,
    ``v`` or ``""`` (a 2-tuple means ``""``). Raises ``ValueError`` naming an edge the model's graph
    lacks, and when the clean and corrupted runs give the same metric (faithfulness undefined).
    """
    curve = _curve(model, [edges], clean_tokens, corrupted_tokens, metric)
    return float(curve["faithfulness"].iloc[0])


@dataclass(frozen=True)
class CircuitMetrics:
    """The metric on the ``clean`` run, the ``corrupted`` run and the ``circuit``'s run (the clean
    input with every edge outside the circuit patched from the corrupted run), as floats."""

    clean: float
    corrupted: float
    circuit: float

    @property
    def faithfulness(self) -> float:
        """``(circuit - corrupted) / (clean - corrupted)`` (module docstring); NaN where the clean
        and corrupted runs give the same metric."""
        gap = self.clean - self.corrupted
        return (self.circuit - self.corrupted) / gap if gap else float("nan")


def circuit_metrics(model: HookedTransformer, edges: pd.DataFrame | Iterable[Sequence[str]],
                    clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                    metric: Callable[[torch.Tensor], torch.Tensor]) -> CircuitMetrics:
    """The three metrics faithfulness is made of, for the circuit of ``edges`` (as
    :func:`circuit_faithfulness` takes them): one clean, one corrupted and one patched forward.
    Defined where the faithfulness is not (clean and corrupted runs alike), so a circuit can be
    followed over checkpoints where the behaviour has not formed yet."""
    m_clean, m_corrupted, values = _metrics(model, [edges], clean_tokens, corrupted_tokens, metric)
    return CircuitMetrics(m_clean, m_corrupted, float(values[0]))


def faithfulness_curve(model: HookedTransformer, scores: pd.DataFrame, clean_tokens: torch.Tensor,
                       corrupted_tokens: torch.Tensor, metric: Callable[[torch.Tensor], torch.Tensor],
                       sizes: Iterable[int] | None = None) -> pd.DataFrame:
    """Faithfulness of the top-``k`` edges of ``scores`` by ``|score|`` for each ``k`` in ``sizes``.

    Default sizes: 0..16, then powers of two, then the whole graph. Returns a DataFrame with
    columns ``size``, ``faithfulness`` and ``metric`` (the circuit's metric), one row per size
    in increasing order. The circuits run as copies of the batch (one forward per chunk of them).
    """
    ranked = top_edges(scores)
    n = len(ranked)
    if sizes is None:
        sizes = sorted({*range(min(n, 16) + 1), *(2 ** j for j in range(n.bit_length()) if 2 ** j <= n), n})
    sizes = list(sizes) if isinstance(sizes, Iterable) else sizes  # sizes=10: named below, not a TypeError
    if not isinstance(sizes, list) or not sizes or not all(is_int(k) for k in sizes):
        raise ValueError(f"sizes must be one or more ints (circuit sizes), got {sizes!r}")
    sizes = sorted({int(k) for k in sizes})
    if sizes[0] < 0 or sizes[-1] > n:
        raise ValueError(f"sizes must lie in [0, {n}] (the number of scored edges), got {sizes[0]}..{sizes[-1]}")
    curve = _curve(model, [ranked.iloc[:k] for k in sizes], clean_tokens, corrupted_tokens, metric)
    curve.insert(0, "size", sizes)
    return curve


#: Graphs up to this many edges get every circuit size in :func:`smallest_circuit`'s curve.
EXHAUSTIVE_SIZES = 512


@dataclass(frozen=True)
class FoundCircuit:
    """What :func:`smallest_circuit` found: ``edges`` (source, target, input, score: the circuit,
    by decreasing ``|score|``, pruned), its ``faithfulness``, the ``curve`` it was read from (size,
    faithfulness, metric), every edge's ``scores`` and ``k``, the number of top edges it was cut
    from (``size <= k``: the pruned edges are the difference)."""

    edges: pd.DataFrame
    faithfulness: float
    curve: pd.DataFrame
    scores: pd.DataFrame
    k: int

    @property
    def size(self) -> int:
        return len(self.edges)


def smallest_circuit(model: HookedTransformer, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                     metric: Callable[[torch.Tensor], torch.Tensor], *, method: str = "eap-ig", target: float = 0.9,
                     scores: pd.DataFrame | None = None) -> FoundCircuit:
    """The smallest top-``k`` circuit (edges by ``|score|``) whose faithfulness is at least ``target``.

    Scores every edge with ``method`` (:func:`circuits.edge_attribution`; or takes ``scores``), then
    runs the faithfulness curve over every size ``k = 0..n`` and keeps the first ``k`` at or above
    ``target``, pruned (:func:`prune_circuit`: the same faithfulness). Graphs of more than :data:`EXHAUSTIVE_SIZES` edges get the default sizes of
    :func:`faithfulness_curve`, then a bisection between the last size below ``target`` and the
    first at or above it (faithfulness need not grow with ``k``, so there it finds a size whose
    predecessor on the bisection is below ``target``, not always the smallest). Nothing is told
    what to look for. The whole graph has faithfulness 1, so a circuit is always found for
    ``target <= 1``. Cost: the scores plus ``n + 1`` patched forwards (batched) for small graphs.
    """
    if not is_real(target) or not 0 < target <= 1:
        raise ValueError(f"target must be a number in (0, 1], got {target!r}")
    if scores is None:
        scores = edge_attribution(model, clean_tokens, corrupted_tokens, metric, method)
    n = len(scores)
    sizes = range(n + 1) if n <= EXHAUSTIVE_SIZES else None
    curve = faithfulness_curve(model, scores, clean_tokens, corrupted_tokens, metric, sizes=sizes)
    passing = curve[curve["faithfulness"] >= target]
    if sizes is None and not passing.empty:  # bisect between the last size below target and the first above
        high = int(passing["size"].iloc[0])
        below = curve[curve["size"] < high]["size"]
        low = int(below.iloc[-1]) if not below.empty else 0
        points = [curve]
        while high - low > 1:
            mid = (low + high) // 2
            point = faithfulness_curve(model, scores, clean_tokens, corrupted_tokens, metric, sizes=[mid])
            points.append(point)
            low, high = (low, mid) if float(point["faithfulness"].iloc[0]) >= target else (mid, high)
        curve = pd.concat(points).drop_duplicates("size").sort_values("size", ignore_index=True)
        passing = curve[(curve["faithfulness"] >= target) & (curve["size"] >= high)]
    if passing.empty:  # every scored edge below target: the whole graph up to rounding, else scores left some out
        best = float(curve["faithfulness"].iloc[-1])
        if best < target - 1e-6:
            raise ValueError(f"all {n} scored edges keep only faithfulness {best:.3g} < target {target:g}: the scores "
                             "must cover the graph (scores=None scores every edge)")
        passing = curve.iloc[[-1]]
    k = int(passing["size"].iloc[0])
    circuit = prune_circuit(top_edges(scores, k=k))
    return FoundCircuit(circuit, float(passing["faithfulness"].iloc[0]), curve, scores, k)


def _curve(model: HookedTransformer, circuits: list, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
           metric: Callable) -> pd.DataFrame:
    m_clean, m_corrupted, values = _metrics(model, circuits, clean_tokens, corrupted_tokens, metric)
    if m_clean == m_corrupted:
        raise ValueError(f"the clean and corrupted runs give the same metric ({m_clean:g}): faithfulness is undefined")
    return pd.DataFrame({"faithfulness": (values - m_corrupted) / (m_clean - m_corrupted), "metric": values})


def _metrics(model: HookedTransformer, circuits: list, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
             metric: Callable) -> tuple[float, float, np.ndarray]:
    """The metric of the clean run, of the corrupted run and of each circuit's run (float64)."""
    model = check_edge_model(model)
    clean, corrupted = check_pair(model, clean_tokens, corrupted_tokens)
    graph = build_graph(model)
    sets = np.stack([~_mask(graph, edges) & graph.upstream for edges in circuits])
    with overflow_checked(model), torch.no_grad():  # an overflowed attention row zeroed: finite, wrong metrics
        clean_logits = model(clean, attention_mask=torch.ones_like(clean))  # unpadded: _edge_graph.run_sources
        corrupted_logits, corrupted_out = run_sources(model, graph, corrupted)
    m_clean = metric_number(metric, clean_logits, "clean run")
    m_corrupted = metric_number(metric, corrupted_logits, "corrupted run")
    return m_clean, m_corrupted, np.asarray(patched_metrics(model, graph, clean, corrupted_out, sets, metric),
                                            dtype=np.float64)


def _mask(graph: Graph, edges: pd.DataFrame | Iterable[Sequence[str]]) -> np.ndarray:
    """Bool (n_sources, n_inputs): True on the given edges; an edge not in the graph is one error line."""
    if isinstance(edges, pd.DataFrame):
        missing = [c for c in EDGE_COLUMNS if c not in edges.columns]
        if missing:
            raise ValueError(f"edges must have columns source, target, input; missing {missing}")
        rows = [(s, t, _input_name(i)) for s, t, i in edges[EDGE_COLUMNS].itertuples(index=False)]
    else:
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
            raise ValueError(f"edges must be a DataFrame or a list of (source, target, input), got {edges!r:.80}")
        rows = []
        for edge in edges:
            if isinstance(edge, str) or len(edge) not in (2, 3):
                raise ValueError(f"an edge is (source, target, input) or (source, target), got {edge!r}")
            rows.append((edge[0], edge[1], _input_name(edge[2]) if len(edge) == 3 else ""))
    source_index = {name: s for s, name in enumerate(graph.sources)}
    input_index = {(target, kind): i for i, (target, kind, _, _) in enumerate(graph.inputs)}
    mask = np.zeros_like(graph.upstream)
    for source, target, kind in rows:
        s, i = source_index.get(source), input_index.get((target, kind))
        if s is None or i is None or not graph.upstream[s, i]:
            raise ValueError(f"edge {source} -> {target}{'.' + kind if kind else ''} is not an edge of this model")
        mask[s, i] = True
    return mask


def _input_name(value: object) -> object:
    """An edge's input as the graph names it: a missing value (None, NaN, ``pd.NA``, as a CSV round
    trip writes ``""``) is ``""``."""
    return "" if value is None or (np.ndim(value) == 0 and pd.isna(value)) else value

