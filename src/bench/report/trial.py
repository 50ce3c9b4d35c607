"""The trial page: the row and its artifacts (bench.artifacts) → bench.report.metrics → figures → page.

Sections: summary; train/val curves (the row's history); confusion matrix (counts and normalised by true class);
per-class precision / recall / F1; one-vs-rest ROC curves with AUC; for CNNs a Grad-CAM grid (per class one correct
and one wrong test image, the heat map of the predicted class over the image); activation statistics per layer.

Activation statistics are the ones *recorded during training* by bench.artifacts.activation_callback (a fixed batch of
up to 64 validation images, at initialisation and after every epoch) for every trial run with artifacts on. For a trial
without that record but with a saved model, they are *recomputed from the saved model at report time* on the first 64
test images (final weights only).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.leaderboard import Leaderboard
from bench.report import figures, metrics
from bench.report.page import Page, escape


class ReportError(ValueError):
    """Nothing to report on (unknown trial or study); the message says what to run."""


def find_row(board: Leaderboard, trial: int, study: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """A leaderboard row: trial number `trial` of `study` (of `backend`, needed only when two backends searched the
    study), or the row whose id is `trial` when no study is given."""
    if study:
        rows = [r for r in board.query(study=study) if r["trial_number"] == trial]
        if backend:
            rows = [r for r in rows if r["backend"] == backend]
        if not rows:
            of = f" of backend {backend}" if backend else ""
            raise ReportError(f"no trial {trial}{of} in study '{study}' (see `bench leaderboard --study {study}`)")
        backends = sorted({r["backend"] for r in rows})
        if len(backends) > 1:
            raise ReportError(f"study '{study}' has a trial {trial} from each of {', '.join(backends)}: "
                              f"give --backend {' or --backend '.join(backends)}")
        return rows[0]
    row = board.row_by_id(trial)
    if row is None:
        raise ReportError(f"no leaderboard row with id {trial}; give --study NAME to pick trial {trial} of a study")
    return row


def artifacts_folder(row: dict[str, Any], results: Path | None = None) -> Path | None:
    """The row's artifact folder as stored, else results/<study>/<backend>-trial-<n> (results moved or run from
    elsewhere), else the layout of older versions, results/<study>/trial-<n>. A folder whose meta.json names another
    backend is never taken for this row's."""
    from bench.artifacts import trial_dir

    stored = (row.get("extras") or {}).get("artifacts")
    candidates = [Path(stored)] if stored else []
    if results is not None:
        run_dir = Path(results) / row["study"]
        candidates += [trial_dir(run_dir, row["trial_number"], row.get("backend")), trial_dir(run_dir, row["trial_number"])]
    for c in candidates:
        if (c / "predictions.npz").exists() and _meta_backend(c) in (None, row.get("backend")):
            return c
    return None


