"""bench export / predict / compare on a real tiny search of the real MIT8 images: every format reloaded by its own
runtime and checked against Keras on real images; a trial without a kept model re-trained; an MLP+SVM pipeline."""
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.data import decode
from bench.leaderboard import Leaderboard, db_url

SPACE = {
    "objective": "tinynet",
    "params": {"input_size": 32, "blocks": 2, "epochs": 1, "batch_size": 16,
               "base_filters": {"type": "categorical", "choices": [4, 8]}},
}


def cli(*args):
    run = CliRunner().invoke(app, [str(a) for a in args])
    assert run.exit_code == 0, run.output
    return run


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_mit8):
    """Two 1-epoch TinyNet trials; only the better one's model is kept (--keep-top 1)."""
    tmp = tmp_path_factory.mktemp("export")
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    run = cli("search", "tinynet", "--space", space, "--data", tiny_mit8, "--results", tmp / "results", "--trials", 2,
              "--pruner", "none", "--sampler", "grid", "--study", "tiny", "--keep-top", 1)
    assert "device: CPU (TensorFlow" in run.output  # the search says where it trains (no GPU on this machine)
    rows = Leaderboard(db_url(None, tmp / "results")).query(study="tiny", status="complete", sort="accuracy")
    assert len(rows) == 2
    return tmp, rows


def real_images(root, n=12):
    return sorted((root / "test").rglob("*.jpg"))[:n]


