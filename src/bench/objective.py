"""The objective contract: a model family gives build / fit / predict_proba / count_params; the base runs a trial.

The search sees validation metrics only. Test metrics are measured and stored beside them, never used to select.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench import data as bdata
from bench import stop

# bench's own families: name -> "module:Class", imported only when asked for (bench.registry adds a user's own).
OBJECTIVES: dict[str, str] = {
    "tinynet": "bench.objectives.tinynet:TinyNet",
    "bovw": "bench.objectives.bovw:BoVW",
    "mlp": "bench.objectives.mlp:MLP",
    "inception": "bench.objectives.inception:InceptionV3",
    "transfer": "bench.objectives.transfer:Transfer",
}


class Pruned(Exception):
    """The backend stopped this trial early, after `epoch` epochs (its partial curve is kept)."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"pruned after epoch {epoch}")


class TrialFailed(Exception):
    """The trial cannot give a result (NaN loss, over the parameter budget, ...); the reason is stored."""


@dataclass
class Result:
    val_accuracy: float
    val_loss: float
    val_balanced_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_loss: float
    test_balanced_accuracy: float
    test_macro_f1: float
    n_params: int
    fit_seconds: float
    epochs: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The paper's accuracy-to-parameter ratio, accuracy * 1e5 / parameters, on validation accuracy."""
        return accuracy_ratio(self.val_accuracy, self.n_params)

    @property
    def test_ratio(self) -> float:
        return accuracy_ratio(self.test_accuracy, self.n_params)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "test_ratio": self.test_ratio}


def accuracy_ratio(accuracy: float | None, n_params: int | None) -> float | None:
    if accuracy is None or not n_params:
        return None
    return accuracy * 1e5 / n_params


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy, macro-F1 and log loss of class probabilities."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

    proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)  # float32 softmax rows drift from 1
    pred = proba.argmax(axis=1)
    labels = np.arange(proba.shape[1])
    finite = np.all(np.isfinite(proba))
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=labels, zero_division=0)),
        "loss": float(log_loss(y_true, proba, labels=labels)) if finite else math.nan,
    }


@dataclass
class TrialContext:
    """What a trial needs from outside: where the data is, its seed, and the backend's hooks."""

    seed: int = 0
    data_root: Path | None = None
    cache_dir: Path | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.3  # only for a single-folder data set (ROOT/<class>/*), split here
    split_seed: int = 0  # one validation split per study, so trials compare on the same images
    max_params: int | None = None
    report_hook: Callable[[int, dict[str, float]], bool] | None = None  # returns True to prune
    progress: Callable[[int, int, dict[str, float]], None] | None = None  # (epoch, total_epochs, metrics)
    run_dir: Path | None = None
    # artifacts for `bench report` (bench.artifacts): None keeps none; else predictions of every complete trial, and
    # the models of the best keep_top trials of the study (every trial's with keep_models)
    trial_number: int | None = None
    backend: str | None = None  # the artifacts' folder is per (study, backend, trial): bench.artifacts.trial_dir
    keep_top: int | None = None
    keep_models: bool = False
    artifacts: dict[str, Any] = field(default_factory=dict)  # extra JSON files a family hands to the artifact hook
    # what the trial has shown so far, kept for the leaderboard when it is pruned or fails
    curve: list[dict[str, float]] = field(default_factory=list)
    n_params: int | None = None

    def report(self, epoch: int, metrics: dict[str, float], total_epochs: int = 0) -> None:
        """Called after each epoch (0-based) with validation metrics; raises Pruned when the backend says so."""
        self.curve.append({"epoch": epoch, **metrics})
        stop.check()  # Ctrl-C lands here, between epochs, where TensorFlow can be left safely
        if self.progress:
            self.progress(epoch, total_epochs, metrics)
        if self.report_hook and self.report_hook(epoch, metrics):
            raise Pruned(epoch + 1)

    @cached_property
    def catalog(self) -> bdata.Catalog:
        return bdata.scan(bdata.resolve_root(self.data_root), self.test_fraction, self.split_seed)

    def images(self, size: int, color: bool = True, tiny_per_class: int | None = None) -> bdata.Split:
        arrays = bdata.load_arrays(self.catalog, size, color, self.cache_dir)
        return bdata.make_split(arrays, self.val_fraction, self.split_seed, tiny_per_class)


@dataclass
class FitInfo:
    epochs: int
    history: dict[str, list[float]] = field(default_factory=dict)


class Objective:
    """Template method: subclasses give the family's parts; `run` does the rest the same way for all."""

    name: str = ""
    defaults: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        self.options = options

    # --- the family's parts ---
    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> bdata.Split:
        raise NotImplementedError

    def build(self, params: dict[str, Any], split: bdata.Split) -> Any:
        raise NotImplementedError

    def fit(self, model: Any, split: bdata.Split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        raise NotImplementedError

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def count_params(self, model: Any) -> int:
        raise NotImplementedError

    def release(self, model: Any) -> None:
        """Free what the model holds between trials."""

    def save_model(self, model: Any, folder: Path) -> Path | None:
        """Save the trained model into folder for `bench report`; returns its path, or None if the family cannot."""
        return None

    def validation_metrics(self, model: Any, split: bdata.Split, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """What the search selects on: the hold-out by default; a family may use cross-validation instead."""
        return classification_metrics(split.y_val, self.predict_proba(model, split.x_val))

    def set_seed(self, seed: int) -> None:
        """Seed every RNG the family uses; families with their own RNGs (Keras) extend this."""
        random.seed(seed)
        np.random.seed(seed)

    # --- the template ---
    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown params {sorted(unknown)}; known: {sorted(self.defaults)}")
        return {**self.defaults, **params}

    def run(self, params: dict[str, Any], ctx: TrialContext) -> Result:
        params = self.resolve(params)
        self.set_seed(ctx.seed)
        split = self.load_data(params, ctx)
        model = self.build(params, split)
        try:
            n_params = ctx.n_params = self.count_params(model)
            if ctx.max_params is not None and n_params > ctx.max_params:
                raise TrialFailed(f"{n_params:,} params exceed --max-params {ctx.max_params:,}; skipped before training")
            start = time.perf_counter()
            info = self.fit(model, split, params, ctx)
            fit_seconds = time.perf_counter() - start
            n_params = ctx.n_params = self.count_params(model)  # again: an SVM knows its support vectors only now
            val = self.validation_metrics(model, split, params, ctx)
            test_proba = self.predict_proba(model, split.x_test)
            test = classification_metrics(split.y_test, test_proba)
            kept = {}
            if ctx.keep_top is not None and ctx.run_dir is not None:  # what `bench report` needs
                from bench.artifacts import keep_trial

                kept = keep_trial(self, model, split, params, ctx, val, test_proba)
        finally:
            self.release(model)
        return Result(
            **{f"val_{k}": v for k, v in val.items()},
            **{f"test_{k}": v for k, v in test.items()},
            n_params=int(n_params),
            fit_seconds=fit_seconds,
            epochs=info.epochs,
            extras={"history": info.history, "classes": list(split.classes), **kept},
        )


def get_objective(name: str, **options: Any) -> Objective:
    """bench's own families (OBJECTIVES), then --objective-file and `bench.objectives` entry points (bench.registry)."""
    from bench.registry import objective_class

    return objective_class(name)(**options)
