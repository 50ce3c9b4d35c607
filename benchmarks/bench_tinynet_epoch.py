"""TinyNet epoch time inside bench against a plain Keras script of the same model (target <= 1.1x), side by side.

    python benchmarks/bench_tinynet_epoch.py [--data ROOT] [--epochs 4] [--repeats 2]

Both train the paper's final TinyNet (4 blocks of 3x3 stride-2 conv + BN + ReLU, GAP, 64x64, flip augmentation)
on the same fit/validation arrays with the same batch size, validating each epoch. The first epoch (graph tracing)
is left out; the median of the rest is compared. Runs alternate, so drift in machine load hits both.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench import keras_train as kt
from bench.objective import TrialContext
from bench.objectives.tinynet import TinyNet

PARAMS = dict(input_size=64, blocks=4, base_filters=32, growth=2.0, kernel_size=3, downsample="stride2", batch_norm=True,
              init="he_normal", head="gap", flip=True, optimizer="adam", lr=1e-3, batch_size=32, patience=0)


def plain_keras_epochs(split, epochs: int) -> list[float]:
    keras = kt.keras()
    L = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = L.RandomFlip("horizontal")(L.Rescaling(1 / 255)(inputs))
    for filters in (32, 64, 128, 256):
        x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(filters, 3, strides=2, padding="same", kernel_initializer="he_normal")(x)))
    outputs = L.Dense(8, activation="softmax", kernel_initializer="he_normal")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stamps = [time.perf_counter()]

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(split.x_fit, split.y_fit, batch_size=32, epochs=epochs, validation_data=(split.x_val, split.y_val),
              callbacks=[Clock()], verbose=0)
    kt.release_keras()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def bench_epochs(root, epochs: int) -> list[float]:
    stamps = [time.perf_counter()]
    ctx = TrialContext(seed=0, data_root=root, progress=lambda epoch, total, metrics: stamps.append(time.perf_counter()))
    net = TinyNet()
    params = net.resolve(dict(PARAMS, epochs=epochs))
    split = net.load_data(params, ctx)
    net.set_seed(0)
    model = net.build(params, split)
    stamps[0] = time.perf_counter()
    net.fit(model, split, params, ctx)
    net.release(model)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    split = TrialContext(seed=0, data_root=args.data).images(64)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain += plain_keras_epochs(split, args.epochs)[1:]
        ours += bench_epochs(args.data, args.epochs)[1:]
    p, b = statistics.median(plain), statistics.median(ours)
    print(f"epoch time (median of {len(plain)} epochs each, first epochs left out): plain Keras {p:.3f} s, bench {b:.3f} s")
    print(f"bench / plain = {b / p:.3f} (target <= 1.1) -> {'OK' if b / p <= 1.1 else 'OVER'}")


if __name__ == "__main__":
    main()