def test_each_format_reloads_in_its_own_runtime_and_matches_keras(searched, tiny_mit8):
    from bench.keras_train import keras
    from bench.predict import load_predictor

    tmp, rows = searched
    best = rows[0]
    cards = {}
    for fmt in ("keras", "savedmodel", "tflite", "onnx"):
        out = tmp / f"out-{fmt}"
        cli("export", "--study", "tiny", "--format", fmt, "--out", out, "--results", tmp / "results", "--data", tiny_mit8)
        cards[fmt] = json.loads((out / "model-card.json").read_text())
    card = cards["onnx"]
    assert card["trial"] == best["trial_number"] and card["retrained"] is None  # the default: best on validation, kept
    assert card["classes"] == sorted(p.name for p in (tiny_mit8 / "train").iterdir())
    assert card["input"] == {"size": 32, "channels": 3, "colour_mode": "RGB"}
    assert card["metrics"]["test_accuracy"] == best["test_accuracy"] and card["n_params"] == best["n_params"]
    assert len(card["data_fingerprint"]) == 16 and card["code_version"]["search"] == best["code_version"]

    paths = real_images(tiny_mit8)
    x = np.stack([decode(p, 32) for p in paths]).astype(np.float32)
    kept = keras().models.load_model(tmp / "results" / "tiny" / f"optuna-trial-{best['trial_number']}" / "model.keras")
    reference = np.asarray(kept(x, training=False))
    assert reference.shape == (len(paths), 8)
    for fmt in cards:
        got = load_predictor(tmp / f"out-{fmt}").predict(x)
        np.testing.assert_allclose(got, reference, atol=1e-4, err_msg=fmt)
    import onnxruntime  # the ONNX file really runs on onnxruntime, not on TensorFlow
    session = onnxruntime.InferenceSession(str(tmp / "out-onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], reference, atol=1e-4)
    from ai_edge_litert.interpreter import Interpreter  # and the .tflite on LiteRT, TFLite's own runtime
    from bench.predict import run_tflite

    lite = Interpreter(model_path=str(tmp / "out-tflite" / "model.tflite"))
    lite.allocate_tensors()
    np.testing.assert_allclose(run_tflite(lite, x), reference, atol=1e-4)


def test_a_trial_without_its_model_is_retrained_from_params_and_seed(searched, tiny_mit8):
    tmp, rows = searched
    other = rows[1]
    folder = tmp / "results" / "tiny" / f"optuna-trial-{other['trial_number']}"
    assert (folder / "predictions.npz").exists() and not (folder / "model.keras").exists()  # --keep-top 1: the best only
    out = tmp / "retrained"
    run = cli("export", other["trial_number"], "--study", "tiny", "--format", "keras", "--out", out,
              "--results", tmp / "results", "--data", tiny_mit8)
    assert "training it again" in run.output
    card = json.loads((out / "model-card.json").read_text())
    assert "did not keep" in card["retrained"]["why"]
    # same params, seed and split: the same model, so the same validation accuracy as the search measured
    assert card["retrained"]["metrics"]["val_accuracy"] == pytest.approx(other["val_accuracy"], abs=1e-9)
    assert (out / "model.keras").exists()


def test_predict_a_labelled_folder_prints_accuracy_and_confusion_and_writes_csv(searched, tiny_mit8):
    tmp, rows = searched
    csv_path = tmp / "preds.csv"
    run = cli("predict", "--study", "tiny", tiny_mit8 / "test", "--out", csv_path, "--results", tmp / "results")
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 24 and lines[0].startswith("path,predicted,label,p_")
    probs = np.array([[float(v) for v in line.split(",")[3:]] for line in lines[1:]])
    assert probs.shape == (24, 8) and np.allclose(probs.sum(1), 1, atol=1e-4)
    labels = [line.split(",")[2] for line in lines[1:]]
    hits = sum(line.split(",")[1] == y for line, y in zip(lines[1:], labels))
    assert f"24 labelled images: accuracy {hits / 24:.3f}" in run.output
    assert "confusion" in run.output


def test_predict_takes_any_size_and_mode_and_unlabelled_files(searched, tmp_path):
    from conftest import make_image

    tmp, _ = searched
    out = tmp / "out-predict-keras"
    cli("export", "--study", "tiny", "--out", out, "--results", tmp / "results")
    files = [make_image(tmp_path / "a.png", (50, 20), "L"), make_image(tmp_path / "b.png", (17, 90), "RGBA", seed=1)]
    run = cli("predict", "--model", out, *files, "--out", tmp_path / "p.csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == [str(f) for f in files]
    assert all(line.split(",")[2] == "" for line in lines) and "labelled" not in run.output  # no class folders


def test_mlp_svm_exports_its_pipeline_and_predicts(tmp_path, tiny_mit8):
    space = tmp_path / "svm.yaml"
    space.write_text(yaml.safe_dump({"objective": "mlp", "params": {
        "variant": "svm", "input_size": 16, "hidden_layers": 1, "units": 32, "epochs": 1, "svm_kernel": "rbf"}}))
    cli("search", "mlp", "--space", space, "--data", tiny_mit8, "--results", tmp_path / "results", "--trials", 1,
        "--study", "svm")
    bad = CliRunner().invoke(app, ["export", "--study", "svm", "--format", "onnx", "--results", str(tmp_path / "results")])
    assert bad.exit_code == 2 and "--format pipeline" in bad.output
    out = tmp_path / "svm-export"
    cli("export", "--study", "svm", "--format", "pipeline", "--out", out, "--results", tmp_path / "results")
    card = json.loads((out / "model-card.json").read_text())
    assert card["files"] == ["model.keras", "model-head.joblib"] and card["input"]["size"] == 16
    row = Leaderboard(db_url(None, tmp_path / "results")).query(study="svm")[0]
    csv_path = tmp_path / "svm.csv"
    run = cli("predict", "--model", out, tiny_mit8 / "test", "--out", csv_path)
    assert f"accuracy {row['test_accuracy']:.3f}" in run.output  # the exported pipeline gives the search's test accuracy


def test_bovw_says_it_cannot_be_exported_yet(tmp_path):
    from bench.export import ExportError, is_pipeline

    with pytest.raises(ExportError, match="BoVW"):
        is_pipeline("bovw", {})


def test_compare_one_line_per_study_with_fronts_and_paper_figure(searched, tmp_path, tiny_mit8):
    from bench.compare import compare_data, paper_figure

    tmp, rows = searched
    board = Leaderboard(db_url(None, tmp / "results"))
    data = compare_data(board, ["tiny"])
    assert [b["trial_number"] for b in data["best"]] == [rows[0]["trial_number"]]
    assert data["best"][0]["search_seconds"] > 0 and len(data["rows"]) == 2
    assert data["front_params"] and data["front_time"]
    assert paper_figure("tinynet", {"input_size": 32, "blocks": 2, "base_filters": 32, "growth": 1.0, "kernel_size": 5,
                                    "padding": "valid", "downsample": "maxpool", "head": "flatten", "batch_norm": False,
                                    "activation": "relu", "init": "glorot_uniform", "flip": False, "optimizer": "adam",
                                    "lr": 0.001, "batch_size": 32, "epochs": 30, "patience": 6})["id"] == "cnn_baseline"
    page = tmp_path / "compare.html"
    run = cli("compare", "--results", tmp / "results", "--out", page, "--no-png")
    assert "tinynet" in run.output and "Pareto front" in run.output and page.exists()
    assert "Which family wins" in page.read_text()
