"""Which pruning rule finds a good model soonest? Replayed on trials already run to the end; nothing trains.

    python benchmarks/replay_pruning.py --results DIR [--results DIR ...] --study NAME [--study NAME ...]
                                        [--budget 1200] [--replays 300]

A search of one job runs trials one after another; a pruner stops each at a rung unless it is promising. Given
complete trials that ran every epoch (a random, unpruned study: `bench search tinynet --sampler random --pruner none`,
or a keras-tuner RandomSearch one), this replays a search on them: each replay draws trials at random, with
replacement, from that pool, and runs each until the rule stops it, paying the seconds its history recorded up to that
epoch (build, tracing and validation included) plus --gap seconds between trials. Rules differ in their rungs, how
many go on (1/reduction), and the signal judged at a rung. The rule's promotion decision is bench's own
(bench.pareto.pareto_promotable, on (signal, params)). Per rule it prints the medians over replays: trials run,
trials complete, the best final validation accuracy among the complete ones at --budget seconds, and the seconds until
a complete trial first reached each --targets value (the share of replays that reached it in brackets).

A replay draws at random: it judges the pruner, not a sampler that learns from what it has seen (TPE would draw
better trials as the search goes on, the same for every rule).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

from bench.backends.optuna import PARETO_REDUCTION, PARETO_RUNGS
from bench.leaderboard import Leaderboard, db_url
from bench.pareto import pareto_promotable

from rung_signal import SIGNALS, full_histories

SIGNALS = {**SIGNALS,
           "mean of the last 2 val": lambda h, e: statistics.mean(h["val_accuracy"][max(0, e - 2):e]),
           # rung_signal.py: train accuracy ranks final val poorly at epoch 1 but best at epochs 3 and 9
           "val at epoch 1, train accuracy after": lambda h, e: h["val_accuracy"][0] if e == 1 else h["accuracy"][e - 1]}

# name: (rungs, reduction factor, signal); reduction None = no pruning. The first pruned rule is bench's default.
RULES = {
    "no pruning (random search)": ((), None, "val accuracy"),
    "default: rungs 1/3/9, a quarter on": (PARETO_RUNGS[:3], PARETO_REDUCTION, "val accuracy"),
    "rungs 1/3/9, a third on": ((1, 3, 9), 3, "val accuracy"),
    "rungs 1/3/9, a half on": ((1, 3, 9), 2, "val accuracy"),
    "rungs 1/4/16, a quarter on": ((1, 4, 16), 4, "val accuracy"),
    "rungs 3/9, a quarter on": ((3, 9), 4, "val accuracy"),
    "rungs 1/3/9, quarter, best val so far": ((1, 3, 9), 4, "best val accuracy so far"),
    "rungs 1/3/9, quarter, mean of last 2 val": ((1, 3, 9), 4, "mean of the last 2 val"),
    "rungs 1/3/9, quarter, train accuracy": ((1, 3, 9), 4, "train accuracy"),
    "rungs 1/3/9, quarter, val then train acc": ((1, 3, 9), 4, "val at epoch 1, train accuracy after"),
}


def replay(pool: list[tuple[dict, dict]], rule: tuple, budget: float, gap: float, rng: random.Random) -> dict:
    """One search under `rule` on trials drawn from pool: (trials run, complete, best final val, finish times)."""
    rungs, reduction, signal_name = rule
    signal = SIGNALS[signal_name]
    at_rung: dict[int, list[tuple[float, int]]] = {r: [] for r in rungs}
    clock, trials, finished = 0.0, 0, []  # finished: (seconds, final val) of each complete trial
    while clock < budget:
        row, history = rng.choice(pool)
        trials += 1
        stop = len(history["val_accuracy"])
        for r in rungs:
            if r >= stop:
                break
            at_rung[r].append((signal(history, r), row["n_params"]))
            if not pareto_promotable(len(at_rung[r]) - 1, at_rung[r], reduction_factor=reduction):
                stop = r
                break
        clock += history["seconds"][stop - 1] + gap
        if stop == len(history["val_accuracy"]) and clock <= budget:
            finished.append((clock, history["val_accuracy"][-1]))
    best = max((v for _, v in finished), default=0.0)
    return {"trials": trials, "complete": len(finished), "best": best, "finished": finished}


def first_reaching(finished: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, v in finished if v >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", action="append", required=True,
                        help="a results folder whose leaderboard holds some of the studies (repeatable)")
    parser.add_argument("--study", action="append", required=True, help="a study of complete trials (repeatable)")
    parser.add_argument("--budget", type=float, default=1200, help="seconds of each replayed search (default 1200)")
    parser.add_argument("--replays", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.4, help="seconds between trials (bench's worker start)")
    parser.add_argument("--targets", default="0.80,0.85,0.88")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    boards = [Leaderboard(db_url(None, Path(folder))) for folder in args.results]
    pool = [trial for board in boards for study in args.study for trial in full_histories(board, study)]
    lengths = {len(h["val_accuracy"]) for _, h in pool}
    if len(pool) < 10 or len(lengths) != 1:
        sys.exit(f"need at least 10 complete trials of one length; {args.study} hold {len(pool)} of lengths {sorted(lengths)}")
    targets = [float(t) for t in args.targets.split(",")]
    finals = sorted(h["val_accuracy"][-1] for _, h in pool)
    print(f"pool: {len(pool)} complete trials of {lengths.pop()} epochs from {', '.join(args.study)}; final val median "
          f"{statistics.median(finals):.3f}, best {finals[-1]:.3f}, {sum(v >= targets[-1] for v in finals)} at or above "
          f"{targets[-1]}; {args.replays} replays of {args.budget:.0f} s each, medians")
    header = f"{'rule':<42}{'trials':>7}{'complete':>9}{'best val':>9}" + "".join(f"{'first ' + str(t):>16}" for t in targets)
    print(header)
    for name, rule in RULES.items():
        # replay i of every rule draws the same trials in the same order
        runs = [replay(pool, rule, args.budget, args.gap, random.Random(f"{args.seed}-{i}")) for i in range(args.replays)]
        cells = []
        for t in targets:
            times = [first_reaching(r["finished"], t) for r in runs]
            reached = [x for x in times if x is not None]
            median = statistics.median([x if x is not None else float("inf") for x in times])
            shown = "never" if median == float("inf") else f"{median:.0f} s"
            cells.append(f"{shown} ({len(reached) / len(runs):.0%})")
        print(f"{name:<42}{statistics.median(r['trials'] for r in runs):>7.0f}"
              f"{statistics.median(r['complete'] for r in runs):>9.0f}{statistics.median(r['best'] for r in runs):>9.3f}"
              + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
