"""KerasObjective: the hooks every Keras family shares, so a family gives only load_data and build (and overrides what
it does differently: MLP's SVM head, Transfer's cached frozen bottom).

A family's model may be the Keras network itself (TinyNet) or an object holding one (MLP's MLPModel, Transfer's
TransferModel): `network(model)` names the network, and every default hook works on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench import keras_train as kt
from bench.data import Split
from bench.objective import Objective
from bench.trial import FitInfo, TrialContext

MODEL_FILE = "model.keras"  # Keras 3's own format: architecture, weights and optimizer state


class KerasObjective(Objective):
    """Base of the Keras families: training through keras_train.fit_keras, prediction by a compiled forward pass,
    Keras' seed, the model saved as folder/model.keras and its graph memory cleared after every trial."""

    # what keras_train.fit_keras reads; a family lays its own defaults (and any different values) over these
    training_defaults: dict[str, Any] = {
        "optimizer": "adam",  # one of keras_train.OPTIMIZERS
        "lr": 1e-3,
        "momentum": 0.9,  # sgd and rmsprop only
        "one_cycle": False,  # the one-cycle policy with lr as its peak
        "warmup": 0.3,  # one-cycle: the fraction of all steps spent warming up to the peak
        "first_epoch_data": 1.0,  # the fraction of the fit split the first epoch sees (a cheap first rung)
        "batch_size": 32,
        "epochs": 20,
        "patience": 0,  # early stopping on val_loss (best weights restored); 0: off
        "max_mmacs": 0,  # prune before training a network of more million multiply-accumulates per image; 0: off
    }

    def network(self, model: Any):
        """Receives what build or load_model returned; returns the Keras network in it (the model itself by default)."""
        return model

    def fit(self, model: Any, split: Split, params: dict[str, Any], ctx: TrialContext) -> FitInfo:
        """keras_train.fit_keras on the network: compiled with the params' optimizer, one report per epoch, validated by
        the family's own predict_proba (TinyNet's flip average included, as in the final score)."""
        return kt.fit_keras(self.network(model), split, params, ctx, lambda _network, x: self.predict_proba(model, x))

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The network's softmax on x, in batches through a compiled forward pass (keras_train.predict_keras)."""
        return kt.predict_keras(self.network(model), x)

    def count_params(self, model: Any) -> int:
        """Every weight of the network, as Keras counts them (batch-norm moving statistics included)."""
        return int(self.network(model).count_params())

    def release(self, model: Any) -> None:
        """Clear Keras' global state: long sweeps in one process would otherwise grow."""
        kt.release_keras()

    def set_seed(self, seed: int) -> None:
        """Python's, NumPy's and TensorFlow's generators, through keras.utils.set_random_seed."""
        kt.seed_everything(seed)

    def save_model(self, model: Any, folder: Path) -> Path:
        """The network as folder/model.keras; returns that path."""
        path = Path(folder) / MODEL_FILE
        self.network(model).save(path)
        return path

    def load_model(self, folder: Path) -> Any:
        """folder/model.keras, uncompiled, as the model predict_proba takes (the network itself by default)."""
        return load_network(folder)


def load_network(folder: Path):
    """The Keras network a KerasObjective saved into folder (uncompiled: it is for predicting)."""
    return kt.keras().models.load_model(Path(folder) / MODEL_FILE, compile=False)
