"""A model family of your own, in one file: PCA + logistic regression on raw pixels (scikit-learn), no Keras.

Use it with no change to bench, from a folder holding this file and search_spaces/pixels.yaml:

    bench check-objective pixels --objective-file pixel_pca.py:PixelPCA
    bench search pixels --objective-file pixel_pca.py:PixelPCA --trials 40

or install this folder (`pip install .`: its pyproject.toml declares the `bench.objectives` entry point), and then
`bench search pixels` finds it by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.objective import FitInfo, Objective, TrialContext, classification_metrics

MODEL_FILE = "model.joblib"


@dataclass
class PixelModel:
    pipeline: Any  # sklearn Pipeline: PCA -> LogisticRegression
    n_features: int
    n_classes: int


def flat(x: np.ndarray) -> np.ndarray:
    """Images (n, h, w, c) uint8 -> rows of pixels in [0, 1]."""
    return x.reshape(len(x), -1).astype(np.float32) / 255.0


class PixelPCA(Objective):
    name = "pixels"
    defaults: dict[str, Any] = {
        "input_size": 32,  # px, square
        "color": False,
        "n_components": 64,  # capped at the training images and pixels there are
        "whiten": False,
        "C": 1.0,  # inverse L2 strength of the logistic regression
        "max_iter": 500,
    }
    quick_params = {"input_size": 16, "n_components": 8, "max_iter": 100}  # bench check-objective trains with these

    def load_data(self, params: dict[str, Any], ctx: TrialContext):
        return ctx.images(int(params["input_size"]), bool(params["color"]))  # decoded once, then cached by bench

    def build(self, params: dict[str, Any], split) -> PixelModel:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        n_features = int(np.prod(split.x_fit.shape[1:]))
        k = min(int(params["n_components"]), len(split.x_fit), n_features)
        seed = int(np.random.randint(2**31 - 1))  # drawn from the RNG that set_seed seeded
        pipeline = Pipeline([("pca", PCA(k, whiten=bool(params["whiten"]), random_state=seed)),
                             ("clf", LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"])))])
        return PixelModel(pipeline, n_features, split.num_classes)

    def fit(self, model: PixelModel, split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is a searched budget, not an error
            model.pipeline.fit(flat(split.x_fit), split.y_fit)
        val = classification_metrics(split.y_val, self.predict_proba(model, split.x_val))
        ctx.report(0, {"val_accuracy": val["accuracy"], "val_loss": val["loss"]}, total_epochs=1)  # one go: epoch 0
        return FitInfo(epochs=1, history={"val_accuracy": [val["accuracy"]], "val_loss": [val["loss"]]})

    def predict_proba(self, model: PixelModel, x: np.ndarray) -> np.ndarray:
        return model.pipeline.predict_proba(flat(x))

    def count_params(self, model: PixelModel) -> int:
        """PCA's components and mean, plus the classifier's weights and biases: k*d + d + c*k + c."""
        k, d, c = model.pipeline.named_steps["pca"].n_components, model.n_features, model.n_classes
        return k * d + d + c * k + c

    def save_model(self, model: PixelModel, folder: Path) -> Path:
        import joblib

        path = Path(folder) / MODEL_FILE
        joblib.dump({"pipeline": model.pipeline, "n_features": model.n_features, "n_classes": model.n_classes}, path)
        return path

    def load_model(self, folder: Path) -> PixelModel:
        import joblib

        return PixelModel(**joblib.load(Path(folder) / MODEL_FILE))
