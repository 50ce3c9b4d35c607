"""Keras training shared by the neural families: optimizers, the one-cycle policy, per-epoch reporting, the LR finder."""
from __future__ import annotations

import math
import os
import sys
import weakref
from typing import Any

import numpy as np

from bench.data import Split
from bench.trial import FitInfo, Pruned, TrialContext, TrialFailed

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adadelta", "adagrad")
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")


def keras():
    """Keras, imported only when a neural family runs (quietly: import_quietly), and TensorFlow set up for this
    process on the first call: its Python warnings off, its thread pools sized by BENCH_THREADS."""
    global _configured
    import_quietly()
    if not _configured:
        _configured = True
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # TensorFlow's Python warnings (retracing notices) are noise here
        threads = int(os.environ.get("BENCH_THREADS", "0"))  # set per worker by `--jobs N`: cores / N each
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    return sys.modules["keras"]


_configured = False  # per process: a worker forked from a server that imported Keras sets its own threads


def import_quietly() -> None:
    """Import Keras and TensorFlow with TensorFlow's C++ start-up banner kept off stderr; nothing is configured or
    run (the workers' forkserver preloads this, bench.backends.preload_keras)."""
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def device_line() -> str:
    """Where TensorFlow trains: the GPUs it sees, else the CPU and why (the default install is tensorflow-cpu)."""
    keras()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"device: GPU ({', '.join(g.name for g in gpus)}), TensorFlow {tf.__version__}"
    cuda = tf.test.is_built_with_cuda()
    hint = "no GPU visible to it" if cuda else "a CPU-only build; for an NVIDIA GPU see the README's `.[gpu]`"
    return f"device: CPU (TensorFlow {tf.__version__}: {hint})"


def seed_everything(seed: int) -> None:
    keras().utils.set_random_seed(seed)


