"""Transfer learning from a pretrained backbone (bench.transfer.backbones), as the paper did with InceptionV3.

What a trial chooses:
- backbone and weights: efficientnet_lite0 (ImageNet weights that work offline) or inceptionv3 (`objectives/inception.py`);
  weights "imagenet", a local weights file, or "none" (random init).
- mode: freeze_all_but_head (only the new head trains); unfreeze_blocks (the last `unfreeze_blocks` blocks train as
  well, or the first ones with unfreeze_from=bottom); cut_after (the network ends at block `cut_after`, then
  global-average-pooling + the head; `unfreeze_blocks` of the cut network's top blocks train too).
  Batch-norm layers stay in inference mode even in unfrozen blocks unless train_bn (the usual fine-tuning advice:
  batch statistics of small batches would wash out the pretrained ones).
- activation: the paper's knob. It swaps the function of every Activation layer of the backbone (ReLU6 / ReLU) for
  relu, elu or tanh, as the paper did. The pretrained weights were learned for the original function, so any
  other choice breaks the pretrained features; "keep" leaves them alone.
- head: GAP -> [Dense(head_units, head_activation)] -> Dropout(head_dropout) -> Dense(classes, softmax).
- augmentation (training only, Keras preprocessing layers before the backbone): horizontal flip, rotation (degrees),
  width/height shift and zoom (fractions of the size), shear (a fraction, Keras' RandomShear factor).
- dataset: full (the fit part of train/) or tiny (a seeded `tiny_per_class` per class of it; the paper's 400 images).
- optimizer / lr / momentum / one_cycle / epochs / batch_size / patience, as every Keras family.

Speed: the frozen bottom of the network (everything below the first trainable block) is computed once per
(data, backbone, weights, input size, activation, cut, boundary) and cached on disk (bench.transfer.features); then
only the trainable top runs, so head-only trials take seconds. Augmentation changes the images every epoch, so an
augmented trial (or unfreeze_from=bottom, or random weights) runs the whole network, and says how long it will take.

Protocol: validation is the study's seeded hold-out of train/; the test set is measured, never used to select.
Parameter count: every number of the composed network (backbone as cut + head), as Keras counts them (batch-norm
moving statistics included); the trainable count is in the history as `trainable_params`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import data as bdata
from bench import keras_train as kt
from bench.keras_objective import KerasObjective, load_network
from bench.objective import FitInfo, TrialContext, TrialFailed
from bench.transfer.backbones import block_of_layers, get_backbone
from bench.transfer.features import cached_features, feature_key

MODES = ("freeze_all_but_head", "unfreeze_blocks", "cut_after")
SWAPS = ("keep", "relu", "elu", "tanh")
AUGMENTATIONS = ("flip", "rotation", "shift", "shear", "zoom")
INPUTS_FILE = "model-inputs.json"  # beside model.keras; both match bench.artifacts.MODEL_GLOB


@dataclasses.dataclass
class TransferModel:
    """The composed network and what the trial trains: `trained` on `inputs` ("images" or cached "features")."""

    whole: Any
    trained: Any
    inputs: str
    cache_hit: bool = False  # the frozen bottom's features came from the cache
    boundary: str | None = None  # inputs "features": the layer of `whole` they are the output of


@dataclasses.dataclass
class TransferSplit(bdata.Split):
    """A Split that says what build needs to know of the data: where the backbone's weights are cached, and whether
    its x arrays hold images (boundary None) or the outputs of the frozen bottom up to layer `boundary`."""

    cache: Path | None = None
    boundary: str | None = None
    cache_hit: bool = False  # those outputs came from the feature cache


def _with(split: bdata.Split, **extra) -> TransferSplit:
    return TransferSplit(**{f.name: getattr(split, f.name) for f in dataclasses.fields(split)}, **extra)


def trainable_count(model) -> int:
    """Numbers the optimizer updates (Keras' count_params counts every weight)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def augmentation_layers(params: dict[str, Any]) -> list:
    """Keras preprocessing layers for the augmentations switched on; they act in training only."""
    L = kt.keras().layers
    layers = []
    if params["flip"]:
        layers.append(L.RandomFlip("horizontal", name="aug_flip"))
    if params["rotation"]:
        layers.append(L.RandomRotation(params["rotation"] / 360.0, fill_mode="reflect", name="aug_rotation"))
    if params["shift"]:
        layers.append(L.RandomTranslation(params["shift"], params["shift"], fill_mode="reflect", name="aug_shift"))
    if params["shear"]:
        layers.append(L.RandomShear(params["shear"], params["shear"], fill_mode="reflect", name="aug_shear"))
    if params["zoom"]:
        layers.append(L.RandomZoom(params["zoom"], fill_mode="reflect", name="aug_zoom"))
    return layers


class Transfer(KerasObjective):
    name = "transfer"
    # the contract checks' trial (bench.checks): seconds, 1 epoch, small inputs
    quick_params = {"input_size": 32, "epochs": 1, "batch_size": 16}
    defaults: dict[str, Any] = {
        "backbone": "efficientnet_lite0",
        "weights": "imagenet",
        "input_size": 224,
        "mode": "freeze_all_but_head",
        "unfreeze_blocks": 0,
        "unfreeze_from": "top",
        "cut_after": "",
        "train_bn": False,
        "activation": "keep",
        "head_units": 0,
        "head_activation": "relu",
        "head_dropout": 0.2,
        "flip": False,
        "rotation": 0.0,
        "shift": 0.0,
        "shear": 0.0,
        "zoom": 0.0,
        "dataset": "full",
        "tiny_per_class": 50,
        **KerasObjective.training_defaults,
        "epochs": 10,
    }

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        params = super().resolve(params)
        backbone = get_backbone(params["backbone"])
        if params["mode"] not in MODES:
            raise TrialFailed(f"mode must be one of {MODES}, got '{params['mode']}'")
        if params["activation"] not in SWAPS:
            raise TrialFailed(f"activation must be one of {SWAPS}, got '{params['activation']}'")
        if params["mode"] == "cut_after" and params["cut_after"] not in backbone.block_ends:
            raise TrialFailed(f"cut_after must name a block end of {backbone.name}: {', '.join(backbone.block_ends)}")
        if int(params["input_size"]) < backbone.min_input_size:
            raise TrialFailed(f"{backbone.name} needs input_size >= {backbone.min_input_size}")
        if params["weights"] in ("none", "None", ""):
            params["weights"] = None
        return params

    # --- the network ---
    def _whole(self, params: dict[str, Any], num_classes: int, ctx_cache):
        """The composed network with its trainable flags set."""
        k = kt.keras()
        L = k.layers
        backbone = get_backbone(params["backbone"])
        net = backbone.make(int(params["input_size"]), params["weights"], ctx_cache)
        kt.seed_everything(getattr(self, "seed", 0))  # the head's init depends on the seed only, not on a first conversion
        ends = self._ends(params)
        x = net.get_layer(ends[-1]).output
        x = L.GlobalAveragePooling2D(name="features")(x)
        if params["head_units"]:
            x = L.Dense(int(params["head_units"]), activation=params["head_activation"], name="head_dense")(x)
        if params["head_dropout"]:
            x = L.Dropout(float(params["head_dropout"]), name="head_dropout")(x)
        outputs = L.Dense(num_classes, activation="softmax", name="head_softmax")(x)
        whole = k.Model(net.inputs[0], outputs, name=f"{backbone.name}_transfer")

        if params["activation"] != "keep":  # the paper's swap, in place: every Activation layer of the backbone
            fn = k.activations.get(params["activation"])
            for layer in whole.layers:
                if layer.__class__.__name__ == "Activation":
                    layer.activation = fn

        blocks = block_of_layers(whole, tuple(ends))
        trainable = self.trainable_blocks(params, len(ends))
        for layer in whole.layers:
            if layer.name in blocks:
                is_bn = layer.__class__.__name__ == "BatchNormalization"
                layer.trainable = blocks[layer.name] in trainable and (params["train_bn"] or not is_bn)
        return whole

    @staticmethod
    def _ends(params: dict[str, Any]) -> list[str]:
        """The names of the backbone's block ends, after any cut."""
        ends = list(get_backbone(params["backbone"]).block_ends)
        if params["mode"] == "cut_after":
            ends = ends[: ends.index(params["cut_after"]) + 1]
        return ends

    @staticmethod
    def trainable_blocks(params: dict[str, Any], n_blocks: int) -> set[int]:
        k = 0 if params["mode"] == "freeze_all_but_head" else max(0, min(int(params["unfreeze_blocks"]), n_blocks))
        if params["unfreeze_from"] == "bottom":
            return set(range(k))
        return set(range(n_blocks - k, n_blocks))

    def _boundary(self, params: dict[str, Any], ends: list[str]) -> str | None:
        """Where the cacheable frozen bottom ends, or None when the whole network must run on images each epoch."""
        augmented = any(params[a] for a in AUGMENTATIONS)
        if params["weights"] is None or augmented:
            return None
        trainable = self.trainable_blocks(params, len(ends))
        if not trainable:
            return "features"  # everything below the head is frozen: cache the pooled features
        first = min(trainable)
        return ends[first - 1] if first > 0 else None

    # --- the template's parts ---
    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> TransferSplit:
        """The images, or the cached outputs of the frozen bottom when there is one to cache: then the
        split's x arrays hold those features, so validation and test read them like images. On a cache miss the
        network is built here to compute them, and built again by build (the features do not depend on the head)."""
        size, tiny = int(params["input_size"]), self._tiny(params)
        cache = ctx.cache_dir or bdata.default_cache_dir()
        boundary = self._boundary(params, self._ends(params))
        if boundary is None:
            return _with(ctx.images(size, True, tiny), cache=cache)

        def bottom():
            whole = self._whole(params, len(ctx.catalog.classes), cache)
            return kt.keras().Model(whole.input, whole.get_layer(boundary).output, name="frozen_bottom")

        key = feature_key(data=ctx.catalog.fingerprint(cache), backbone=params["backbone"], weights=self._weights_id(params),
                          size=size, activation=params["activation"], ends=self._ends(params)[-1], boundary=boundary)
        arrays = bdata.load_arrays(ctx.catalog, size, True, ctx.cache_dir)
        features, hit = cached_features(bottom, {"x_train": arrays.x_train, "x_test": arrays.x_test},
                                        cache / "features" / key, f"{params['backbone']} features up to {boundary}")
        features_only = dataclasses.replace(arrays, x_train=features["x_train"], x_test=features["x_test"])
        split = bdata.make_split(features_only, ctx.val_fraction, ctx.split_seed, tiny)
        return _with(split, cache=cache, boundary=boundary, cache_hit=hit)

    def build(self, params: dict[str, Any], split: TransferSplit) -> TransferModel:
        """The composed network, and what trains: its top above the split's boundary when the split holds features,
        else the whole network behind the augmentation layers."""
        whole = self._whole(params, split.num_classes, split.cache or bdata.default_cache_dir())
        if split.boundary is not None:
            top = kt.keras().Model(whole.get_layer(split.boundary).output, whole.output, name="trained_top")
            return TransferModel(whole, top, "features", split.cache_hit, split.boundary)
        return TransferModel(whole, self._augmented(whole, params), "images")

    @staticmethod
    def _tiny(params):
        return int(params["tiny_per_class"]) if params["dataset"] == "tiny" else None

    @staticmethod
    def _augmented(whole, params):
        """whole, behind the augmentation layers switched on (whole itself when none is)."""
        aug = augmentation_layers(params)
        if not aug:
            return whole
        k = kt.keras()
        inputs = k.Input(tuple(whole.inputs[0].shape[1:]), name="image")
        x = inputs
        for layer in aug:
            x = layer(x)
        return k.Model(inputs, whole(x), name="augmented")

    @staticmethod
    def _weights_id(params):
        weights = params["weights"]
        if weights in (None, "imagenet"):
            return weights
        stat = Path(weights).stat()
        return f"{Path(weights).resolve()}:{stat.st_size}:{int(stat.st_mtime)}"

    def fit(self, model: TransferModel, split: bdata.Split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        if model.inputs == "images":
            self._announce(model, split, params)
        info = kt.fit_keras(model.trained, split, params, ctx)
        info.history["trainable_params"] = [float(trainable_count(model.whole))]
        info.history["feature_cache_hit"] = [float(model.cache_hit)]
        return info

    @staticmethod
    def _announce(model: TransferModel, data: bdata.Split, params: dict[str, Any]) -> None:
        """The whole network runs each epoch: time one batch and say how long the trial will take."""
        batch = data.x_fit[: int(params["batch_size"])]
        model.trained(batch, training=False)  # the first call builds; time the second
        start = time.perf_counter()
        model.trained(batch, training=False)
        per_image = (time.perf_counter() - start) / len(batch)
        # a training step is a forward pass plus a backward pass through the trainable part (about 2 forward passes
        # worth of it); validation is a forward pass. Measured on MIT8's tiny set, flip on, head only: 19.8 s estimated,
        # 19 s per epoch seen.
        whole = model.whole
        trainable = trainable_count(whole) / max(1, whole.count_params())
        epoch = per_image * ((1 + 2 * trainable) * len(data.y_fit) + len(data.y_val))
        print(f"bench: the whole network runs every epoch (augmentation or no cacheable frozen part): about "
              f"{epoch:.0f} s per epoch, {epoch * int(params['epochs']) / 60:.1f} min for {params['epochs']} epochs",
              file=sys.stderr, flush=True)

    def network(self, model: TransferModel):
        """The composed network, backbone as cut + head: what count_params counts (every number, batch-norm statistics
        included) and save_model saves."""
        return model.whole

    def predict_proba(self, model: TransferModel, x: np.ndarray) -> np.ndarray:
        return kt.predict_keras(model.trained, x)

    def save_model(self, model: TransferModel, folder) -> Path:
        """The composed network as folder/model.keras, and in folder/model-inputs.json what the trained part took
        (features up to which layer, or images), which load_model reads back."""
        path = super().save_model(model, folder)
        (Path(folder) / INPUTS_FILE).write_text(json.dumps({"inputs": model.inputs, "boundary": model.boundary}))
        return path

    def load_model(self, folder) -> TransferModel:
        """What save_model wrote: the model takes what the trial's split held (its features or images); its
        `whole` (network()) always takes images, for `bench report` and `bench export`."""
        whole = load_network(folder)
        saved = Path(folder) / INPUTS_FILE
        boundary = json.loads(saved.read_text()).get("boundary") if saved.exists() else None
        if boundary is None:
            return TransferModel(whole, whole, "images")
        top = kt.keras().Model(whole.get_layer(boundary).output, whole.output, name="trained_top")
        return TransferModel(whole, top, "features", boundary=boundary)

    def set_seed(self, seed: int) -> None:
        self.seed = seed  # _whole seeds the head's init with it
        super().set_seed(seed)
