"""`bench export`: a trial's trained model in a deployable format, with a model card saying how to feed it.

Formats of a Keras network (tinynet, transfer, inception, mlp's end_to_end variant):
    keras       DIR/model.keras           (Keras 3's own file)
    savedmodel  DIR/saved_model/          (TensorFlow SavedModel, its `serve` endpoint; TF Serving, TF.js converters)
    tflite      DIR/model.tflite          (TensorFlow's converter from that SavedModel; run by LiteRT / tf.lite)
    onnx        DIR/model.onnx            (tf2onnx on the inference function; run by onnxruntime)
A model whose prediction is more than one network call exports as its pipeline, --format joblib (the only one it takes):
    mlp's svm, patches and patch_bovw variants (a network plus a fitted SVM, codebook or patch aggregation):
                DIR/model.keras + DIR/model-head.joblib, read back by MLP.load_model
    bovw        DIR/model.joblib: the descriptor settings and the fitted codebook / projection / SVM, read back by
                BoVW.load_model. No ONNX or TFLite: its first step is OpenCV's descriptor extraction
                (dense SIFT, ...), which no maintained converter takes (skl2onnx converts scikit-learn estimators only).
joblib files are pickles: they run code as they load, so load only files you trust.

Every export writes DIR/model-card.json: the classes in output order, the input size and colour mode, the
preprocessing, the params, the trial's validation and test metrics, the data fingerprint and the code version.

The model comes from the trial's artifact folder when the search kept it (--keep-top / --keep-models); otherwise the
trial is trained again from its params and seed (same data, same validation split) and the card says so, with the
metrics of the re-trained model beside the search's own.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

KERAS_FORMATS = ("keras", "savedmodel", "tflite", "onnx")
JOBLIB = "joblib"
FORMATS = (*KERAS_FORMATS, JOBLIB)
CARD = "model-card.json"
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
KERAS_FAMILIES = ("tinynet", "transfer", "inception")
PIPELINE_FILES = {"mlp": ("model.keras", "model-head.joblib"), "bovw": ("model.joblib",)}  # what each save_model writes
DECODE = "decode the file with PIL; convert to {mode}; resize to {size}x{size} (bilinear)"
PREPROCESSING = (DECODE + "; feed the uint8 pixel values as float32 in 0..255, shape (N, {size}, {size}, {channels}), "
                 "channels last; the model scales them itself (its first layers); the output is one softmax "
                 "probability per class, in `classes` order")
FLIP_AVERAGE = ("; the graph averages the network's output on the image and on its left-right mirror (TinyNet's "
                "prediction for a model trained on flips, as the search measured it)")
BOVW_PREPROCESSING = (DECODE + "; then, inside the pipeline: {descriptor} descriptors ({keypoints} keypoints) on the "
                      "{color} planes, the codebook's encoding and the classifier; the output is one probability per "
                      "class, in `classes` order")
NO_CONVERTER = ("a BoVW model starts with OpenCV's descriptor extraction (dense SIFT, ...), then a k-means codebook, "
                "histograms and an SVM on kernels bench computes itself: no maintained converter takes that to ONNX or "
                "TFLite (skl2onnx converts scikit-learn estimators, not OpenCV's descriptors). Export it with "
                "--format joblib (model.joblib), which `bench predict --model DIR` reads")


class ExportError(ValueError):
    """The trial cannot be exported as asked; the message says why."""


def is_pipeline(objective: str, params: dict[str, Any]) -> bool:
    """True when predicting is more than one call of one Keras network (see the module docstring)."""
    if objective in KERAS_FAMILIES:
        return False
    if objective == "mlp":
        return params.get("variant", "end_to_end") != "end_to_end"
    if objective == "bovw":
        return True
    raise ExportError(f"objective '{objective}' cannot be exported: bench exports "
                      f"{', '.join((*KERAS_FAMILIES, *PIPELINE_FILES))}")


# --- getting the trained model ---


def model_folder(row: dict[str, Any], results: Path) -> Path | None:
    """The trial's artifact folder when it still holds the trained model, else None."""
    from bench.report import artifacts_folder

    folder = artifacts_folder(row, results)
    if folder is None or not (folder / "meta.json").exists():
        return None
    kept = json.loads((folder / "meta.json").read_text()).get("model")
    return folder if kept and (folder / kept).exists() else None


