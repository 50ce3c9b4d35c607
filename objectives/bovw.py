"""Bag of Visual Words: OpenCV local descriptors -> codebook (k-means) or GMM -> histogram or Fisher vector, with a
spatial pyramid -> normalisation -> optional PCA / LDA -> SVM (linear, RBF, histogram intersection, chi2), kNN or
logistic regression.

Protocol (the paper's): the search selects on stratified `cv_folds`-fold (8) cross-validation accuracy over train/.
Inside every fold, everything learned (descriptor sample, codebook or GMM + PCA, scaler, PCA / LDA, classifier) is
fitted on that fold's training part only: there is no leakage from the held-out fold. The folds and the codebook
sample are seeded by the study's split seed (so trials compare on the same folds and share cached codebooks); the
trial seed seeds the SVM's Platt scaling. Then the model is refitted on all of train/ and measured on test/, which
is stored and never used to select.

Speed: descriptors are extracted once per (data fingerprint, descriptor settings) in all cores and cached on disk
(bench.bovw.descriptors); codebooks / GMMs are cached per (descriptors, k, seed, training images) and visual words
per (codebook, images), so a trial that only changes the pyramid, normalisation or classifier reuses all of them.
The split's x arrays hold image indices into the descriptor store, not pixels: no trial decodes an image twice.

Parameter count (count_params): codebook k x D (Fisher: descriptor PCA + GMM means, variances and weights) + scaler
(2 x dim, when standard) + PCA / LDA projection + classifier (SVM: support vectors x feature dim + dual coefficients +
intercepts + Platt parameters, or for a linear kernel its primal weights if fewer; kNN: stored training samples x
dim; logistic regression: coef + intercept). Before fitting, the base template gets an upper bound (every training
image a support vector); the exact count after fitting is in the trial's history as `n_params_fitted`.

Saved model (save_model, for `bench report` and `bench export`): model.joblib holds the descriptor settings and the
fitted pipeline (codebook or GMM, scaler, projection, classifier), not the descriptor store; BoVW.load_model(folder)
reads it back, and predict_proba on RGB images extracts their descriptors as the search did.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import data as bdata
from bench.bovw.descriptors import (BINARY, DescriptorSpec, LocalFeatures, cached_store, extract_image, load_features,
                                    parse_sizes)
from bench.bovw.pipeline import BoVWError, BoVWPipeline, PipelineConfig, fisher_dim, pyramid_cells
from bench.objective import FitInfo, Objective, TrialContext, classification_metrics

SPEC_KEYS = ("descriptor", "keypoints", "step", "patch_sizes", "max_features", "image_size", "color")
PIPE_KEYS = tuple(f for f in PipelineConfig.__dataclass_fields__ if f not in ("seed", "classifier_seed"))
MODEL_FILE = "model.joblib"  # matches bench.artifacts.MODEL_GLOB, so the top-k rule deletes it too


@dataclass
class FeatureSplit(bdata.Split):
    """A Split whose x arrays are image indices into `features` (train images first, then test)."""

    features: LocalFeatures | None = None
    cache_dir: Any = None


@dataclass
class BoVWModel:
    spec: DescriptorSpec
    config: PipelineConfig
    features: LocalFeatures | None  # None for a loaded model whose search's descriptors are no longer cached
    cache_dir: Any
    cv_folds: int
    pipeline: BoVWPipeline | None = None
    cv_metrics: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_classes: int = 0


class BoVW(Objective):
    name = "bovw"
    # the contract checks' trial (bench.checks): seconds, 1 epoch, small inputs
    quick_params = {"image_size": 64, "step": 16, "patch_sizes": "8", "k": 16, "levels": 0, "cv_folds": 2,
                    "svm_kernel": "linear"}
    defaults: dict[str, Any] = {
        # descriptors (cached on disk per these settings)
        "descriptor": "sift",  # sift, daisy, orb, kaze, akaze, brisk (surf: patented, not in the wheels)
        "keypoints": "dense",  # dense grid or the descriptor's detector
        "step": 8,
        "patch_sizes": "8,16",  # one or more dense patch sizes: "16", "8,16", "8,16,24"
        "max_features": 500,  # detector keypoints kept per image
        "image_size": 256,
        "color": "gray",  # gray, rgb, opponent
        "rootsift": False,
        # encoding
        "encoding": "hist",  # hist or fisher
        "k": 256,
        "codebook_samples": 100_000,
        "fisher_components": 64,
        "fisher_pca": 64,
        "fisher_weights": False,
        "levels": 2,
        "layout": "square",
        "level_weights": "lazebnik",
        # features -> classifier
        "normalize": "l1",
        "reduce": "none",
        "pca_components": 0.95,
        "classifier": "svm",
        "svm_kernel": "intersection",
        "C": 1.0,
        "gamma": 1.0,
        "knn_k": 5,
        "knn_metric": "euclidean",
        # protocol
        "cv_folds": 8,
    }

    def _cache_dir(self, ctx: TrialContext):
        return ctx.cache_dir or bdata.default_cache_dir()

    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> FeatureSplit:
        spec = DescriptorSpec(**{k: params[k] for k in SPEC_KEYS})
        catalog = ctx.catalog
        cache_dir = self._cache_dir(ctx)
        features = load_features(catalog.train.paths + catalog.test.paths, spec, catalog.fingerprint(cache_dir), cache_dir,
                                 self.options.get("n_jobs") or os.cpu_count())
        n_train, n_test = len(catalog.train.paths), len(catalog.test.paths)
        if n_test == 0:
            raise bdata.DataError("the test split is empty")
        empty = np.zeros(0, np.int64)
        return FeatureSplit(np.arange(n_train), catalog.train.labels, empty, empty, n_train + np.arange(n_test),
                            catalog.test.labels, catalog.classes, features=features, cache_dir=cache_dir)

    def build(self, params: dict[str, Any], split: FeatureSplit) -> BoVWModel:
        spec = DescriptorSpec(**{k: params[k] for k in SPEC_KEYS})
        cfg = PipelineConfig(**{k: params[k] for k in PIPE_KEYS})
        return BoVWModel(spec, cfg, split.features, split.cache_dir, int(params["cv_folds"]),
                         n_train=len(split.y_fit), n_classes=split.num_classes)

    def fit(self, model: BoVWModel, split: FeatureSplit, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        """Cross-validate (reporting the running CV accuracy after each fold, so a backend may prune), then refit on all of train."""
        cfg = PipelineConfig(**{**{k: params[k] for k in PIPE_KEYS}, "seed": ctx.split_seed, "classifier_seed": ctx.seed})
        model.config = cfg
        x, y = split.x_fit, split.y_fit
        n_folds = min(model.cv_folds, int(np.bincount(y).min()))
        if n_folds < 2:
            raise BoVWError(f"cross-validation needs at least 2 training images per class, the smallest class has {n_folds}")
        proba = np.zeros((len(y), split.num_classes))
        seen = np.zeros(len(y), bool)
        fold_acc = []
        for i, (a, b) in enumerate(bdata.kfold_indices(y, n_folds, ctx.split_seed)):
            pipe = BoVWPipeline(cfg, model.cache_dir, split.num_classes).fit(model.features, x[a], y[a])
            proba[b] = pipe.predict_proba(model.features, x[b])
            seen[b] = True
            fold_acc.append(float((proba[b].argmax(1) == y[b]).mean()))
            running = float((proba[seen].argmax(1) == y[seen]).mean())
            ctx.report(i, {"val_accuracy": running, "fold_accuracy": fold_acc[-1]}, total_epochs=n_folds)
        model.cv_metrics = classification_metrics(y, proba)
        model.pipeline = BoVWPipeline(cfg, model.cache_dir, split.num_classes).fit(model.features, x, y)
        breakdown = model.pipeline.param_breakdown()
        history = {
            "fold_accuracy": fold_acc,
            "n_params_fitted": [float(sum(breakdown.values()))],
            **{f"n_params_{k}": [float(v)] for k, v in breakdown.items()},
            "feature_dim": [float(model.pipeline.feature_dim)],
            "descriptor_cache_hit": [float(model.features.from_cache)],
            "extract_seconds": [float(model.features.seconds)],
            "descriptors_per_image": [float(model.features.offsets[-1] / max(model.features.n_images, 1))],
        }
        return FitInfo(epochs=n_folds, history=history)

    def validation_metrics(self, model: BoVWModel, split, params, ctx) -> dict[str, float]:
        """Stratified k-fold CV over train/ (computed in fit): accuracy, balanced accuracy, macro-F1, log loss."""
        return dict(model.cv_metrics)

    def predict_proba(self, model: BoVWModel, x: np.ndarray) -> np.ndarray:
        """x: image indices into the model's descriptor store (the search's split), or N x S x S x 3 uint8 RGB images
        (bench.data.decode at spec.image_size: bench predict), whose descriptors are extracted as the search did."""
        if x.ndim == 1:
            if model.features is None:
                raise BoVWError(f"the descriptors of the search's images are no longer cached under {model.cache_dir}; "
                                "pass the images themselves")
            return model.pipeline.predict_proba(model.features, x)
        parts = [extract_image(np.ascontiguousarray(img), model.spec) for img in x]
        offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in parts])]).astype(np.int64)
        store = LocalFeatures(np.concatenate([d for d, _ in parts]), np.concatenate([xy for _, xy in parts]), offsets,
                              key="exported-model-input", binary=model.spec.descriptor in BINARY)
        return model.pipeline.predict_proba(store, np.arange(len(x)))

    def save_model(self, model: BoVWModel, folder) -> Path:
        """folder/model.joblib: the descriptor settings and the fitted pipeline (codebook, projections, classifier), with
        the key of the descriptor store its training inputs index (the images' descriptors stay in the disk cache, not
        copied here). The pipeline is saved without its cache folder: the visual words of new images are nobody's to
        cache."""
        import joblib

        pipeline = copy.copy(model.pipeline)
        pipeline.cache_dir = None
        path = Path(folder) / MODEL_FILE
        joblib.dump({"spec": asdict(model.spec), "config": model.config, "pipeline": pipeline, "cv_folds": model.cv_folds,
                     "cv_metrics": model.cv_metrics, "n_train": model.n_train, "n_classes": model.n_classes,
                     "cache_dir": str(model.cache_dir), "features": model.features.key}, path)
        return path

    def load_model(self, folder) -> BoVWModel:
        """What save_model wrote. It predicts on RGB images (bench predict), and on image indices of the search's
        descriptor store while that store is still in its cache (the contract checks, bench report). model.joblib is a
        pickle, which runs code as it loads: load only from a folder you trust."""
        import joblib

        saved = joblib.load(Path(folder) / MODEL_FILE)
        spec = DescriptorSpec(**saved["spec"])
        features = cached_store(saved["cache_dir"], saved["features"], spec.descriptor in BINARY)
        return BoVWModel(spec, saved["config"], features, saved["cache_dir"], saved["cv_folds"], saved["pipeline"],
                         saved["cv_metrics"], saved["n_train"], saved["n_classes"])

    def count_params(self, model: BoVWModel) -> int:
        """Codebook + projections + classifier (see the module docstring); an upper bound until the model is fitted."""
        if model.pipeline is not None:
            return model.pipeline.n_params()
        cfg, spec_dim = model.config, model.features.dim
        cells = sum(pyramid_cells(cfg.levels, cfg.layout))
        if cfg.encoding == "fisher":
            d = min(cfg.fisher_pca, spec_dim) if cfg.fisher_pca > 0 else spec_dim
            codebook = 2 * cfg.fisher_components * d + cfg.fisher_components + (d * spec_dim + spec_dim if d < spec_dim else 0)
            dim = cells * fisher_dim(cfg.fisher_components, d, cfg.fisher_weights)
        else:
            codebook, dim = cfg.k * spec_dim, cells * cfg.k
        n, c = model.n_train, model.n_classes
        extra = 2 * dim if cfg.normalize == "standard" else 0
        if cfg.reduce == "pca":
            new = min(n, dim) if cfg.pca_components < 1 else min(int(cfg.pca_components), n, dim)
            extra, dim = extra + new * dim + dim, new
        elif cfg.reduce == "lda":
            extra, dim = extra + (c - 1) * dim + dim, c - 1
        pairs = c * (c - 1) // 2
        clf = {"svm": n * dim + (c - 1) * n + 3 * pairs, "knn": n * dim, "logreg": c * dim + c}[cfg.classifier]
        if cfg.classifier == "svm" and cfg.svm_kernel == "linear":
            clf = min(clf, pairs * dim + 3 * pairs)  # a linear SVM counts its primal weights when fewer
        return int(codebook + extra + clf)


def describe(params: dict[str, Any]) -> str:
    """One line naming a configuration (for benchmark output)."""
    p = {**BoVW.defaults, **params}
    sizes = ",".join(map(str, parse_sizes(p["patch_sizes"])))
    enc = f"k={p['k']}" if p["encoding"] == "hist" else f"FV K={p['fisher_components']} pca={p['fisher_pca']}"
    return f"{p['descriptor']} {p['keypoints']}(step {p['step']}, sizes {sizes}) {p['image_size']}px {p['color']} | {enc} L{p['levels']} | {p['classifier']}"
