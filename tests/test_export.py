"""bench export / predict / compare on a real tiny search of the real MIT8 images: every format reloaded by its own
runtime and checked against Keras on real images; a trial without a kept model re-trained; the MLP+SVM and BoVW
pipelines (joblib), read back in a fresh process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli import app
from bench.data import decode
from bench.leaderboard import Leaderboard, db_url

SPACE = {
    "objective": "tinynet",
    "params": {"input_size": 32, "blocks": 2, "epochs": 1, "batch_size": 16, "flip": True,
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
    from bench.objectives.tinynet import TinyNet
    from bench.predict import image_files, load_predictor, predict_files

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

    assert "mirror" in card["preprocessing"]  # trained on flips: TinyNet predicts the mean over the image and its mirror
    paths = real_images(tiny_mit8)
    x = np.stack([decode(p, 32) for p in paths]).astype(np.float32)
    kept = keras().models.load_model(tmp / "results" / "tiny" / f"optuna-trial-{best['trial_number']}" / "model.keras")
    reference = TinyNet().predict_proba(kept, x)  # the family's own prediction, as the search measured test
    assert reference.shape == (len(paths), 8)
    assert np.abs(reference - np.asarray(kept(x, training=False))).max() > 1e-3  # the flip average is not a no-op
    stored = stored_test_proba(tmp / "results", "tiny", best)
    test_paths = image_files([tiny_mit8 / "test"])
    for fmt in cards:
        predictor = load_predictor(tmp / f"out-{fmt}")
        np.testing.assert_allclose(predictor.predict(x), reference, atol=1e-4, err_msg=fmt)
        got = predict_files(predictor, test_paths).proba  # every test image, read by bench predict's loader
        want = np.stack([stored[str(p.relative_to(tiny_mit8))] for p in test_paths])
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=fmt)  # the search's own test probabilities
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
    card = export_retrained(other, "tiny", "keras", out, tmp / "results", tiny_mit8)
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


def export_retrained(row, study, fmt, out, results, data):
    """Export a trial the search did not keep (so it is trained again, and says so); its model card."""
    run = cli("export", row["trial_number"], "--study", study, "--format", fmt, "--out", out, "--results", results,
              "--data", data)
    assert "training it again" in run.output
    return json.loads((out / "model-card.json").read_text())


def kept_and_other(rows, results, study):
    """(the row whose trial kept its model under --keep-top 1, the other one)."""
    kept = [r for r in rows if list((results / study / f"{r['backend']}-trial-{r['trial_number']}").glob("model*"))]
    assert len(kept) == 1, [r["trial_number"] for r in kept]
    return kept[0], next(r for r in rows if r is not kept[0])


def stored_test_proba(results, study, row):
    """The search's own test probabilities of the trial, by image path relative to the data root."""
    with np.load(results / study / f"{row['backend']}-trial-{row['trial_number']}" / "predictions.npz") as f:
        return dict(zip(map(str, f["test_paths"]), f["test_proba"]))


def csv_proba(path, root):
    lines = path.read_text().splitlines()[1:]
    return {str(Path(line.split(",")[0]).relative_to(root)): np.array([float(v) for v in line.split(",")[3:]])
            for line in lines}


