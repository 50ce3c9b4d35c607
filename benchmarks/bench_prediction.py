"""What a TinyNet trial's per-epoch validation costs: bench's compiled forward pass against eager calls, side by side.

    python benchmarks/bench_prediction.py [--data ROOT] [--repeats 5]

Every epoch of every trial validates with the family's own prediction (TinyNet averages each image and its mirror
image), so this runs once per epoch, 200 trials at a time. Both arms predict the validation split of the same
model, the default space's two start points (untrained weights: the cost of a forward pass does not depend on them),
in batches of 64: bench's `keras_train.predict_keras` (one tf.function per model, traced on its first call) and
eager calls of the model, as bench did before. Runs alternate, so drift in machine load hits both. Prints each
arm's first call (tracing included) and the median of the rest, their ratio, and how far the two arms' probabilities
are apart (they must agree to float32 round-off).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench import keras_train as kt
from bench.objective import TrialContext
from bench.objectives.tinynet import TinyNet
from bench.space import load_space


def eager_proba(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The reference: the model called eagerly in batches, flips averaged as TinyNet.predict_proba does."""
    def calls(images):
        return np.concatenate([np.asarray(model(images[i : i + batch_size], training=False))
                               for i in range(0, len(images), batch_size)]).astype(np.float64)
    return (calls(x) + calls(x[:, :, ::-1])) / 2


def timed(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    net, space = TinyNet(), load_space("tinynet")
    for i, point in enumerate(space.start):
        params = net.resolve({**space.fixed(), **point})
        split = net.load_data(params, TrialContext(seed=0, data_root=args.data))
        model = net.build(params, split)
        x = split.x_val
        first_eager, reference = timed(lambda: eager_proba(model, x))
        first_compiled, proba = timed(lambda: net.predict_proba(model, x))
        eager, compiled = [], []
        for _ in range(args.repeats):  # alternating
            eager.append(timed(lambda: eager_proba(model, x))[0])
            compiled.append(timed(lambda: net.predict_proba(model, x))[0])
        e, c = statistics.median(eager), statistics.median(compiled)
        print(f"start point {i + 1} ({model.count_params():,} params, {len(x)} validation images, {params['input_size']} px):")
        print(f"  eager    first {first_eager:.3f} s, then median {e:.3f} s")
        print(f"  compiled first {first_compiled:.3f} s (tracing included), then median {c:.3f} s")
        print(f"  eager / compiled = {e / c:.2f}x; over 20 epochs {20 * e:.1f} s against "
              f"{first_compiled + 19 * c:.1f} s; largest probability difference {np.abs(proba - reference).max():.1e}")
        net.release(model)


if __name__ == "__main__":
    main()
