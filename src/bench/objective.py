"""The objective contract: a model family gives build / fit / predict_proba / count_params; the base runs a trial.

The search sees validation metrics only. Test metrics are measured and stored beside them, never used to select.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import data as bdata
# the trial's parts live in bench.trial (so that helpers such as keras_train need not import this module); they are
# named here too, where a family looks for them
from bench.trial import (FitInfo, Pruned, Result, TrialContext, TrialFailed, accuracy_ratio,  # noqa: F401
                         classification_metrics)

# bench's own families: name -> "module:Class", imported only when asked for (bench.registry adds a user's own).
OBJECTIVES: dict[str, str] = {
    "tinynet": "bench.objectives.tinynet:TinyNet",
    "bovw": "bench.objectives.bovw:BoVW",
    "mlp": "bench.objectives.mlp:MLP",
    "inception": "bench.objectives.inception:InceptionV3",
    "transfer": "bench.objectives.transfer:Transfer",
}


class Objective:
    """Template method: subclasses give the family's parts; `run` does the rest the same way for all.

    A family must give load_data, build, fit, predict_proba and count_params; the other hooks have defaults. Called
    by `run` in this order: set_seed, load_data, build, count_params (checked against --max-params), fit,
    count_params again, validation_metrics, predict_proba on test, save_model (when artifacts are kept), release.
    `load_model` is called outside a trial, by `bench report`, `bench export`, `bench predict` and the contract checks.
    Keras families subclass bench.keras_objective.KerasObjective, which gives every hook but load_data and build.
    """

    name: str = ""
    defaults: dict[str, Any] = {}
    # params of a trial of seconds (1 epoch, small inputs) that the contract checks train with (bench.checks); a
    # family that gives none fails them
    quick_params: dict[str, Any] | None = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    # --- the family's parts ---
    def load_data(self, params: dict[str, Any], ctx: TrialContext) -> bdata.Split:
        """Receives the trial's resolved params and context; returns the split the trial trains on (usually
        ctx.images(size, color)). Only data here: the model is made in build."""
        raise NotImplementedError

    def build(self, params: dict[str, Any], split: bdata.Split) -> Any:
        """Receives the resolved params and the split (for shapes and class count); returns an untrained model, of
        whatever type the family's other methods take. Raises TrialFailed for a configuration that cannot be built."""
        raise NotImplementedError

    def fit(self, model: Any, split: bdata.Split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        """Trains model on split.x_fit / y_fit, calling ctx.report(epoch, {"val_accuracy": ...}) after every epoch (a
        family that fits in one go reports once, as epoch 0) and letting its Pruned exception through; returns
        FitInfo(epochs run, per-epoch history)."""
        raise NotImplementedError

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Receives a trained (or loaded) model and inputs in the split's form; returns N x classes probabilities."""
        raise NotImplementedError

    def count_params(self, model: Any) -> int:
        """The model's learned numbers (see DESIGN: weights of a network, codebook + projection + classifier of BoVW).
        Called before fit (an upper bound will do: --max-params is checked on it) and after."""
        raise NotImplementedError

    def release(self, model: Any) -> None:
        """Free what the model holds between trials (called whatever happened)."""

    def save_model(self, model: Any, folder: Path) -> Path | None:
        """Save the trained model into folder (files named model*, which the top-k rule of bench.artifacts deletes
        together); returns the main file's path, or None if the family saves nothing."""
        return None

    def load_model(self, folder: Path) -> Any:
        """Receives a folder save_model wrote into; returns the model in the form predict_proba takes, predicting as the
        trained one did. Files that run code as they load (pickles): load only from a results folder you trust."""
        raise NotImplementedError(f"{type(self).__name__} saves no model that it can load back")

    def validation_metrics(self, model: Any, split: bdata.Split, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """What the search selects on: the hold-out by default; a family may use cross-validation instead. Returns
        classification_metrics' keys (accuracy, balanced_accuracy, macro_f1, loss)."""
        return classification_metrics(split.y_val, self.predict_proba(model, split.x_val))

    def set_seed(self, seed: int) -> None:
        """Seed every RNG the family uses; families with their own RNGs (Keras) extend this."""
        random.seed(seed)
        np.random.seed(seed)

    @classmethod
    def can_load(cls) -> bool:
        """Whether the family overrides load_model (bench.checks: the save -> load rule applies)."""
        return cls.load_model is not Objective.load_model

    # --- the template ---
    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """The defaults with params laid over them; ValueError naming any param the family does not know."""
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown params {sorted(unknown)}; known: {sorted(self.defaults)}")
        return {**self.defaults, **params}

    def run(self, params: dict[str, Any], ctx: TrialContext) -> Result:
        """One trial: receives the sampled params and the context; returns its Result, or raises Pruned or
        TrialFailed (the backend stores why)."""
        params = self.resolve(params)
        ctx.started = time.monotonic()
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