def fresh_predict(model, images, csv_path, cwd):
    """`bench predict` in a new process, run from outside the checkout (the installed package, nothing in memory)."""
    bench = Path(sys.executable).parent / "bench"
    run = subprocess.run([str(bench), "predict", "--model", str(model), str(images), "--out", str(csv_path)], cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_mlp_svm_exports_its_pipeline_and_predicts(tmp_path, tiny_mit8):
    space = tmp_path / "svm.yaml"
    space.write_text(yaml.safe_dump({"objective": "mlp", "params": {
        "variant": "svm", "input_size": 16, "hidden_layers": 1, "epochs": 1, "svm_kernel": "rbf",
        "units": {"type": "categorical", "choices": [32, 48]}}}))
    results = tmp_path / "results"
    cli("search", "mlp", "--space", space, "--data", tiny_mit8, "--results", results, "--trials", 2, "--study", "svm",
        "--pruner", "none", "--sampler", "grid", "--keep-top", 1)
    kept, other = kept_and_other(Leaderboard(db_url(None, results)).query(study="svm"), results, "svm")
    bad = CliRunner().invoke(app, ["export", "--study", "svm", "--format", "onnx", "--results", str(results)])
    assert bad.exit_code == 2 and "--format joblib" in bad.output
    out = tmp_path / "svm-export"
    cli("export", kept["trial_number"], "--study", "svm", "--format", "joblib", "--out", out, "--results", results)
    card = json.loads((out / "model-card.json").read_text())
    assert card["files"] == ["model.keras", "model-head.joblib"] and card["input"]["size"] == 16
    assert card["format"] == "joblib" and card["retrained"] is None
    output = fresh_predict(out, tiny_mit8 / "test", tmp_path / "svm.csv", tmp_path)
    assert f"accuracy {kept['test_accuracy']:.3f}" in output  # the exported pipeline gives the search's test accuracy
    got, stored = csv_proba(tmp_path / "svm.csv", tiny_mit8), stored_test_proba(results, "svm", kept)
    assert got.keys() == stored.keys()
    for path in stored:
        np.testing.assert_allclose(got[path], stored[path], atol=2e-5, err_msg=path)

    card = export_retrained(other, "svm", "joblib", tmp_path / "svm-retrained", results, tiny_mit8)
    assert card["retrained"]["metrics"]["val_accuracy"] == pytest.approx(other["val_accuracy"], abs=1e-9)


BOVW_SPACE = {"objective": "bovw", "params": {
    "image_size": 64, "step": 16, "patch_sizes": "8", "levels": 1, "cv_folds": 2, "svm_kernel": "intersection",
    "k": {"type": "categorical", "choices": [12, 16]}}}


def test_bovw_exports_its_pipeline_and_a_fresh_process_predicts_the_same(tmp_path, tiny_mit8):
    """Dense SIFT -> codebook -> spatial pyramid (1 + 4 cells) -> intersection-kernel SVM on the real images: the exported pipeline,
    read back in a new process, extracts the descriptors of the test images again and gives the search's own test
    probabilities; a trial the search did not keep is re-trained and gives its own."""
    from bench.predict import image_files, load_predictor, predict_files

    space = tmp_path / "bovw.yaml"
    space.write_text(yaml.safe_dump(BOVW_SPACE))
    results = tmp_path / "results"
    cli("search", "bovw", "--space", space, "--data", tiny_mit8, "--results", results, "--trials", 2, "--study", "bovw",
        "--pruner", "none", "--sampler", "grid", "--keep-top", 1)
    rows = Leaderboard(db_url(None, results)).query(study="bovw", status="complete")
    kept, other = kept_and_other(rows, results, "bovw")
    for fmt in ("onnx", "tflite", "keras"):
        bad = CliRunner().invoke(app, ["export", "--study", "bovw", "--format", fmt, "--results", str(results)])
        assert bad.exit_code == 2 and "skl2onnx" in bad.output and "--format joblib" in bad.output, bad.output

    out = tmp_path / "bovw-export"
    cli("export", kept["trial_number"], "--study", "bovw", "--format", "joblib", "--out", out, "--results", results)
    card = json.loads((out / "model-card.json").read_text())
    assert card["files"] == ["model.joblib"] and card["format"] == "joblib" and card["retrained"] is None
    assert card["classes"] == sorted(p.name for p in (tiny_mit8 / "train").iterdir())
    assert card["input"] == {"size": 64, "channels": 3, "colour_mode": "RGB"} and "sift" in card["preprocessing"]
    assert card["params"]["k"] == kept["params"]["k"] and card["metrics"]["val_accuracy"] == kept["val_accuracy"]
    assert len(card["data_fingerprint"]) == 16

    output = fresh_predict(out, tiny_mit8 / "test", tmp_path / "bovw.csv", tmp_path)
    assert f"24 labelled images: accuracy {kept['test_accuracy']:.3f}" in output and "confusion" in output
    got, stored = csv_proba(tmp_path / "bovw.csv", tiny_mit8), stored_test_proba(results, "bovw", kept)
    assert got.keys() == stored.keys() and len(got) == 24
    for path in stored:  # the CSV holds 6 decimals
        np.testing.assert_allclose(got[path], stored[path], atol=1e-6, err_msg=path)

    again = tmp_path / "bovw-retrained"
    card = export_retrained(other, "bovw", "joblib", again, results, tiny_mit8)
    assert "did not keep" in card["retrained"]["why"] and card["params"]["k"] == other["params"]["k"]
    assert card["retrained"]["metrics"]["val_accuracy"] == pytest.approx(other["val_accuracy"], abs=1e-9)
    paths = image_files([tiny_mit8 / "test"])
    preds = predict_files(load_predictor(again), paths)
    stored = stored_test_proba(results, "bovw", other)
    for path, proba in zip(paths, preds.proba):
        np.testing.assert_allclose(proba, stored[str(path.relative_to(tiny_mit8))], atol=1e-6)


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


def test_compare_writes_a_real_png_through_kaleido(searched, tmp_path):
    from PIL import Image

    from bench.plots import chromium

    if not chromium():
        pytest.skip("no chromium: bench compare writes the HTML page only")
    tmp, _ = searched
    page = tmp_path / "compare.html"
    run = cli("compare", "--results", tmp / "results", "--out", page)
    png = page.with_suffix(".png")
    assert f"wrote {png}" in run.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # two panels of markers and fronts, not a blank
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1200, 520)  # write_page's figure size
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # drawn: axes, text, markers (a blank page has one colour)
