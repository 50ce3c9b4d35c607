"""What `bench report` needs, kept while trials run, one folder per (study, backend, trial):
results/<study>/<backend>-trial-<n>/ (trial_dir; folders of older versions, results/<study>/trial-<n>/, still read).
Every file is written to a temporary name and renamed into place, so a search killed mid-save leaves the old file or
none, never a truncated one that `bench report` would choke on.


    predictions.npz   val and test class probabilities, their labels, the class names, the test images' paths
                      (relative to the data root): every complete trial, a few hundred kB at most
    meta.json         the trial's val/test accuracy, params, data root and what was kept; the top-k rule reads it
    activations.json  per-layer activation statistics recorded during training (Keras families, see below)
    model.keras       the trained model (Objective.save_model): every trial with `--keep-models`, otherwise only
                      while the trial's validation accuracy is among the best K of the study (`--keep-top K`);
                      a model that falls out of the top K is deleted

The leaderboard row links the folder as extras["artifacts"] and says what keeping cost in extras["artifact_seconds"].
A flock on the run folder keeps the top-k rule consistent between local worker processes.

Activation statistics (`activation_callback`): a Keras callback runs a fixed batch of up to 64 validation images through
the model at initialisation and after every epoch and records, for every activation layer, the mean, standard deviation
and fraction of exact zeros, plus a histogram at initialisation and at the end of training. Cost: one forward pass of 64
images per epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MODEL_GLOB = "model*"
HIST_BINS = 40


def trial_dir(run_dir: Path | str, trial_number: int, backend: str | None = None) -> Path:
    """The trial's artifact folder; two backends searching one study number their trials each from 0."""
    return Path(run_dir) / (f"{backend}-trial-{trial_number}" if backend else f"trial-{trial_number}")


TRIAL_GLOB = "*trial-*/meta.json"  # every trial folder of a study, older layouts included


@contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".artifacts.lock", "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not on POSIX: no lock, the top-k rule is then only best effort between workers
            pass
        yield


def _model_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob(MODEL_GLOB) if p.name != "meta.json"]


def keep_trial(objective, model, split, params: dict[str, Any], ctx, val: dict[str, float], test_proba: np.ndarray) -> dict[str, Any]:
    """Save the trial's predictions (and its model, by the keep rule); returns what goes into the row's extras.

    Keeping never fails a trial: an error is returned as extras["artifacts_error"] instead.
    """
    start = time.perf_counter()
    try:
        return _keep(objective, model, split, params, ctx, val, test_proba, start)
    except Exception as e:  # noqa: BLE001 - a report's input must never cost the trial
        return {"artifacts_error": f"{type(e).__name__}: {e}", "artifact_seconds": round(time.perf_counter() - start, 4)}


def _keep(objective, model, split, params, ctx, val, test_proba, start) -> dict[str, Any]:
    from bench.data import write_atomically

    number = ctx.trial_number if ctx.trial_number is not None else ctx.seed
    folder = trial_dir(ctx.run_dir, number, ctx.backend)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = np.asarray(test_proba).shape[1]
    # a family that validates by cross-validation (BoVW) has no hold-out: its val arrays are empty
    val_proba = objective.predict_proba(model, split.x_val) if len(split.y_val) else np.zeros((0, n_classes))
    root, test_paths = "", np.array([], dtype=str)
    try:
        catalog = ctx.catalog
        if len(catalog.test.paths) == len(split.y_test):
            root = str(catalog.root)
            test_paths = np.array([str(p.relative_to(catalog.root)) for p in catalog.test.paths])
    except Exception:  # a family with its own data: no image paths, so no Grad-CAM later
        pass
    write_atomically(folder / "predictions.npz", lambda tmp: np.savez_compressed(
        tmp, val_proba=val_proba.astype(np.float32), y_val=np.asarray(split.y_val),
        test_proba=np.asarray(test_proba, np.float32), y_test=np.asarray(split.y_test), classes=np.array(split.classes),
        test_paths=test_paths,
    ))
    for name, content in (getattr(ctx, "artifacts", None) or {}).items():
        write_atomically(folder / name, lambda tmp: tmp.write_text(json.dumps(content)))
    meta = {"trial": number, "backend": ctx.backend, "objective": objective.name, "val_accuracy": float(val["accuracy"]),
            "params": params, "data_root": root}
    saved = False
    with _locked(Path(ctx.run_dir)):
        if ctx.keep_models:
            saved = True
        elif ctx.keep_top:
            # the study's best K, every backend's trials together (folders, not numbers: two backends share numbers)
            ranked = {folder.name: meta["val_accuracy"]}
            for other in Path(ctx.run_dir).glob(TRIAL_GLOB):
                try:
                    ranked.setdefault(other.parent.name, float(json.loads(other.read_text())["val_accuracy"]))
                except (ValueError, KeyError, OSError):
                    continue
            top = {n for n, _ in sorted(ranked.items(), key=lambda kv: (-kv[1], kv[0]))[: ctx.keep_top]}
            saved = folder.name in top
            for n in set(ranked) - top - {folder.name}:
                for p in _model_files(Path(ctx.run_dir) / n):
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        model_path = _save_model(objective, model, folder) if saved else None
        meta["model"] = model_path.name if model_path else None
        write_atomically(folder / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, default=str)))
    return {"artifacts": str(folder), "artifact_seconds": round(time.perf_counter() - start, 4)}


