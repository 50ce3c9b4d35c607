"""The same TinyNet search through each backend, side by side: wall time, trials, best validation accuracy and its test.

    python benchmarks/bench_backends.py [--trials 24] [--space tinynet_quick] [--data ROOT] [--results DIR]

Runs `bench search` once per backend (optuna: tpe + asha; ray: OptunaSearch + ASHA, local Ray, 1 CPU per trial;
kerastuner: random search, no early stopping) on the same space and seed, each into its own study of one leaderboard.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.leaderboard import Leaderboard, db_url

ARMS = {"optuna": [], "ray": [], "kerastuner": ["--sampler", "random"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--space", default="tinynet_quick")
    parser.add_argument("--data")
    parser.add_argument("--results", default="results/backends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(ARMS), help="comma-separated subset to run")
    args = parser.parse_args()
    board = Leaderboard(db_url(None, Path(args.results)))
    lines = []
    for backend in args.backends.split(","):
        extra = ARMS[backend]
        study = f"{args.space}-{backend}"
        cmd = [sys.executable, "-m", "bench.cli", "search", "tinynet", "--space", args.space, "--backend", backend,
               "--trials", str(args.trials), "--study", study, "--seed", str(args.seed), "--results", args.results, *extra]
        if args.data:
            cmd += ["--data", args.data]
        start = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            print(f"{backend}: failed\n{run.stderr[-2000:]}")
            continue
        rows = [r for r in board.query(study=study) if r["backend"] == backend]
        done = [r for r in rows if r["status"] == "complete"]
        best = max(done, key=lambda r: r["val_accuracy"]) if done else None
        lines.append((backend, wall, len(rows), len(done), best))
        print(f"{backend:10s} wall {wall:6.0f} s  trials {len(rows):3d} ({len(done)} complete)  best val {best['val_accuracy']:.3f}"
              f"  its test {best['test_accuracy']:.3f}  params {best['n_params']:,}" if best else f"{backend}: no complete trial",
              flush=True)
    if lines:
        fastest = min(wall for _, wall, *_ in lines)
        print("wall time relative to the fastest: " + ", ".join(f"{b} {w / fastest:.2f}x" for b, w, *_ in lines))


if __name__ == "__main__":
    main()