def one_cycle(max_lr: float, total_steps: int, warmup: float = 0.3, div: float = 25.0, final_div: float = 1e4):
    """The one-cycle policy (Smith, 2018): linear warm-up from max_lr/div to max_lr, then cosine down to max_lr/final_div."""
    k = keras()

    class OneCycle(k.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            ops = k.ops
            step = ops.cast(step, "float32")
            up = max(1.0, warmup * total_steps)
            down = max(1.0, total_steps - up)
            start, end = max_lr / div, max_lr / final_div
            warm = start + (max_lr - start) * step / up
            t = ops.minimum(1.0, (step - up) / down)
            cool = end + (max_lr - end) * 0.5 * (1 + ops.cos(math.pi * t))
            return ops.where(step < up, warm, cool)

        def get_config(self):
            return {"max_lr": max_lr, "total_steps": total_steps}

    return OneCycle()


def make_optimizer(name: str, lr: Any, momentum: float | None = None, weight_decay: float | None = None):
    """weight_decay: decoupled (AdamW-style, as every Keras 3 optimizer applies it), 0 or None for none."""
    opt = keras().optimizers
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "sgd":
        return opt.SGD(learning_rate=lr, momentum=momentum or 0.0, **decay)
    if name == "rmsprop":
        return opt.RMSprop(learning_rate=lr, momentum=momentum or 0.0, **decay)
    if name == "adam":
        return opt.Adam(learning_rate=lr, **decay)
    if name == "adadelta":
        return opt.Adadelta(learning_rate=lr, **decay)
    if name == "adagrad":
        return opt.Adagrad(learning_rate=lr, **decay)
    raise ValueError(f"unknown optimizer '{name}'; one of {OPTIMIZERS}")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass of one image through the network's convolutions and dense layers
    (every kernel weight once per output position), the cost that sets a CNN's epoch time on a CPU. Counted from the
    built layers' shapes, so it costs nothing and is the same on every machine; element-wise layers are left out."""
    total = 0
    for layer in _leaf_layers(model):
        kernels = [w for w in layer.weights if "kernel" in w.path and w.trainable]
        if not kernels:
            continue
        shape = tuple(layer.output.shape)
        positions = math.prod(d for d in shape[1:-1] if d) if len(shape) > 2 else 1
        total += positions * sum(math.prod(w.shape) for w in kernels)
    return int(total)


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model
            yield from _leaf_layers(layer)
        else:
            yield layer


def _report_callback(ctx: TrialContext, total_epochs: int, split: Split, predict):
    k = keras()

    class Report(k.callbacks.Callback):
        """Validates each epoch with the family's own prediction (test-time flips included, as in the final score),
        sends the metrics to the backend (which may prune) and fails the trial on a NaN loss. Not Keras' own
        validation_data: it traces a whole test step per trial, about 1-3 s of fixed cost on 2 cores."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            proba = predict(self.model, split.x_val)
            picked = np.clip(proba[np.arange(len(split.y_val)), split.y_val], 1e-12, 1.0)
            logs["val_loss"] = float(-np.log(picked).mean())
            logs["val_accuracy"] = float((proba.argmax(1) == split.y_val).mean())
            metrics = {key: float(v) for key, v in logs.items()}  # later callbacks (history, early stopping) see them too
            if not math.isfinite(metrics.get("loss", 0.0)):
                raise TrialFailed(f"loss became NaN at epoch {epoch + 1}")
            ctx.report(epoch, metrics, total_epochs)
            logs["seconds"] = ctx.curve[-1]["seconds"]  # how long the trial had run: the history's time axis

    return Report()


def fit_keras(model, split: Split, params: dict[str, Any], ctx: TrialContext, predict=None) -> FitInfo:
    """Compile with the params' optimizer (one-cycle if asked), fit on the fit split, validate each epoch.

    params["max_mmacs"] > 0: a network of more million multiply-accumulates per image (count_macs) is pruned before
    it trains, as a trial stopped at epoch 0.
    params["first_epoch_data"] < 1: the first epoch sees only that fraction of the fit split (a seeded random part),
    so the first look at a trial, where successive halving stops most of them, costs that fraction of an epoch.
    predict(model, x) -> class probabilities: the family's own (predict_keras by default)."""
    k = keras()
    cap = float(params.get("max_mmacs") or 0)
    if cap and (mmacs := count_macs(model) / 1e6) > cap:  # a cost cap: what the search may spend on one image
        raise Pruned(0, f"{mmacs:.3g} million multiply-accumulates per image exceed max_mmacs {cap:g}; skipped before training")
    epochs, batch = int(params["epochs"]), int(params["batch_size"])
    n_fit = len(split.y_fit)
    first = min(n_fit, max(batch, int(round(float(params.get("first_epoch_data") or 1.0) * n_fit))))
    steps = math.ceil(first / batch) + (epochs - 1) * math.ceil(n_fit / batch)
    lr = one_cycle(params["lr"], steps, warmup=float(params.get("warmup", 0.3))) if params.get("one_cycle") else params["lr"]
    smoothing = float(params.get("label_smoothing") or 0.0)
    y_fit = split.y_fit
    if smoothing:  # Keras smooths one-hot targets only
        y_fit = np.eye(split.num_classes, dtype="float32")[y_fit]
    model.compile(
        optimizer=make_optimizer(params["optimizer"], lr, params.get("momentum"), params.get("weight_decay")),
        loss=k.losses.CategoricalCrossentropy(label_smoothing=smoothing) if smoothing else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=8,  # fewer Python round trips per epoch: about 20% faster epochs on 2 CPU cores
    )
    callbacks = [_report_callback(ctx, epochs, split, predict or predict_keras)]
    if ctx.keep_top is not None:  # artifacts are kept: record activation statistics for `bench report`
        from bench.artifacts import activation_callback

        callbacks.append(activation_callback(model, split.x_val[:64], ctx))
    if params.get("patience"):
        callbacks.append(
            k.callbacks.EarlyStopping(monitor="val_loss", patience=int(params["patience"]), restore_best_weights=True)
        )
    fit = dict(batch_size=batch, callbacks=callbacks, verbose=0, shuffle=True)
    curves: dict[str, list[float]] = {}
    done = 0
    if first < n_fit:  # the short first epoch, then the rest from epoch 2 on (one schedule over both)
        part = np.random.default_rng(ctx.seed).permutation(n_fit)[:first]
        _extend(curves, model.fit(split.x_fit[part], y_fit[part], epochs=1, **fit).history)
        done = 1
    if done < epochs and not model.stop_training:
        _extend(curves, model.fit(split.x_fit, y_fit, epochs=epochs, initial_epoch=done, **fit).history)
    return FitInfo(epochs=len(curves.get("loss", [])), history=curves)


def _extend(curves: dict[str, list[float]], history: dict[str, list]) -> None:
    for key, values in history.items():
        curves.setdefault(key, []).extend(float(v) for v in values)


def predict_keras(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities in batches through one compiled forward pass per model and input shape: eager calls cost
    2-3x as much per epoch's validation (283 MIT8 images, 64 px: 0.48 s against 0.16 s for a 5-block separable net),
    and tracing the forward pass alone takes a fraction of a second, unlike tracing model.predict anew each trial."""
    forward = _compiled_forward(model, x.shape[1:], x.dtype)
    chunks = [np.asarray(forward(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks).astype(np.float64)


def _compiled_forward(model, shape: tuple, dtype):
    if keras().backend.backend() != "tensorflow":  # KERAS_BACKEND set to another: its eager calls
        return lambda batch: model(batch, training=False)
    import tensorflow as tf

    functions = _forwards.setdefault(model, {})
    key = (tuple(shape), np.dtype(dtype).str)
    if key not in functions:
        held = weakref.ref(model)  # the cache must not keep the model alive: it is keyed weakly by it
        spec = tf.TensorSpec((None, *shape), tf.as_dtype(dtype))  # any batch size (the last batch is short): one trace
        functions[key] = tf.function(lambda batch: held()(batch, training=False), input_signature=[spec])
    return functions[key]


_forwards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def release_keras() -> None:
    """Long sweeps in one process leak graph memory: clear Keras' global state after every trial."""
    keras().backend.clear_session()  # it runs gc.collect() itself
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the heap TensorFlow freed back to the OS (glibc's malloc_trim): a TinyNet worker's RSS grew 482 MB over
    8 one-epoch trials with it, 616 MB without (measured). A no-op where libc has no malloc_trim."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def lr_find(model, split: Split, params: dict[str, Any], low: float = 1e-6, high: float = 1.0, steps: int = 100) -> dict:
    """LR range test (Smith, 2015): raise the LR exponentially each batch and record the smoothed loss.

    Suggests the LR of steepest loss descent, the usual pick for the one-cycle peak.
    """
    k = keras()
    batch = int(params["batch_size"])
    model.compile(optimizer=make_optimizer(params["optimizer"], low, params.get("momentum")),
                  loss="sparse_categorical_crossentropy")
    lrs = np.geomspace(low, high, steps)
    losses: list[float] = []

    class Sweep(k.callbacks.Callback):
        def on_train_batch_begin(self, batch_index, logs=None):
            self.model.optimizer.learning_rate.assign(lrs[len(losses)])

        def on_train_batch_end(self, batch_index, logs=None):
            losses.append(float(logs["loss"]))
            if len(losses) >= steps or not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses):
                self.model.stop_training = True

    rng = np.random.default_rng(0)
    idx = rng.choice(len(split.y_fit), size=steps * batch, replace=len(split.y_fit) < steps * batch)
    model.fit(split.x_fit[idx], split.y_fit[idx], batch_size=batch, epochs=1, callbacks=[Sweep()], verbose=0, shuffle=False)
    smooth = _smooth(np.asarray(losses))
    n = len(smooth)
    grads = np.gradient(smooth) if n > 2 else np.zeros(n)
    best = int(np.argmin(grads[: max(1, n - 2)])) if n > 2 else 0
    return {"lr": lrs[:n].tolist(), "loss": smooth.tolist(), "suggested_lr": float(lrs[best]),
            "min_loss_lr": float(lrs[int(np.argmin(smooth))])}


def _smooth(values: np.ndarray, beta: float = 0.9) -> np.ndarray:
    out, avg = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out