def _save_model(objective, model, folder: Path) -> Path | None:
    """objective.save_model into a fresh folder beside the trial's, then each file renamed into place: a kill during
    the save leaves that scratch folder (swept here next time), never a truncated model under its real name."""
    for stale in folder.glob(".saving-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = folder / f".saving-{os.getpid()}"
    scratch.mkdir()
    try:
        path = objective.save_model(model, scratch)
        for p in scratch.iterdir():
            target = folder / p.name
            if target.is_dir():  # a rename replaces a file at once, a folder only once it is gone
                shutil.rmtree(target)
            p.replace(target)
        return folder / path.name if path else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- activation statistics (Keras) ---


def activation_layers(model) -> list:
    """Layers whose output is a non-linearity: Activation/ReLU-like layers, and Conv/Dense layers with a built-in
    non-linear activation (the softmax output excluded)."""
    chosen = []
    for layer in model.layers[:-1]:
        kind = layer.__class__.__name__
        act = getattr(layer, "activation", None)
        act_name = getattr(act, "__name__", "") if act is not None else ""
        if kind in ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax") or (act_name and act_name != "linear"):
            chosen.append(layer)
    return chosen


def activation_probe(model):
    """(layers, a model that outputs every activation layer), or (None, None) when the model has none."""
    from bench.keras_train import keras

    layers = activation_layers(model)
    if not layers:
        return None, None
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a list for one input warns on every call
    try:
        return layers, keras().Model(inputs, [layer.output for layer in layers])
    except ValueError:  # a sub-model cut from a bigger graph (transfer's trained top): its layers' outputs live there
        return None, None


def activation_stats(model, x: np.ndarray, hist: bool = True, probe=None) -> dict[str, dict[str, Any]]:
    """One forward pass of x: per activation layer, mean / std / fraction of zeros (and a histogram)."""
    layers, probe = probe or activation_probe(model)
    if not layers:
        return {}
    outs = probe(x, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    stats = {}
    for layer, out in zip(layers, outs):
        a = np.asarray(out, dtype=np.float32).ravel()
        s = {"mean": float(a.mean(dtype=np.float64)), "std": float(a.std(dtype=np.float64)),
             "zero_fraction": float(np.count_nonzero(a == 0.0) / max(a.size, 1))}
        if hist:
            counts, edges = np.histogram(a, bins=HIST_BINS)
            s["hist"] = {"counts": counts.tolist(), "edges": [float(e) for e in edges]}
        stats[layer.name] = s
    return stats


def activation_callback(model, x: np.ndarray, ctx):
    """Records activation statistics into ctx.artifacts['activations.json'] (written by keep_trial)."""
    from bench.keras_train import keras

    k = keras()
    record: dict[str, Any] = {"batch": int(len(x)), "epochs": [], "layers": {}, "hist_init": {}, "hist_last": {}}
    probe = activation_probe(model)

    def take(epoch: int | None, hist_key: str | None) -> None:
        stats = activation_stats(model, x, hist=hist_key is not None, probe=probe)
        for name, s in stats.items():
            if epoch is not None:
                series = record["layers"].setdefault(name, {"mean": [], "std": [], "zero_fraction": []})
                for key in series:
                    series[key].append(s[key])
            if hist_key:
                record[hist_key][name] = s["hist"]
        if epoch is not None:
            record["epochs"].append(epoch)
        ctx.artifacts["activations.json"] = record

    class ActivationStats(k.callbacks.Callback):
        def on_train_begin(self, logs=None):
            take(0, "hist_init")

        def on_epoch_end(self, epoch, logs=None):
            take(epoch + 1, None)

        def on_train_end(self, logs=None):  # histograms of the final weights (also after early stopping's restore)
            take(None, "hist_last")

    return ActivationStats()
