"""Where a TinyNet trial's time and memory go outside its epochs, and two ways one worker could use both cores.

    python benchmarks/bench_trial_cost.py [--data ROOT] [--trials 8]

Real TinyNet trials (the space's first start point, 64 px, MIT8 by default) through the objective bench runs, each
arm in a fresh process:
- fresh worker: importing TensorFlow + Keras, then trials of 2 epochs each. A trial's fixed cost is its time to the
  end of epoch 1 minus one steady epoch (build, compile, tracing, the first validation); the first trial of a process
  pays more. The RSS after each trial gives what a trial leaves behind (why workers are replaced).
- sequential against threaded: the same 6 three-epoch trials one after another (TensorFlow's own threads), then in
  two Python threads of one process (one intra-op thread each): one TensorFlow runtime in memory, not two as
  `--jobs 2` holds. Prints the wall times, their ratio and each arm's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PARAMS = {"input_size": 64, "blocks": 4, "base_filters": 32, "growth": 2.0, "max_filters": 256, "dropout": 0.1,
          "shift": 0.1, "one_cycle": True, "lr": 0.003, "epochs": 20, "bn_momentum": 0.9}


def run_trial(objective, seed: int, epochs: int, data: str | None, cache: Path):
    """One trial stopped after `epochs` epochs (the way a pruner stops it); returns its curve's elapsed seconds."""
    from bench.objective import Pruned, TrialContext

    ctx = TrialContext(seed=seed, data_root=data, cache_dir=cache, report_hook=lambda epoch, _m: epoch + 1 >= epochs)
    try:
        objective.run(PARAMS, ctx)
    except Pruned:
        pass
    return [point["seconds"] for point in ctx.curve]


def arm_fresh(args) -> dict:
    import psutil

    start = time.perf_counter()
    from bench import keras_train as kt
    from bench.objective import get_objective

    kt.keras()
    imported = time.perf_counter() - start
    objective, me = get_objective("tinynet"), psutil.Process()
    fixed, rss = [], []
    for i in range(args.trials):
        s1, s2 = run_trial(objective, i, 2, args.data, args.cache)
        fixed.append(s1 - (s2 - s1))
        rss.append(me.memory_info().rss / 2**20)
    return {"import_s": imported, "first_fixed_s": fixed[0], "warm_fixed_s": statistics.median(fixed[1:]),
            "epoch_s": s2 - s1, "rss_first_mb": rss[0], "leak_mb": (rss[-1] - rss[1]) / (len(rss) - 2)}


def arm_parallel(args, threaded: bool) -> dict:
    import psutil
    import tensorflow as tf

    if threaded:  # set before any op runs; each trial's ops on one thread, the two trials side by side
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    from bench.objective import get_objective

    objective, me, peak = get_objective("tinynet"), psutil.Process(), [0.0]

    def watch():
        while True:
            peak[0] = max(peak[0], me.memory_info().rss / 2**20)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    run_trial(objective, 99, 1, args.data, args.cache)  # imports, data memo, first-trial warm-up: not timed
    start = time.perf_counter()
    if threaded:
        workers = [threading.Thread(target=lambda j=j: [run_trial(objective, 10 * j + k, 3, args.data, args.cache)
                                                        for k in range(3)]) for j in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    else:
        for k in range(6):
            run_trial(objective, k, 3, args.data, args.cache)
    return {"wall_s": time.perf_counter() - start, "peak_mb": peak[0]}


def in_fresh_process(arm: str, args) -> dict:
    command = [sys.executable, __file__, "--arm", arm, "--trials", str(args.trials), "--cache", str(args.cache)]
    if args.data:
        command += ["--data", args.data]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "MALLOC_ARENA_MAX": "2"}).stdout  # as bench's workers run
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data root (default: bench's, $BENCH_DATA or ../shared/data/mit8)")
    parser.add_argument("--trials", type=int, default=8, help="trials in the fresh-worker arm")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench")))
    parser.add_argument("--arm", choices=["fresh", "sequential", "threaded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        result = arm_fresh(args) if args.arm == "fresh" else arm_parallel(args, args.arm == "threaded")
        print(json.dumps(result))
        return
    fresh = in_fresh_process("fresh", args)
    print(f"importing TensorFlow + Keras: {fresh['import_s']:.2f} s")
    print(f"fixed cost of a trial (to the end of epoch 1, less one steady {fresh['epoch_s']:.2f} s epoch): "
          f"first in a process {fresh['first_fixed_s']:.2f} s, later ones {fresh['warm_fixed_s']:.2f} s (median)")
    print(f"RSS after the first trial {fresh['rss_first_mb']:.0f} MB; each later trial leaves {fresh['leak_mb']:.1f} MB")
    seq, thr = in_fresh_process("sequential", args), in_fresh_process("threaded", args)
    print(f"6 trials x 3 epochs: sequential {seq['wall_s']:.1f} s (peak RSS {seq['peak_mb']:.0f} MB), two threads "
          f"{thr['wall_s']:.1f} s (peak RSS {thr['peak_mb']:.0f} MB): threads {seq['wall_s'] / thr['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
