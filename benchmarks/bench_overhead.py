"""Framework overhead per trial (target <= 50 ms) and data load from the cache (target <= 0.5 s), measured side by side.

    python benchmarks/bench_overhead.py [--data ROOT] [--trials 100]

Overhead: the same no-op objective called directly N times, then run as N trials of a real Optuna study
(journal storage) writing real leaderboard rows (SQLite). Data: decode the real images at 64 px (cold),
then load them from the .npy cache (warm), then from the in-process memo.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import data as bdata
from bench.backends import SearchConfig
from bench.backends import optuna as optuna_backend
from bench.leaderboard import db_url
from bench.objective import OBJECTIVES, Objective, Result, TrialContext
from bench.space import SearchSpace


class NoOp(Objective):
    """Does no work: what remains of a trial's time is the framework's."""

    name = "noop"
    defaults = {"x": 0.0, "k": 1}

    def run(self, params, ctx):
        params = self.resolve(params)
        return Result(params["x"], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, n_params=1, fit_seconds=0.0, epochs=1)


SPACE = SearchSpace.from_dict({"objective": "noop", "params": {
    "x": {"type": "float", "low": 0, "high": 1}, "k": {"type": "int", "low": 1, "high": 9}}})


def overhead(trials: int) -> tuple[float, float]:
    OBJECTIVES["noop"] = f"{__name__}:NoOp"
    start = time.perf_counter()
    for i in range(trials):
        NoOp().run({"x": 0.5, "k": 3}, TrialContext(seed=i))
    direct = (time.perf_counter() - start) / trials
    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(objective="noop", study="overhead", trials=trials, db_url=db_url(None, Path(tmp)),
                              results_dir=Path(tmp), sampler="random", pruner="none")
        start = time.perf_counter()
        optuna_backend.run(SPACE, config)
        searched = (time.perf_counter() - start) / trials
    return direct, searched


def data_load(root: str | None, size: int) -> tuple[float, float, float]:
    """Seconds to decode (cold), to load from the .npy cache in a new process (warm), and a trial's whole data path."""
    root = bdata.resolve_root(root)
    catalog = bdata.scan(root)
    bdata.holdout_indices(catalog.train.labels, 0.15, 0)  # import scikit-learn before timing, as a running search has
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bdata.load_arrays(catalog, size, True, Path(tmp))
        cold = time.perf_counter() - start
        bdata._MEMO.clear()
        start = time.perf_counter()
        arrays = bdata.load_arrays(catalog, size, True, Path(tmp))
        warm = time.perf_counter() - start
        start = time.perf_counter()  # what each trial does: list the folder, look up the cache, split
        split = TrialContext(data_root=root, cache_dir=Path(tmp)).images(size)
        per_trial = time.perf_counter() - start
    assert arrays.x_train.shape[0] == len(catalog.train.paths) and np.all(arrays.x_train.shape[1:3] == (size, size))
    assert len(split.y_fit) + len(split.y_val) == len(catalog.train.paths)
    return cold, warm, per_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    direct, searched = overhead(args.trials)
    per_trial_ms = (searched - direct) * 1e3
    print(f"no-op objective: direct {direct * 1e3:.2f} ms/trial, through Optuna + leaderboard {searched * 1e3:.2f} ms/trial")
    print(f"framework overhead per trial: {per_trial_ms:.1f} ms (target <= 50 ms) -> {'OK' if per_trial_ms <= 50 else 'OVER'}")

    cold, warm, per_trial = data_load(args.data, args.size)
    print(f"data at {args.size}px: decode (cold) {cold:.2f} s, from the .npy cache {warm:.3f} s, "
          f"a trial's data path (scan + cache + split) {per_trial:.3f} s")
    print(f"cache speed-up {cold / warm:.0f}x; load from cache {warm:.3f} s (target <= 0.5 s) -> {'OK' if warm <= 0.5 else 'OVER'}")


if __name__ == "__main__":
    main()
