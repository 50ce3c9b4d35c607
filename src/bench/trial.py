"""What one trial is made of, apart from the family that runs it: its context (data, seed, the backend's hooks), the
exceptions that end it early, what fit returns (FitInfo) and what the trial returns (Result).

bench.objective builds on these; so do the helpers a family calls (bench.keras_train), which therefore never import
bench.objective: objective -> artifacts -> keras_train -> trial, one way.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench import data as bdata
from bench import stop


class Pruned(Exception):
    """The backend stopped this trial early, after `epoch` epochs (its partial curve is kept); epoch 0 with a reason:
    stopped before training (a Keras family's compute cap, max_mmacs)."""

    def __init__(self, epoch: int, reason: str | None = None):
        self.epoch = epoch
        super().__init__(reason or f"pruned after epoch {epoch}")


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
    # each curve point says how long the trial had run; Objective.run restarts the clock in the process that runs it
    # (a context is often built in another process, and on Ray on another machine, whose monotonic clock differs)
    started: float = field(default_factory=time.monotonic)

    def report(self, epoch: int, metrics: dict[str, float], total_epochs: int = 0) -> None:
        """Called after each epoch (0-based) with validation metrics; raises Pruned when the backend says so."""
        self.curve.append({"epoch": epoch, **metrics, "seconds": round(time.monotonic() - self.started, 2)})
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
