"""Pareto-aware pruning against single-objective pruning and no pruning, at equal wall time.

    python benchmarks/bench_pareto_pruning.py [--seconds 240] [--space tinynet_quick] [--data ROOT]

Three studies of the same space (its start points left out), each given the same wall time (Optuna's timeout: no trial starts after it):
  nsga2 + pareto-asha   (promotion by non-dominated sorting on val accuracy and parameters)
  tpe   + asha          (promotion by val accuracy alone)
  nsga2 + none          (no pruning)
and the hypervolume of each final front of (val accuracy, log10 parameters), reference (0, log10 1e7), side by side.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from bench.backends import SearchConfig
from bench.backends import optuna as optuna_backend
from bench.data import resolve_root
from bench.leaderboard import Leaderboard, db_url
from bench.pareto import hypervolume, pareto_front
from bench.space import load_space

ARMS = (("nsga2", "pareto-asha"), ("tpe", "asha"), ("nsga2", "none"))
REFERENCE = (0.0, 7.0)  # accuracy 0, 10M parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--space", default="tinynet_quick")
    parser.add_argument("--data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    space = load_space(args.space).model_copy(update={"start": []})  # no anchor trial: it would eat a short budget
    root = str(resolve_root(args.data))
    print(f"space {args.space}, {args.seconds:.0f} s of wall time per arm, data {root}")
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for sampler, pruner in ARMS:
            study = f"{sampler}-{pruner}"
            config = SearchConfig(objective=space.objective, study=study, trials=10_000, db_url=db_url(None, Path(tmp)),
                                  results_dir=Path(tmp), seed=args.seed, sampler=sampler, pruner=pruner,
                                  timeout=args.seconds, data_root=root)
            start = time.perf_counter()
            optuna_backend.run(space, config)
            wall = time.perf_counter() - start
            rows = Leaderboard(config.db_url).query(study=study)
            done = [r for r in rows if r["status"] == "complete"]
            points = [(r["val_accuracy"], math.log10(r["n_params"])) for r in done]
            front = pareto_front(done)
            hv = hypervolume(points, REFERENCE)
            best = max((r["val_accuracy"] for r in done), default=float("nan"))
            lines.append((study, hv, len(rows), len(done), len(front), best, wall))
            print(f"{study:18s} hypervolume {hv:.3f}  trials {len(rows)} ({len(done)} complete), front {len(front)}, "
                  f"best val acc {best:.3f}, wall {wall:.0f} s", flush=True)
        base = {name: hv for name, hv, *_ in lines}
        print("hypervolume ratios: pareto-asha / asha = "
              f"{base['nsga2-pareto-asha'] / base['tpe-asha']:.3f}, pareto-asha / no pruning = "
              f"{base['nsga2-pareto-asha'] / base['nsga2-none']:.3f}")


if __name__ == "__main__":
    main()
