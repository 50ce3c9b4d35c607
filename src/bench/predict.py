"""`bench predict`: classify image files with an exported model (bench export's folder) or a study's trial.

Each image goes through the project's loader (bench.data.decode: any size and mode PIL reads, converted and resized as
the model card says), in batches. An image inside a folder named after one of the model's classes is labelled by it,
so a folder laid out as FOLDER/<class>/* (a test split) also gives accuracy and the confusion matrix.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from bench.data import IMAGE_SUFFIXES, DataError, decode
from bench.export import CARD, FILES, JOBLIB

BATCH = 64


@dataclass
class Predictor:
    card: dict[str, Any]
    predict: Callable[[np.ndarray], np.ndarray]  # float32 N x S x S x C pixels (0..255) -> N x classes probabilities

    @property
    def classes(self) -> list[str]:
        return self.card["classes"]


def load_predictor(folder: Path) -> Predictor:
    """The model bench export wrote into folder, run by its format's own runtime."""
    folder = Path(folder)
    if not (folder / CARD).exists():
        raise DataError(f"{folder}: no {CARD} (write one with `bench export TRIAL --study S --out {folder}`)")
    card = json.loads((folder / CARD).read_text())
    return Predictor(card, _runner(card["format"], folder, card["objective"]))


def _runner(fmt: str, folder: Path, objective: str) -> Callable[[np.ndarray], np.ndarray]:
    if fmt == JOBLIB:  # read back and run by its family (Objective.load_model, predict_proba on pixels)
        from bench.objective import get_objective

        family = get_objective(objective)
        model = family.load_model(folder)
        return lambda x: family.predict_proba(model, x.astype(np.uint8))
    path = folder / FILES.get(fmt, "")
    if fmt == "keras":
        from bench.keras_objective import load_network
        from bench.keras_train import predict_keras

        model = load_network(folder)
        return lambda x: predict_keras(model, x)
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # held here: its variables die with it
        return lambda x: np.asarray(loaded.serve(x))
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "tflite":
        interpreter = tflite_interpreter(path)
        return lambda x: run_tflite(interpreter, x)
    raise DataError(f"{folder / CARD}: unknown format '{fmt}'")


def tflite_interpreter(path: Path):
    """LiteRT's interpreter (ai_edge_litert) when installed, else TensorFlow's own tf.lite.Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(interpreter, x: np.ndarray) -> np.ndarray:
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if tuple(inp["shape"]) != x.shape:  # the converter fixes the batch at 1; its signature allows any
        interpreter.resize_tensor_input(inp["index"], x.shape)
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(outp["index"]))


def image_files(inputs: Iterable[Path]) -> list[Path]:
    """Image files given, or found (recursively, sorted) in the folders given."""
    found = []
    for p in map(Path, inputs):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not found:
        raise DataError(f"no images (suffixes {sorted(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found


@dataclass
class Predictions:
    paths: list[Path]
    proba: np.ndarray
    classes: list[str]
    labels: list[int | None]  # from the parent folder's name, None when it names no class

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    def labelled(self) -> np.ndarray:
        return np.array([i for i, y in enumerate(self.labels) if y is not None], dtype=np.int64)

    def scores(self) -> dict[str, Any] | None:
        """accuracy, balanced accuracy and the confusion matrix (rows: true class) over the labelled images."""
        idx = self.labelled()
        if not len(idx):
            return None
        from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

        y, pred = np.array([self.labels[i] for i in idx]), self.predicted[idx]
        return {"n": len(idx), "accuracy": float(accuracy_score(y, pred)),
                "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
                "confusion": confusion_matrix(y, pred, labels=np.arange(len(self.classes)))}

    def write_csv(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "predicted", "label", *(f"p_{c}" for c in self.classes)])
            for p, row, k, y in zip(self.paths, self.proba, self.predicted, self.labels):
                w.writerow([str(p), self.classes[k], "" if y is None else self.classes[y], *(f"{v:.6f}" for v in row)])


def predict_files(predictor: Predictor, paths: list[Path], batch: int = BATCH,
                  progress: Callable[[Iterable], Iterable] = lambda it: it) -> Predictions:
    """Class probabilities of every file, batch by batch (progress wraps the batch iterator, e.g. rich's track)."""
    size, channels = predictor.card["input"]["size"], predictor.card["input"]["channels"]
    index = {c: i for i, c in enumerate(predictor.classes)}
    chunks = []
    for start in progress(range(0, len(paths), batch)):
        x = np.stack([decode(p, size, channels == 3) for p in paths[start : start + batch]]).astype(np.float32)
        chunks.append(np.asarray(predictor.predict(x), dtype=np.float64))
    labels = [index.get(p.parent.name) for p in paths]
    return Predictions(paths, np.concatenate(chunks), predictor.classes, labels)
