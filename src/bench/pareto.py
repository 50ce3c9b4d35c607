"""The Pareto front of accuracy (higher is better) against parameter count (lower is better), as plain records."""
from __future__ import annotations

from typing import Any


def pareto_front(rows: list[dict[str, Any]], metric: str = "val_accuracy", cost: str = "n_params") -> list[dict[str, Any]]:
    """Rows no other row dominates (at least as accurate and at most as large, strictly better in one), by cost.

    Rows missing either value are ignored; of exact ties the first is kept.
    """
    scored = [r for r in rows if r.get(metric) is not None and r.get(cost) is not None]
    scored.sort(key=lambda r: (r[cost], -r[metric]))
    front, best = [], float("-inf")
    for r in scored:  # by cost ascending: a row is on the front iff it beats every cheaper row's accuracy
        if r[metric] > best:
            front.append(r)
            best = r[metric]
    return front


def nondominated_ranks(points: list[tuple[float, float]]) -> list[int]:
    """Front number of each (accuracy, cost) point by non-dominated sorting (0 = the Pareto front), as in NSGA-II."""
    n = len(points)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i, (ai, ci) in enumerate(points):
        for j, (aj, cj) in enumerate(points):
            if ai >= aj and ci <= cj and (ai > aj or ci < cj):
                dominates[i].append(j)
                dominated_by[j] += 1
    ranks, front, rank = [0] * n, [i for i in range(n) if dominated_by[i] == 0], 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        front, rank = nxt, rank + 1
    return ranks


def pareto_promotable(me: int, points: list[tuple[float, float]], reduction_factor: int) -> bool:
    """Successive halving with a Pareto promotion rule (like MOASHA): of the trials that reached a rung, the best
    1/reduction_factor by (front number, then accuracy) go on. points[me] is this trial's (accuracy, cost).

    Two rules keep the budget on models worth training further:
    - only a trial at least as accurate as the rung's median competes, so the smallest near-chance models (always on
      the front: nothing is smaller) are not promoted for their size alone;
    - while a rung holds fewer than reduction_factor trials, a trial goes on only by beating every trial already there
      (in the first rounds, the space's start point); a rung's first trial never does. Optuna's successive halving
      promotes it: without start points, that sent the first three trials of a 20-minute MIT8 search to the full
      budget (val 0.155, 0.565, 0.739), TPE then counted them among its good trials, and the search's best was val
      0.739 against 0.827 without that rule (benchmarks/bench_main_job.py --arms no-start, seed 0).
    """
    keep = len(points) // reduction_factor
    if keep == 0:
        return len(points) > 1 and all(points[me][0] > a for i, (a, _) in enumerate(points) if i != me)
    median = sorted(a for a, _ in points)[len(points) // 2]
    ranks = nondominated_ranks(points)
    candidates = [i for i in range(len(points)) if points[i][0] >= median]
    order = sorted(candidates, key=lambda i: (ranks[i], -points[i][0], points[i][1]))
    return me in order[:keep]


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (accuracy up, cost down) points, bounded by reference = (lowest accuracy, highest cost).

    Sweeps by cost: each slab between consecutive costs counts the best accuracy reached at or below that cost."""
    ref_acc, ref_cost = reference
    front = sorted((c, a) for a, c in points if a > ref_acc and c < ref_cost)
    edges = [c for c, _ in front] + [ref_cost]
    area, best = 0.0, ref_acc
    for i, (cost, acc) in enumerate(front):
        best = max(best, acc)
        area += (best - ref_acc) * (edges[i + 1] - cost)
    return area