def _meta_backend(folder: Path) -> str | None:
    try:
        return json.loads((folder / "meta.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def saved_network(row: dict[str, Any], folder: Path | None):
    """The trial's saved Keras network, read back by its family (KerasObjective.load_model, .network); None when the
    folder holds no model.keras or the family is not a Keras one."""
    from bench.keras_objective import MODEL_FILE, KerasObjective
    from bench.objective import get_objective

    if folder is None or not (folder / MODEL_FILE).exists():
        return None
    try:
        family = get_objective(row["objective"])
    except KeyError:  # a family of one's own that this process does not know (no --objective-file, no entry point)
        return None
    return family.network(family.load_model(folder)) if isinstance(family, KerasObjective) else None


def _inside(root: str, relative: str) -> bool:
    """Whether root/relative names an image file under root, by its name (symlinks inside a data root are the user's
    own): a results folder from elsewhere can point neither out of the root nor at a file that is not an image."""
    from bench.data import IMAGE_SUFFIXES

    base = os.path.normpath(os.path.abspath(root))
    return (os.path.normpath(os.path.join(base, relative)).startswith(base + os.sep)
            and Path(relative).suffix.lower() in IMAGE_SUFFIXES)


def _decode_images(folder_root: str, paths: list[str], size: int, color: bool) -> np.ndarray:
    from bench.data import decode

    return np.stack([decode(Path(folder_root) / p, size, color) for p in paths])


def trial_report(row: dict[str, Any], out: Path, results: Path | None = None, data_root: Path | None = None,
                 split: str = "test", png: bool = True) -> tuple[list[Path], dict[str, float]]:
    """Write the trial page of a leaderboard row to out; returns (written paths, seconds per stage)."""
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    name = f"{row['study']} #{row['trial_number']}"
    page = Page(f"bench report: {row['objective']} {name}")
    folder = artifacts_folder(row, results)
    page.section("summary", "Summary")
    page.table([{"study": row["study"], "trial": row["trial_number"], "status": row["status"], "objective": row["objective"],
                 "val acc": row.get("val_accuracy"), "val bal": row.get("val_balanced_accuracy"),
                 "test acc": row.get("test_accuracy"), "test F1": row.get("test_macro_f1"), "params": row.get("n_params"),
                 "ratio": row.get("ratio"), "epochs": row.get("epochs"), "fit s": row.get("fit_seconds")}],
               fmt={"ratio": ".2f", "fit s": ".1f"})
    page.text(f"params: <code>{escape(figures.fmt_params(row['params']))}</code>")
    if row.get("failure_reason"):
        page.text(f"reason: {escape(row['failure_reason'])}")
    page.text(f"artifacts: <code>{escape(str(folder))}</code>" if folder else
              "no artifacts stored for this trial (run the search with artifacts on: `--keep-top K` or `--keep-models`)")

    hist = metrics.history_of(row)
    page.section("curves", "Training curves", "train (solid) and validation (dashed), per epoch")
    page.figure_or_text("curves", figures.curves_figure(hist) if hist else None, "no per-epoch history in this row")

    pred_file = np.load(folder / "predictions.npz") if folder else None
    classes = list(row.get("extras", {}).get("classes") or [])
    if pred_file is not None:
        classes = [str(c) for c in pred_file["classes"]]
        y, proba = pred_file[f"y_{split}"], pred_file[f"{split}_proba"].astype(np.float64)
        pred = proba.argmax(axis=1)
        page.section("confusion", "Confusion matrix", f"on the {split} set ({len(y)} images)")
        page.figure("confusion", figures.confusion_figure(*metrics.confusion(y, pred, len(classes)), classes))
        table = metrics.per_class(y, pred, classes)
        page.section("per-class", "Per-class precision, recall and F1", f"on the {split} set")
        page.table(table, fmt={"precision": ".3f", "recall": ".3f", "f1": ".3f"})
        page.figure("per-class", figures.per_class_figure(table))
        curves = metrics.roc_ovr(y, proba)
        page.section("roc", "ROC curves (one vs rest)", f"on the {split} set; macro AUC "
                     f"{np.nanmean([c[2] for c in curves]):.3f}")
        page.table([{"class": c, "AUC": a} for c, (_, _, a) in zip(classes, curves)], fmt={"AUC": ".4f"})
        page.figure("roc", figures.roc_figure(curves, classes))
    else:
        for key, title in (("confusion", "Confusion matrix"), ("per-class", "Per-class precision, recall and F1"),
                           ("roc", "ROC curves (one vs rest)")):
            page.section(key, title)
            page.text("not available: no stored predictions for this trial")
    timings["metrics"] = time.perf_counter() - tick

    tick = time.perf_counter()
    model = saved_network(row, folder)
    meta = json.loads((folder / "meta.json").read_text()) if folder and (folder / "meta.json").exists() else {}
    params = row["params"]
    size, color = int(params.get("input_size", 64)), bool(params.get("color", True))
    page.section("gradcam", "Grad-CAM", "per class its most confident correct test image and its most confident mistake; "
                 "the heat map is the predicted class's evidence")
    root = str(data_root) if data_root else meta.get("data_root", "")
    paths = [str(p) for p in pred_file["test_paths"]] if pred_file is not None else []
    outside = [p for p in paths if root and not _inside(root, p)]
    if outside:  # a results folder from elsewhere may name any file; only images under the data root are opened
        page.text(f"not used: predictions.npz names {len(outside)} files that are not images under the data root, e.g. "
                  f"<code>{escape(outside[0].encode('utf-8', 'backslashreplace').decode())}</code>")
        paths = []
    if model is None:
        page.text("not available: no saved Keras model for this trial (only the top-k trials keep theirs, or use "
                  "--keep-models)")
    elif not paths or not root or not Path(root).is_dir():
        page.text("not available: the test images are not found (give --data ROOT)")
    else:
        from bench.gradcam import gradcam, last_spatial_layer, overlay

        try:
            last_spatial_layer(model)
            y_test, p_test = pred_file["y_test"], pred_file["test_proba"].astype(np.float64)
            picks = metrics.pick_examples(y_test, p_test)
            pred_test = p_test.argmax(axis=1)
            images = _decode_images(root, [paths[i] for i, _, _ in picks], size, color)
            heats = gradcam(model, images.astype(np.float32), [int(pred_test[i]) for i, _, _ in picks])
            overlays = [overlay(img, heat) for img, heat in zip(images, heats)]
            page.figure("gradcam", figures.gradcam_figure(overlays, picks, pred_test, p_test, classes))
        except ValueError as e:
            page.text(f"not available: {escape(str(e))}")
    timings["gradcam"] = time.perf_counter() - tick

    tick = time.perf_counter()
    page.section("activations", "Activation statistics")
    record = None
    if folder and (folder / "activations.json").exists():
        record = json.loads((folder / "activations.json").read_text())
        page.text(f"recorded during training on a fixed batch of {escape(str(record.get('batch')))} validation images, at "
                  "initialisation (epoch 0) and after every epoch")
    elif model is not None and paths and root and Path(root).is_dir():
        from bench.artifacts import activation_stats

        x = _decode_images(root, paths[:64], size, color).astype(np.float32)
        stats = activation_stats(model, x)
        if stats:
            record = metrics.activation_record(stats, len(x), row.get("epochs") or 0)
            page.text(f"recomputed from the saved model at report time on {len(x)} test images (final weights only)")
    if record and record.get("layers"):
        page.table(metrics.activation_table(record),
                   fmt={"zeros at init": ".3f", "zeros trained": ".3f", "mean trained": ".3g", "std trained": ".3g"})
        series, hists = figures.activation_figures(record)
        page.figure("activations", series)
        page.figure("activation-histograms", hists)
    else:
        page.text("not available: no activation record and no saved Keras model for this trial")
    if model is not None:
        from bench.keras_train import release_keras

        release_keras()
    timings["activations"] = time.perf_counter() - tick

    tick = time.perf_counter()
    written = page.write(out, png=png)
    timings["write"] = time.perf_counter() - tick
    return written, timings
