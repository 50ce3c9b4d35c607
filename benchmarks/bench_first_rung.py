"""Does a cheaper first look at a trial still rank trials the way a later look does? Side by side in one run.

    python benchmarks/bench_first_rung.py [--configs 12] [--looks 4] [--space tinynet] [--data ROOT]
                                          [--variants '{"full": {}, "quarter": {"first_epoch_data": 0.25, "warmup": 0.05}}']

Successive halving stops most trials at their first look (pareto-asha: after epoch 1), so that look decides what the
search sees. Here --configs configurations drawn at random from the space (seeded) are each trained under every
variant (params laid over the sampled ones) and stopped after --looks validations. Per variant it prints the Spearman
rank correlation between the first look's validation accuracy and the last look's, the median first look, and the
mean seconds to the first look (build, tracing and the first epoch included). A cheaper first look pays only if it
still ranks the configurations: a correlation near 0 means the rung prunes by lottery.

Variants: "full" is today's default (a whole first epoch, one-cycle warm-up over 30% of all steps); "quarter" sees a
quarter of the fit split in its first epoch and warms up over 5% of the steps (one epoch of 20), so the first look is
not taken at a near-zero learning rate.
"""
from __future__ import annotations

import argparse
import json
import statistics

import optuna
from scipy.stats import spearmanr

from bench.objective import Pruned, TrialContext, TrialFailed, get_objective
from bench.space import load_space

VARIANTS = {"full": {}, "quarter": {"first_epoch_data": 0.25, "warmup": 0.05}}


def sample_configs(space, n: int, seed: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.to_optuna(study.ask()) for _ in range(n)]


def looks(objective, params: dict, n_looks: int, data: str | None) -> list[dict]:
    """The trial's curve, stopped after n_looks validations the way a pruner stops it (shorter if the trial failed)."""
    ctx = TrialContext(seed=0, data_root=data, report_hook=lambda epoch, _metrics: epoch + 1 >= n_looks)
    try:
        objective.run(params, ctx)
    except Pruned:
        pass
    except TrialFailed as e:  # a sampled point the family refuses, or a NaN loss: left out of the ranking below
        print(f"trial failed: {e}")
    return ctx.curve


def config_parser(doc: str, configs: int, n_looks: int, seed: int) -> argparse.ArgumentParser:
    """The options of a benchmark that trains sampled configurations up to a few looks (this one's and others')."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=configs)
    parser.add_argument("--looks", type=int, default=n_looks)
    parser.add_argument("--space", default="tinynet")
    parser.add_argument("--data")
    parser.add_argument("--seed", type=int, default=seed)
    return parser


def main() -> None:
    parser = config_parser(__doc__, configs=12, n_looks=4, seed=1)
    parser.add_argument("--variants", type=json.loads, default=VARIANTS)
    args = parser.parse_args()
    space = load_space(args.space)
    objective = get_objective(space.objective)
    curves: dict[str, list[list[dict]]] = {name: [] for name in args.variants}
    for i, config in enumerate(sample_configs(space, args.configs, args.seed)):
        for name, extra in args.variants.items():  # variants alternate, so drift in machine load hits each alike
            curve = looks(objective, {**config, **extra}, args.looks, args.data)
            curves[name].append(curve)
            seconds = f"  seconds {curve[0]['seconds']:.1f} .. {curve[-1]['seconds']:.1f}" if curve else ""
            print(f"config {i:2d} {name:8s} val " + " ".join(f"{p['val_accuracy']:.3f}" for p in curve) + seconds,
                  flush=True)

    print(f"\n{'variant':8s} {'rank corr. first/last look':>27s} {'median first look':>18s} {'s to first look':>16s} {'mean last look':>15s}")
    for name, runs in curves.items():
        done = [c for c in runs if len(c) == args.looks]  # a failed trial has a shorter curve
        if not done:
            print(f"{name:8s} no trial reached look {args.looks}")
            continue
        first = [c[0]["val_accuracy"] for c in done]
        last = [c[-1]["val_accuracy"] for c in done]
        rho = spearmanr(first, last).statistic if len(done) > 2 else float("nan")
        print(f"{name:8s} {rho:27.2f} {statistics.median(first):18.3f} "
              f"{statistics.mean(c[0]['seconds'] for c in done):16.2f} {statistics.mean(last):15.3f}")


if __name__ == "__main__":
    main()
