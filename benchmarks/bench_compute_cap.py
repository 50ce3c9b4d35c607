"""Does a network's multiply-accumulate count (keras_train.count_macs) tell its epoch time before it trains, and what
would a cap on it (the Keras families' `max_mmacs`) cut? Side by side in one run.

    python benchmarks/bench_compute_cap.py [--configs 24] [--looks 1] [--space tinynet] [--data ROOT]
                                           [--caps 40,60,80,100,200]

--configs configurations drawn at random from the space (seeded, the cap itself off) each train until their
--looks-th validation, the way successive halving's first rung stops most of a search's trials. Per configuration it
prints the millions of MACs per image, the seconds to each look (build, tracing and the first epoch included) and the
validation accuracy there. Then the Spearman rank correlation of MACs with those seconds, and per cap: how many
configurations it would skip, the share of all the seconds they took, and the best validation accuracy among them
(against the best below the cap): a cap pays if it skips much time and little accuracy.
"""
from __future__ import annotations

import math
import statistics

from scipy.stats import spearmanr

from bench import keras_train as kt
from bench.objective import TrialContext, get_objective
from bench.space import load_space

from bench_first_rung import config_parser, looks, sample_configs


def costs_of(objective, params: dict, data: str | None) -> tuple[float, float]:
    """Millions of MACs and of activations (every layer's output values) per image of the configuration's network,
    built and released again (no training)."""
    resolved = objective.resolve(params)
    split = objective.load_data(resolved, TrialContext(seed=0, data_root=data))
    model = objective.build(resolved, split)
    try:
        activations = sum(math.prod(d for d in layer.output.shape[1:] if d) for layer in model.layers[1:])
        return kt.count_macs(model) / 1e6, activations / 1e6
    finally:
        objective.release(model)


def main() -> None:
    parser = config_parser(__doc__, configs=24, n_looks=1, seed=2)
    parser.add_argument("--caps", default="40,60,80,100,200", help="caps to weigh, in millions of MACs per image")
    args = parser.parse_args()
    space = load_space(args.space)
    objective = get_objective(space.objective)
    rows = []
    for i, config in enumerate(sample_configs(space, args.configs, args.seed)):
        config = {**config, "max_mmacs": 0}  # every configuration trains: the cap is what is being weighed
        mmacs, mact = costs_of(objective, config, args.data)
        curve = looks(objective, config, args.looks, args.data)
        if len(curve) < args.looks:  # failed: left out
            continue
        rows.append((mmacs, curve[-1]["seconds"], curve[-1]["val_accuracy"], mact))
        print(f"config {i:2d} {mmacs:8.1f} MMACs {mact:6.2f} M activations  seconds " + " ".join(f"{p['seconds']:.1f}" for p in curve)
              + "  val " + " ".join(f"{p['val_accuracy']:.3f}" for p in curve), flush=True)

    if len(rows) < 3:
        print("too few configurations trained to compare")
        return
    mmacs, seconds, vals, activations = zip(*rows)
    print(f"\n{len(rows)} configurations: MMACs median {statistics.median(mmacs):.1f} (range {min(mmacs):.1f}-"
          f"{max(mmacs):.1f}); seconds to look {args.looks}: median {statistics.median(seconds):.1f}, "
          f"sum {sum(seconds):.0f}; rank correlation with those seconds: MMACs {spearmanr(mmacs, seconds).statistic:.2f}, "
          f"activations {spearmanr(activations, seconds).statistic:.2f}")
    print(f"{'cap (MMACs)':>11s} {'skipped':>8s} {'their share of the seconds':>27s} {'best val skipped':>17s} {'best val kept':>14s}")
    for cap in (float(c) for c in args.caps.split(",")):
        over = [r for r in rows if r[0] > cap]
        kept = [r for r in rows if r[0] <= cap]
        share = sum(r[1] for r in over) / sum(seconds)
        best_over = f"{max(r[2] for r in over):.3f}" if over else "-"
        best_kept = f"{max(r[2] for r in kept):.3f}" if kept else "-"
        print(f"{cap:11.0f} {len(over):8d} {share:27.0%} {best_over:>17s} {best_kept:>14s}")


if __name__ == "__main__":
    main()
