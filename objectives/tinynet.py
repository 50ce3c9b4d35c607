"""TinyNet: a small CNN trained from scratch, with every knob the paper tuned.

The paper's baseline (34,472 params) is one point of this space:
    input_size=32, blocks=2, base_filters=32, growth=1, kernel_size=5, downsample=maxpool, padding=valid,
    head=flatten, batch_norm=False
and so is its final TinyNet: 4 blocks of [32, 64, 128, 256] 3x3 stride-2 conv + batch-norm + ReLU, He init,
global average pooling, 64x64 input (base_filters=32, growth=2, downsample=stride2, head=gap).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench import keras_train as kt
from bench.data import Split
from bench.keras_objective import KerasObjective
from bench.objective import FitInfo, TrialContext, TrialFailed

ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "gelu")
INITIALIZERS = ("glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "random_normal", "zeros")


def every_other(L, x, stride: int):
    """Every stride-th pixel of x, as a 1x1 max-pool (a layer every exporter knows). A 1x1 convolution of stride s is
    a 1x1 convolution of this: the two compute the same function with the same weights. Written this way because
    TensorFlow 2.21's oneDNN CPU kernels crash on strided 1x1 convolutions (a segfault or heap corruption in training).
    Measured: they crashed all 4 residual TinyNets tried at 80-128 px, a plain net of strided 1x1 convolutions at 96 px,
    and a residual 64 px trial of a 200-trial search (2 runs in 2); written this way, those nets train."""
    return L.MaxPooling2D(1, strides=stride, padding="same")(x) if stride > 1 else x


def block_filters(blocks: int, base: int, growth: float, cap: int) -> list[int]:
    return [max(1, min(cap, int(round(base * growth**i)))) for i in range(blocks)]


class TinyNet(KerasObjective):
    name = "tinynet"
    # the contract checks' trial (bench.checks): seconds, 1 epoch, small inputs
    quick_params = {"input_size": 32, "blocks": 2, "base_filters": 8, "epochs": 1, "batch_size": 16}
    defaults: dict[str, Any] = {
        "input_size": 64,
        "color": True,
        "blocks": 4,
        "base_filters": 32,
        "growth": 2.0,
        "max_filters": 256,
        "convs_per_block": 1,
        "kernel_size": 3,
        "padding": "same",
        "activation": "relu",
        "init": "he_normal",
        "batch_norm": True,
        "bn_momentum": 0.99,
        "dropout": 0.0,
        "downsample": "stride2",
        "residual": False,
        "separable": False,
        "head": "gap",
        "dense_units": 0,
        "head_dropout": 0.0,
        **KerasObjective.training_defaults,  # adam, lr 1e-3, batch 32, 20 epochs, no one-cycle, no early stopping
        "flip": True,
        "shift": 0.0,
        "label_smoothing": 0.0,
        "weight_decay": 0.0,
    }

    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> Split:
        return ctx.images(int(params["input_size"]), bool(params["color"]))

    def build(self, params: dict[str, Any], split: Split):
        k = kt.keras()
        L = k.layers
        size, channels = int(params["input_size"]), 3 if params["color"] else 1
        kernel, padding, act, init = int(params["kernel_size"]), params["padding"], params["activation"], params["init"]
        if params["residual"] and padding != "same":
            raise TrialFailed("residual blocks need padding=same (the shortcut must match the block's output shape)")

        inputs = k.Input((size, size, channels))
        x = L.Rescaling(1.0 / 255)(inputs)
        if params["flip"]:
            x = L.RandomFlip("horizontal")(x)
        if params["shift"]:
            x = L.RandomTranslation(params["shift"], params["shift"], fill_mode="reflect")(x)

        def conv(x, filters, stride):
            if kernel == 1 and stride > 1:  # the same function, without the strided 1x1 kernel oneDNN crashes on
                x, stride = every_other(L, x, stride), 1
            if params["separable"]:
                return L.SeparableConv2D(filters, kernel, strides=stride, padding=padding,
                                         depthwise_initializer=init, pointwise_initializer=init)(x)
            return L.Conv2D(filters, kernel, strides=stride, padding=padding, kernel_initializer=init)(x)

        spatial = size
        for filters in block_filters(int(params["blocks"]), int(params["base_filters"]), float(params["growth"]), int(params["max_filters"])):
            shortcut = x
            down = spatial >= 2  # never shrink below 1x1: deep nets on small inputs stop downsampling
            for j in range(int(params["convs_per_block"])):
                stride = 2 if (params["downsample"] == "stride2" and j == 0 and down) else 1
                if padding == "valid" and spatial < kernel:
                    raise TrialFailed(f"input {size}px is too small for {params['blocks']} blocks of {kernel}x{kernel} valid convs")
                spatial = (spatial - (kernel - 1 if padding == "valid" else 0) + stride - 1) // stride
                x = conv(x, filters, stride)
                if params["batch_norm"]:
                    x = L.BatchNormalization(momentum=float(params["bn_momentum"]))(x)
                last = j == int(params["convs_per_block"]) - 1
                if not (params["residual"] and last):
                    x = L.Activation(act)(x)
            if params["residual"]:
                if shortcut.shape[-1] != filters or shortcut.shape[1] != x.shape[1]:
                    step = 2 if shortcut.shape[1] != x.shape[1] else 1
                    # a strided 1x1 convolution, written as one of every other pixel (see every_other)
                    shortcut = L.Conv2D(filters, 1, kernel_initializer=init)(every_other(L, shortcut, step))
                x = L.Activation(act)(L.Add()([x, shortcut]))
            if params["downsample"] == "maxpool" and spatial >= 2:
                x = L.MaxPooling2D(2)(x)
                spatial //= 2
            if params["dropout"]:
                x = L.Dropout(params["dropout"])(x)

        x = L.GlobalAveragePooling2D()(x) if params["head"] == "gap" else L.Flatten()(x)
        if params["dense_units"]:
            x = L.Dense(int(params["dense_units"]), activation=act, kernel_initializer=init)(x)
        if params["head_dropout"]:
            x = L.Dropout(params["head_dropout"])(x)
        outputs = L.Dense(split.num_classes, activation="softmax", kernel_initializer=init)(x)
        return k.Model(inputs, outputs, name="tinynet")

    def predict_proba(self, model, x: np.ndarray) -> np.ndarray:
        """Class probabilities; a model trained on horizontal flips also sees each image flipped, and the two are
        averaged (test-time augmentation: the flip is in the model, so a saved model predicts the same way)."""
        proba = kt.predict_keras(model, x)
        if any(type(layer).__name__ == "RandomFlip" for layer in model.layers):
            proba = (proba + kt.predict_keras(model, x[:, :, ::-1])) / 2
        return proba
