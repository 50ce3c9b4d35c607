"""MLP: a plain multi-layer perceptron on resized images, and the paper's three variants of it, as one family.

    variant=end_to_end   the MLP itself: image (resized to input_size, RGB or gray) -> dense layers -> softmax
    variant=svm          the trained MLP's hidden-layer features (feature_layer counts back from the last hidden
                         layer, 0 = last) -> normalise -> SVM. Images are resized (PIL, bilinear), never np.resize'd:
                         the paper's 0.41-0.44 came from np.resize, which reshapes the pixel buffer.
    variant=patches      the MLP is trained on patch_size patches of the fit images (a grid with step
                         patch_step x patch_size whose last row and column touch the far edges, or random crops);
                         an image's prediction aggregates its grid patches' by mean probability or by majority vote
    variant=patch_bovw   the patch-trained MLP's hidden features of every grid patch are dense local descriptors
                         (position = patch centre) -> k-means codebook -> histogram (spatial pyramid) -> SVM, through
                         the BoVW family's own pipeline (bench.bovw.pipeline), which caches nothing for it: the
                         descriptors come from this trial's network, so no other trial could hit a cached codebook

Protocol: everything (network, SVM, codebook) is fitted on the fit part of train/ only; the search selects on the
stratified validation hold-out (TrialContext.images), per image: for the patch variants the validation images' patch
predictions are aggregated first. Test is measured the same way and stored, never used to select. The backend prunes
on the network's per-epoch validation accuracy, per image (patches: aggregated by the trial's own `aggregate`;
patch_bovw: mean of patch probabilities), also for svm / patch_bovw whose final figure comes from the SVM fitted after
the last epoch.

Saved model (save_model, for `bench report`): the network as model.keras and, beside it, model-head.joblib with the
params, the class count and the fitted SVM / BoVW pipeline (none for end_to_end and patches); load_model(folder) reads
both back into an MLPModel that predict_proba takes.

Parameter count (count_params): every weight of the network, as Keras counts them (batch-norm statistics included),
plus what the variant adds, in bench.bovw's convention: svm: scaler (2 x dim, when standard) + support vectors x dim
+ dual coefficients + intercepts + Platt parameters; patch_bovw: the same for its histogram SVM + the codebook
(k x feature dim). Before fitting, count_params gives an upper bound (every fit image a support vector); the
breakdown after fitting is in the trial's history (n_params_network, n_params_codebook, n_params_classifier, ...).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import keras_train as kt
from bench.bovw import BoVWPipeline, FeatureClassifier, LocalFeatures, PipelineConfig
from bench.bovw.pipeline import pyramid_cells
from bench.data import Split
from bench.keras_objective import KerasObjective, load_network
from bench.objective import FitInfo, TrialContext, TrialFailed, classification_metrics

VARIANTS = ("end_to_end", "svm", "patches", "patch_bovw")
PATCH_VARIANTS = ("patches", "patch_bovw")
AGGREGATES = ("mean", "vote")
HEAD_FILE = "model-head.joblib"  # beside model.keras; both match bench.artifacts.MODEL_GLOB


# --- patches ---


def grid_positions(size: int, patch: int, step: int) -> list[int]:
    """Patch starts along one axis: every `step` pixels and one flush with the far edge: the grid covers the image."""
    if not 1 <= patch <= size:
        raise TrialFailed(f"patch_size {patch} does not fit a {size}px image: use patch_size <= input_size")
    starts = list(range(0, size - patch + 1, max(1, step)))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def grid_patches(x: np.ndarray, patch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x P x patch x patch x C patches of each image, P x 2 patch centres (x, y) in [0, 1)), row by row."""
    size = x.shape[1]
    starts = grid_positions(size, patch, step)
    corners = [(r, c) for r in starts for c in starts]
    patches = np.stack([x[:, r : r + patch, c : c + patch] for r, c in corners], axis=1)
    centres = np.array([((c + patch / 2) / size, (r + patch / 2) / size) for r, c in corners], np.float32)
    return patches, np.minimum(centres, 0.9999)


def random_patches(x: np.ndarray, patch: int, n: int, seed: int) -> np.ndarray:
    """N x n random crops of each image (seeded), drawn once."""
    size = x.shape[1]
    grid_positions(size, patch, 1)  # same size check
    corners = np.random.default_rng(seed).integers(0, size - patch + 1, (len(x), n, 2))
    return np.stack([np.stack([img[r : r + patch, c : c + patch] for r, c in cs]) for img, cs in zip(x, corners)])


