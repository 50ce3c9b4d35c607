"""The main job's search against keras-tuner's, side by side in one run, each arm with the same wall budget.

    python benchmarks/bench_main_job.py [--budget 1200] [--arms default,no-start,kt-random,kt-hyperband]
                                        [--space tinynet] [--data ROOT] [--results DIR]

Arms (the same YAML space and seed; each a fresh study, run as `bench search tinynet ...` in its own process group):
  default       bench's default search of the space, as `bench search tinynet` runs it
  no-start      the same without the space's `start:` points, so the sampler and pruner alone are judged
  kt-random     `--backend kerastuner --sampler random` (keras-tuner's RandomSearch; every trial trains to the end)
  kt-hyperband  `--backend kerastuner --sampler hyperband`
Each arm gets --budget seconds of wall time, then Ctrl-C (it stops at the next epoch end); only trials finished
within the budget count. Per arm it prints trials, the best validation accuracy and that trial's test accuracy and
params, the peak memory of the arm's whole process tree, and the seconds until the best validation accuracy first
reached 0.80, 0.85 and keras-tuner's final best; then each time as a ratio to keras-tuner's (RandomSearch's).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from bench.leaderboard import Leaderboard, db_url
from bench.space import find_space

ARMS = {
    "default": [],
    "no-start": [],  # the space file without its start points (written below)
    "kt-random": ["--backend", "kerastuner", "--sampler", "random"],
    "kt-hyperband": ["--backend", "kerastuner", "--sampler", "hyperband"],
}
BACKEND = {"kt-random": "kerastuner", "kt-hyperband": "kerastuner"}


def run_arm(cmd: list[str], budget: float) -> tuple[float, float]:
    """Run cmd in its own process group for `budget` seconds, then Ctrl-C it; returns (start time, peak tree RSS)."""
    started = time.time()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if time.time() - started > budget:
            os.killpg(proc.pid, signal.SIGINT)  # stop at the next epoch end, keep what finished
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.5)
    proc.wait()
    return started, peak


def first_reaching(rows: list[dict], started: float, budget: float, target: float) -> float | None:
    """Seconds from the arm's start until a complete trial first reached `target` validation accuracy."""
    times = [r["finished_at"].timestamp() - started for r in rows
             if r["status"] == "complete" and r["val_accuracy"] >= target]
    times = [t for t in times if t <= budget]
    return min(times, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=1200.0, help="wall seconds per arm (default 20 minutes)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--space", default="tinynet")
    parser.add_argument("--data")
    parser.add_argument("--results", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = Path(args.results or tempfile.mkdtemp(prefix="bench-main-job-"))
    results.mkdir(parents=True, exist_ok=True)
    space_file = find_space(args.space)
    no_start = results / f"{space_file.stem}-no-start.yaml"
    raw = yaml.safe_load(space_file.read_text())
    raw.pop("start", None)
    no_start.write_text(yaml.safe_dump(raw, sort_keys=False))
    board = Leaderboard(db_url(None, results))

    summary = {}
    for arm in args.arms.split(","):
        study = f"main-{arm}"
        space = str(no_start) if arm == "no-start" else args.space
        cmd = [sys.executable, "-m", "bench.cli", "search", "tinynet", "--space", space, "--trials", "100000",
               "--study", study, "--seed", str(args.seed), "--results", str(results), *ARMS[arm]]
        if args.data:
            cmd += ["--data", args.data]
        started, peak = run_arm(cmd, args.budget)
        rows = [r for r in board.query(study=study) if r["backend"] == BACKEND.get(arm, "optuna")]
        rows = [r for r in rows if r["finished_at"].timestamp() - started <= args.budget]
        done = [r for r in rows if r["status"] == "complete"]
        best = max(done, key=lambda r: r["val_accuracy"], default=None)
        summary[arm] = (started, rows, best, peak)
        shown = (f"best val {best['val_accuracy']:.3f}  its test {best['test_accuracy']:.3f}  params {best['n_params']:,}"
                 if best else "no complete trial")
        print(f"{arm:13s} trials {len(rows):4d} ({len(done)} complete)  {shown}  peak summed RSS {peak / 2**30:.2f} GiB",
              flush=True)

    reference_arm = next((arm for arm in ("kt-random", "kt-hyperband") if arm in summary), None)
    reference = summary.get(reference_arm)
    kt_best = reference[2]["val_accuracy"] if reference and reference[2] else None
    targets = [0.80, 0.85] + ([kt_best] if kt_best else [])
    ratio = f"ratio: {reference_arm}'s time / this arm's" if reference else "no keras-tuner arm ran, so no ratio"
    print(f"\nseconds until the best validation accuracy first reached ({ratio})")
    print(f"{'arm':13s} " + "  ".join(f"{t:>18.3f}" for t in targets))
    ref_times = [first_reaching(reference[1], reference[0], args.budget, t) for t in targets] if reference else []
    for arm, (started, rows, _, _) in summary.items():
        cells = []
        for i, t in enumerate(targets):
            s = first_reaching(rows, started, args.budget, t)
            ratio = f" ({ref_times[i] / s:4.1f}x)" if s and ref_times and ref_times[i] else ""
            cells.append(f"{s:8.0f} s{ratio:>8s}" if s is not None else f"{'never':>18s}")
        print(f"{arm:13s} " + "  ".join(f"{c:>18s}" for c in cells))
    print(f"\nresults in {results}")


if __name__ == "__main__":
    main()
