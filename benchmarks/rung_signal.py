"""How well does what a trial shows after its first epochs rank how it ends? Read from a study already run; nothing trains.

    python benchmarks/rung_signal.py --results DIR --study NAME [--epochs 1,3,9] [--top 1]

A successive-halving pruner (pareto-asha's rungs: epochs 1, 3 and 9 of 20) keeps a trial only on what it shows at a
rung, so that signal decides what the search finds. The study's complete trials that ran every epoch (a keras-tuner
RandomSearch study is best: nothing in it was pruned, so its trials are an unbiased sample of the space) hold their
per-epoch history in the leaderboard. Per signal and epoch this prints the Spearman rank correlation with the final
validation accuracy, then where the --top best trials by final validation ranked at each of those epochs: a best
trial ranked below the kept quarter at any rung is one the pruner would have stopped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scipy.stats import spearmanr

from bench.leaderboard import Leaderboard, db_url

# Each signal: history, epoch (1-based) -> a number, higher is better.
SIGNALS = {
    "val accuracy": lambda h, e: h["val_accuracy"][e - 1],
    "best val accuracy so far": lambda h, e: max(h["val_accuracy"][:e]),
    "train accuracy": lambda h, e: h["accuracy"][e - 1],
    "train loss (lower)": lambda h, e: -h["loss"][e - 1],
    "val loss (lower)": lambda h, e: -h["val_loss"][e - 1],
}


def full_histories(board: Leaderboard, study: str) -> list[tuple[dict, dict]]:
    """(leaderboard row, history) of the study's complete trials whose history covers every epoch they ran."""
    rows = board.query(study=study, status="complete")
    keys = ("val_accuracy", "accuracy", "loss", "val_loss", "seconds")
    return [(row, row["extras"]["history"]) for row in rows
            if all(len((row["extras"] or {}).get("history", {}).get(key, [])) == row["epochs"] > 0 for key in keys)]


def rank(values: list[float], i: int) -> int:
    """1-based rank of values[i] among values, highest first."""
    return 1 + sum(v > values[i] for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="the results folder that holds the study's leaderboard")
    parser.add_argument("--study", required=True)
    parser.add_argument("--epochs", default="1,3,9", help="the rungs to judge (epochs, comma-separated)")
    parser.add_argument("--top", type=int, default=1, help="how many of the best trials to follow through the rungs")
    args = parser.parse_args()
    epochs = [int(e) for e in args.epochs.split(",")]
    board = Leaderboard(db_url(None, Path(args.results)))
    trials = full_histories(board, args.study)
    last = min((len(h["val_accuracy"]) for _, h in trials), default=0)
    if len(trials) < 5 or last < max(epochs):
        sys.exit(f"{args.study!r} in {args.results} has {len(trials)} complete trials with a full history "
                 f"(the shortest {last} epochs); need at least 5 that reach epoch {max(epochs)}")
    # judge each trial by its validation accuracy at the shortest trial's last epoch, so all end at the same point
    final = [h["val_accuracy"][last - 1] for _, h in trials]
    print(f"{len(trials)} complete trials of {args.study!r}; Spearman rank correlation with val accuracy at epoch {last}")
    print(f"{'signal':<26}" + "".join(f"{'epoch ' + str(e):>10}" for e in epochs))
    for name, signal in SIGNALS.items():
        cells = [spearmanr([signal(h, e) for _, h in trials], final)[0] for e in epochs]
        print(f"{name:<26}" + "".join(f"{c:>10.2f}" for c in cells))
    kept = max(1, len(trials) // 4)
    print(f"\nwhere the best ranked at each epoch (of {len(trials)}; a best-quarter rung keeps the top {kept})")
    for i in sorted(range(len(trials)), key=lambda j: -final[j])[:args.top]:
        number = trials[i][0]["trial_number"]
        cells = []
        for e in epochs:
            ranks = [rank([signal(h, e) for _, h in trials], i) for signal in SIGNALS.values()]
            cells.append("/".join(str(r) for r in ranks))
        print(f"trial {number} (final val {final[i]:.3f}), rank by " + " / ".join(SIGNALS) + ":")
        print("  " + "   ".join(f"epoch {e}: {c}" for e, c in zip(epochs, cells)))


if __name__ == "__main__":
    main()