def patch_grid(x: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """grid_patches with the params' patch_size and step (patch_step x patch_size)."""
    p = int(params["patch_size"])
    return grid_patches(x, p, max(1, int(round(params["patch_step"] * p))))


def aggregate(proba: np.ndarray, how: str) -> np.ndarray:
    """N x P x C patch probabilities -> N x C image probabilities: their mean, or the fraction of patch votes per
    class (ties broken by mean probability, which is added at under half a vote)."""
    mean = proba.mean(axis=1)
    if how == "mean":
        return mean
    if how != "vote":
        raise TrialFailed(f"aggregate must be one of {AGGREGATES}, got '{how}'")
    n_patches, n_classes = proba.shape[1], proba.shape[2]
    votes = np.eye(n_classes)[proba.argmax(axis=2)].sum(axis=1) / n_patches
    scores = votes + mean * (0.5 / n_patches)
    return scores / scores.sum(axis=1, keepdims=True)


def image_metrics(patch_proba: np.ndarray, y: np.ndarray, how: str) -> dict[str, float]:
    """The per-epoch validation figures the pruner sees for a patch variant: N x P x C patch probabilities aggregated
    per image by `how` (the trial's own aggregation), as val_accuracy and val_loss."""
    m = classification_metrics(y, aggregate(patch_proba, how))
    return {"val_accuracy": m["accuracy"], "val_loss": m["loss"]}


def layer_units(params: dict[str, Any]) -> list[int]:
    """Units of each hidden layer: `units`, then times `taper` per layer (16 at least)."""
    return [max(16, int(round(params["units"] * params["taper"] ** i))) for i in range(int(params["hidden_layers"]))]


@dataclass
class MLPModel:
    net: Any  # the Keras network
    params: dict[str, Any]
    n_fit: int
    n_classes: int
    extractor: Any = None  # Keras model: input -> the chosen hidden layer (svm, patch_bovw)
    head: FeatureClassifier | None = None  # the SVM (svm) or the BoVW pipeline (patch_bovw), once fitted


class _ImageLevelReports:
    """The trial context as fit_keras sees it while training on patches: it reports per-image validation metrics
    (patch probabilities aggregated per image, as the trial aggregates) instead of Keras' per-patch ones, so the
    pruner compares patch trials with whole-image trials on the same footing. Keras' per-patch figures are kept as
    patch_val_*."""

    def __init__(self, ctx: TrialContext, score):
        self._ctx, self._score = ctx, score
        self.per_image: list[dict[str, float]] = []

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def report(self, epoch: int, metrics: dict[str, float], total_epochs: int = 0) -> None:
        per_patch = {f"patch_{k}": v for k, v in metrics.items() if k.startswith("val_")}
        self.per_image.append(self._score())
        self._ctx.report(epoch, {**metrics, **per_patch, **self.per_image[-1]}, total_epochs)

    def curves(self, history: dict[str, list[float]]) -> dict[str, list[float]]:
        """Keras' history with the per-image validation curves in place of the per-patch ones (kept as patch_*)."""
        out = dict(history)
        for key in self.per_image[0] if self.per_image else ():
            out[f"patch_{key}"] = out.get(key, [])
            out[key] = [m[key] for m in self.per_image]
        return out


class MLP(KerasObjective):
    name = "mlp"
    # the contract checks' trial (bench.checks): seconds, 1 epoch, small inputs
    quick_params = {"input_size": 16, "hidden_layers": 1, "units": 32, "epochs": 1, "batch_size": 16}
    defaults: dict[str, Any] = {
        "variant": "end_to_end",
        # the network
        "input_size": 32,  # images resized to input_size x input_size
        "color": True,
        "hidden_layers": 2,
        "units": 512,
        "taper": 0.5,  # each hidden layer has taper x the units of the one before
        "activation": "relu",
        "init": "he_normal",
        "batch_norm": True,
        "dropout": 0.2,
        "flip": True,  # random horizontal flips while training
        **KerasObjective.training_defaults,
        "one_cycle": True,
        "batch_size": 64,
        # patches and patch_bovw
        "patch_size": 16,
        "patch_step": 0.5,  # grid step as a fraction of patch_size
        "patch_sampling": "grid",  # training patches: the grid, or random crops (validation and test: the grid)
        "patches_per_image": 16,  # random crops per fit image
        "aggregate": "mean",  # patches: mean probability or majority vote
        # svm and patch_bovw: features of a hidden layer
        "feature_layer": 0,  # counted back from the last hidden layer (0: the last); beyond the first means the first
        "svm_normalize": "standard",  # svm: of the hidden features
        "svm_kernel": "rbf",  # svm: linear or rbf
        "C": 1.0,
        "svm_gamma": 1.0,  # svm with the rbf kernel: relative to 1 / mean squared distance (bench.bovw's convention)
        # patch_bovw
        "k": 128,
        "levels": 1,  # spatial pyramid levels (0-2)
        "bovw_normalize": "l1",
        "bovw_kernel": "intersection",
        "bovw_gamma": 1.0,  # bovw_kernel rbf / chi2: relative to 1 / mean (squared) distance, as svm_gamma
        "codebook_samples": 50_000,
    }

    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> Split:
        return ctx.images(int(params["input_size"]), bool(params["color"]))

    def build(self, params: dict[str, Any], split: Split) -> MLPModel:
        if params["variant"] not in VARIANTS:
            raise TrialFailed(f"variant must be one of {', '.join(VARIANTS)}, got '{params['variant']}'")
        size, channels = split.x_fit.shape[1], split.x_fit.shape[3]
        side = int(params["patch_size"]) if params["variant"] in PATCH_VARIANTS else size
        grid_positions(size, side, 1)  # a patch larger than the image fails here, before training
        k = kt.keras()
        L = k.layers
        inputs = k.Input((side, side, channels))
        x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # centred inputs: a dense first layer learns faster
        if params["flip"]:
            x = L.RandomFlip("horizontal")(x)
        x = L.Flatten()(x)
        for i, units in enumerate(layer_units(params), start=1):
            x = L.Dense(units, kernel_initializer=params["init"], use_bias=not params["batch_norm"])(x)
            if params["batch_norm"]:
                x = L.BatchNormalization()(x)
            x = L.Activation(params["activation"], name=f"hidden_{i}")(x)
            if params["dropout"]:
                x = L.Dropout(params["dropout"])(x)
        outputs = L.Dense(split.num_classes, activation="softmax")(x)
        return MLPModel(k.Model(inputs, outputs, name="mlp"), dict(params), len(split.y_fit), split.num_classes)

    @staticmethod
    def _feature_index(params: dict[str, Any]) -> int:
        """1-based index of the hidden layer whose features the SVM / codebook sees."""
        return max(1, int(params["hidden_layers"]) - int(params["feature_layer"]))

    # --- training ---

    def fit(self, model: MLPModel, split: Split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        variant = params["variant"]
        if variant in PATCH_VARIANTS:
            if params["patch_sampling"] == "random":
                p, n = int(params["patch_size"]), int(params["patches_per_image"])
                train = random_patches(split.x_fit, p, n, ctx.seed)
            elif params["patch_sampling"] == "grid":
                train = patch_grid(split.x_fit, params)[0]
            else:
                raise TrialFailed(f"patch_sampling must be grid or random, got '{params['patch_sampling']}'")
            val = patch_grid(split.x_val, params)[0]
            per_patch = dataclasses.replace(
                split, x_fit=_flat(train), y_fit=np.repeat(split.y_fit, train.shape[1]),
                x_val=_flat(val), y_val=np.repeat(split.y_val, val.shape[1]))

            def score():  # the validation patches are cut once, above
                return image_metrics(self._patch_proba(model.net, val), split.y_val, params["aggregate"])

            reports = _ImageLevelReports(ctx, score)
            info = kt.fit_keras(model.net, per_patch, params, reports)
            history = reports.curves(info.history)
        else:
            info = kt.fit_keras(model.net, split, params, ctx)
            history = dict(info.history)
        history["n_params_network"] = [float(model.net.count_params())]
        if variant in ("svm", "patch_bovw"):
            model.extractor = _extractor(model.net, params)
            cfg = self._head_config(params, ctx.seed)
            if variant == "svm":
                model.head = FeatureClassifier(cfg, split.num_classes).fit_vectors(
                    self._features(model, split.x_fit), split.y_fit)
            else:
                model.head = BoVWPipeline(cfg, None, split.num_classes).fit(  # nothing cached: per-trial features
                    self._patch_store(model, split.x_fit), np.arange(len(split.x_fit)), split.y_fit)
            history["feature_dim"] = [float(model.extractor.output.shape[-1])]
            history.update({f"n_params_{k}": [float(v)] for k, v in model.head.param_breakdown().items()})
        return FitInfo(epochs=info.epochs, history=history)

    def _head_config(self, params: dict[str, Any], seed: int) -> PipelineConfig:
        if params["variant"] == "svm":
            if params["svm_kernel"] not in ("linear", "rbf"):
                raise TrialFailed(f"svm_kernel must be linear or rbf for hidden features, got '{params['svm_kernel']}'")
            return PipelineConfig(normalize=params["svm_normalize"], classifier="svm", svm_kernel=params["svm_kernel"],
                                  C=params["C"], gamma=params["svm_gamma"], seed=seed, classifier_seed=seed)
        return PipelineConfig(encoding="hist", k=int(params["k"]), codebook_samples=int(params["codebook_samples"]),
                              levels=int(params["levels"]), normalize=params["bovw_normalize"], classifier="svm",
                              svm_kernel=params["bovw_kernel"], C=params["C"], gamma=params["bovw_gamma"], seed=seed,
                              classifier_seed=seed)

    # --- features and predictions ---

    def _patch_proba(self, net, patches: np.ndarray) -> np.ndarray:
        """N x P x C softmax of N x P patches."""
        return kt.predict_keras(net, _flat(patches)).reshape(len(patches), patches.shape[1], -1)

    def _features(self, model: MLPModel, x: np.ndarray) -> np.ndarray:
        return kt.predict_keras(model.extractor, x).astype(np.float32)

    def _patch_store(self, model: MLPModel, x: np.ndarray) -> LocalFeatures:
        """Hidden features of every grid patch of images x as a BoVW descriptor store. Its key names nothing: the
        pipeline caches nothing for them (cache_dir None)."""
        patches, centres = patch_grid(x, model.params)
        n, per_image = patches.shape[:2]
        desc = self._features(model, _flat(patches))
        xy = np.tile(centres, (n, 1)).astype(np.float16)
        offsets = np.arange(n + 1, dtype=np.int64) * per_image
        return LocalFeatures(desc, xy, offsets, key="mlp-patch-features")

    def predict_proba(self, model: MLPModel, x: np.ndarray) -> np.ndarray:
        """Per image, for every variant (patch variants aggregate their grid patches)."""
        variant = model.params["variant"]
        if variant == "end_to_end":
            return kt.predict_keras(model.net, x)
        if variant == "svm":
            return model.head.predict_vectors(self._features(model, x))
        if variant == "patches":
            return aggregate(self._patch_proba(model.net, patch_grid(x, model.params)[0]), model.params["aggregate"])
        return model.head.predict_proba(self._patch_store(model, x), np.arange(len(x)))

    # --- parameters and housekeeping ---

    def count_params(self, model: MLPModel) -> int:
        """Network weights + the variant's SVM (and codebook); see the module docstring. An upper bound before fit."""
        network = int(model.net.count_params())
        if model.head is not None:
            return network + model.head.n_params()
        variant, params = model.params["variant"], model.params
        if variant not in ("svm", "patch_bovw"):
            return network
        n, c = model.n_fit, model.n_classes
        pairs = c * (c - 1) // 2
        if variant == "svm":
            dim = layer_units(params)[self._feature_index(params) - 1]
            extra = 2 * dim if params["svm_normalize"] == "standard" else 0
        else:
            dim = int(params["k"]) * sum(pyramid_cells(int(params["levels"]), PipelineConfig.layout))
            extra = int(params["k"]) * layer_units(params)[self._feature_index(params) - 1]
        return network + extra + n * dim + (c - 1) * n + 3 * pairs

    def network(self, model: MLPModel):
        return model.net

    def save_model(self, model: MLPModel, folder) -> Path:
        """folder/model.keras (the network) and folder/model-head.joblib (params, class count and fitted head), which
        load_model reads back; returns the .keras path, the file `bench report` opens."""
        import joblib

        path = super().save_model(model, folder)
        joblib.dump({"params": model.params, "n_fit": model.n_fit, "n_classes": model.n_classes, "head": model.head},
                    Path(folder) / HEAD_FILE)
        return path

    def load_model(self, folder) -> MLPModel:
        """What save_model wrote into folder, as the MLPModel predict_proba takes. The head is a joblib pickle, which
        runs code as it loads: load only from a results folder you trust."""
        import joblib

        saved = joblib.load(Path(folder) / HEAD_FILE)
        net = load_network(folder)
        model = MLPModel(net, saved["params"], saved["n_fit"], saved["n_classes"], head=saved["head"])
        if model.head is not None:
            model.extractor = _extractor(net, model.params)
        return model


def _extractor(net, params: dict[str, Any]):
    """Keras model: the network's input -> the hidden layer whose features the SVM / codebook sees."""
    return kt.keras().Model(net.input, net.get_layer(f"hidden_{MLP._feature_index(params)}").output)


def _flat(patches: np.ndarray) -> np.ndarray:
    """N x P x ... -> (N*P) x ..., image by image."""
    return patches.reshape(-1, *patches.shape[2:])
