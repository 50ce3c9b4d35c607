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