def retrain(row: dict[str, Any], into: Path, data_root: Path | None, settings: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Train the trial again from its params and seed (the backends give trial n the seed study_seed + n, and the
    study's validation split comes from study_seed); returns its folder and the re-trained model's metrics."""
    from bench.objective import TrialContext, get_objective

    obj = get_objective(row["objective"])
    split_seed = int(settings.get("seed", row["seed"] - row["trial_number"]))
    ctx = TrialContext(seed=int(row["seed"]), data_root=data_root, val_fraction=float(settings.get("val_fraction", 0.15)),
                       test_fraction=float(settings.get("test_fraction", 0.3)), split_seed=split_seed, run_dir=into,
                       trial_number=int(row["trial_number"]), keep_top=0, keep_models=True)
    result = obj.run(row["params"], ctx)
    if "artifacts_error" in result.extras:
        raise ExportError(f"the re-trained model could not be saved: {result.extras['artifacts_error']}")
    metrics = {k: v for k, v in result.as_dict().items() if k.startswith(("val_", "test_"))}
    return Path(result.extras["artifacts"]), metrics


def load_model(objective: str, params: dict[str, Any], folder: Path):
    """The saved model in folder, read back by its family (Objective.load_model): for a pipeline the family's own model
    (MLPModel, BoVWModel), else the Keras network in it (KerasObjective.network)."""
    from bench.objective import get_objective

    family = get_objective(objective)
    model = family.load_model(folder)
    return model if is_pipeline(objective, params) else family.network(model)


# --- the card ---


def model_card(row: dict[str, Any], classes: list[str], input_size: int, channels: int, preprocessing: str, fmt: str,
               files: list[str], data_fingerprint: str | None, retrained: dict[str, Any] | None) -> dict[str, Any]:
    mode = "RGB" if channels == 3 else "L (grayscale)"
    metrics = {k: row.get(k) for k in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_loss",
                                       "test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_loss")}
    from bench.leaderboard import code_version

    return {
        "format": fmt, "files": files, "objective": row["objective"], "study": row["study"],
        "trial": row["trial_number"], "seed": row["seed"], "classes": list(classes),
        "input": {"size": int(input_size), "channels": int(channels), "colour_mode": mode.split()[0]},
        "preprocessing": preprocessing,
        "params": row["params"], "n_params": row.get("n_params"), "metrics": metrics,
        "retrained": retrained, "data_fingerprint": data_fingerprint,
        "code_version": {"search": row.get("code_version"), "export": code_version()},
    }


def model_input(objective: str, params: dict[str, Any], model) -> tuple[int, int, str]:
    """(image side, channels, the preprocessing in words) the model takes: the Keras input, or the pipeline's resized
    image (from the loaded model, whose params are complete: a row's params hold only what the space gave)."""
    if objective == "bovw":  # descriptors run on planes of the RGB image (gray, rgb or opponent)
        spec = model.spec
        return spec.image_size, 3, BOVW_PREPROCESSING.format(mode="RGB", size=spec.image_size, color=spec.color,
                                                             descriptor=spec.descriptor, keypoints=spec.keypoints)
    if is_pipeline(objective, params):
        size, channels = int(model.params["input_size"]), 3 if model.params["color"] else 1
    else:
        shape = model.inputs[0].shape
        size, channels = int(shape[1]), int(shape[3])
    mode = "RGB" if channels == 3 else "L (grayscale)"
    return size, channels, PREPROCESSING.format(mode=mode, size=size, channels=channels)


# --- writing each format ---


def inference_model(model):
    """The model without its augmentation layers (Random*: identity at inference). Their random ops stay in an exported
    graph, and TFLite's builtin ops do not have them. The other layers are copies, with the same weights."""
    from bench.keras_train import keras

    k = keras()
    if not any(layer.__class__.__name__.startswith("Random") for layer in model.layers):
        return model
    def swap(layer):
        if layer.__class__.__name__.startswith("Random"):
            return k.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    clean = k.models.clone_model(model, clone_function=swap)
    for layer in clean.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return clean


def _image_spec(model):
    import tensorflow as tf

    return tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="images")


def saved_model(model, path: Path) -> None:
    """A SavedModel whose `serve` endpoint calls the model with training=False, said outright: model.export's own
    endpoint ran batch norm in training mode (batch statistics) after a search in the same process."""
    from bench.keras_train import keras

    archive = keras().export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[_image_spec(model)])
    archive.write_out(str(path), verbose=False)


def averages_flips(objective: str, model) -> bool:
    """True where the family's prediction is the mean over the image and its mirror: TinyNet.predict_proba, for a
    model that trained on flips."""
    return objective == "tinynet" and any(type(layer).__name__ == "RandomFlip" for layer in model.layers)


def flip_averaged(model):
    """model(x) and model(x mirrored left-right), averaged, in one graph, so every format predicts what the search
    measured. The mirror is a fixed 0/1 matrix on the width axis (exact in float32), from built-in layers only: a
    .keras file with a Lambda layer loads only with safe_mode=False."""
    from bench.keras_train import keras

    k = keras()
    height, width, channels = model.inputs[0].shape[1:]
    image = k.Input((height, width, channels), name="images")
    mirror = k.layers.Dense(width, use_bias=False, trainable=False, name="mirror")
    mirrored = k.layers.Permute((1, 3, 2))(mirror(k.layers.Permute((1, 3, 2))(image)))  # width last, reversed, back
    mirror.set_weights([np.eye(width, dtype="float32")[::-1]])
    averaged = k.layers.Average(name="flip_average")([model(image), model(mirrored)])
    return k.Model(image, averaged, name=f"{model.name}_flip_averaged")


def write_format(model, fmt: str, out: Path, average_flips: bool = False) -> list[str]:
    """Write a Keras model as fmt into out (with average_flips, as flip_averaged); returns the written names."""
    target = out / FILES[fmt]
    model = inference_model(model)
    if average_flips:
        model = flip_averaged(model)
    if fmt == "keras":
        model.save(target)
    elif fmt == "savedmodel":
        saved_model(model, target)
    elif fmt == "onnx":
        import tensorflow as tf
        import tf2onnx

        # tf2onnx on an inference-only function: Keras' own model.export(format="onnx") (3.15) traces batch norm's
        # moving-statistics updates too, and tf2onnx then fails to freeze the graph
        spec = (_image_spec(model),)
        serve = tf.function(lambda x: model(x, training=False), input_signature=spec)
        tf2onnx.convert.from_function(serve, input_signature=spec, output_path=str(target))
    elif fmt == "tflite":
        import tensorflow as tf

        with tempfile.TemporaryDirectory() as tmp:  # Keras 3 models convert through a SavedModel
            saved_model(model, Path(tmp) / "sm")
            target.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "sm")).convert())
    return [target.name]


def export_trial(row: dict[str, Any], fmt: str, out: Path, results: Path, data_root: Path | None = None,
                 settings: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export the leaderboard row's model into out as fmt; returns the card (also written to out/model-card.json)."""
    if row["status"] != "complete":
        raise ExportError(f"trial {row['trial_number']} of '{row['study']}' is {row['status']}: only complete trials have a model")
    pipeline = is_pipeline(row["objective"], row["params"])
    if pipeline and fmt != JOBLIB:
        if row["objective"] == "bovw":
            raise ExportError(f"--format {fmt}: {NO_CONVERTER}")
        raise ExportError(f"mlp variant '{row['params'].get('variant')}' is a network plus a fitted head: "
                          f"export it with --format {JOBLIB} (model.keras + model-head.joblib)")
    if not pipeline and fmt not in KERAS_FORMATS:
        raise ExportError(f"--format must be one of {', '.join(KERAS_FORMATS)} for {row['objective']}, got '{fmt}'")
    out.mkdir(parents=True, exist_ok=True)
    folder, retrained = model_folder(row, results), None
    scratch = None
    if folder is None:
        log(f"trial {row['trial_number']} of '{row['study']}' kept no model: training it again from its params and seed")
        scratch = Path(tempfile.mkdtemp(prefix="bench-export-"))
        folder, metrics = retrain(row, scratch, data_root, settings or {})
        retrained = {"why": "the search did not keep this trial's model (see --keep-top / --keep-models); it was "
                            "trained again from the trial's params and seed", "metrics": metrics}
        log("re-trained: val acc {val_accuracy:.3f} (search: {0:.3f}), test acc {test_accuracy:.3f}".format(
            row["val_accuracy"], **metrics))
    try:
        model = load_model(row["objective"], row["params"], folder)
        classes = [str(c) for c in np.load(folder / "predictions.npz")["classes"]]
        size, channels, steps = model_input(row["objective"], row["params"], model)
        if pipeline:
            files = list(PIPELINE_FILES[row["objective"]])
            for name in files:
                shutil.copy2(folder / name, out / name)
        else:
            files = write_format(model, fmt, out, averages_flips(row["objective"], model))
            if averages_flips(row["objective"], model):
                steps += FLIP_AVERAGE
        fingerprint = _fingerprint(json.loads((folder / "meta.json").read_text()).get("data_root") or data_root)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    card = model_card(row, classes, size, channels, steps, fmt, files, fingerprint, retrained)
    (out / CARD).write_text(json.dumps(card, indent=2, default=str))
    return card


def _fingerprint(root) -> str | None:
    """The data's content fingerprint (bench.data.Catalog.fingerprint), None when the data is not there."""
    from bench import data as bdata

    try:
        return bdata.scan(bdata.resolve_root(root)).fingerprint() if root else None
    except (bdata.DataError, OSError):
        return None
