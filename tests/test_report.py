"""Reports: ROC against scikit-learn, Grad-CAM where the answer is known, and the trial / study pages from a real search."""
import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score, roc_curve
from typer.testing import CliRunner

from bench.cli import app
from bench.leaderboard import Leaderboard, db_url
from bench.report import binary_roc, confusion, history_of, pick_examples, roc_ovr

runner = CliRunner()


def test_roc_and_auc_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[:, 2] = np.round(proba[:, 2], 1)  # ties in one class's scores
    proba[y == 1, 1] += 0.3  # class 1 is easy
    for c, (fpr, tpr, auc) in enumerate(roc_ovr(y, proba)):
        assert auc == pytest.approx(roc_auc_score(y == c, proba[:, c]), abs=1e-12)
        ref_fpr, ref_tpr, _ = roc_curve(y == c, proba[:, c], drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr)
        np.testing.assert_allclose(tpr, ref_tpr)
    macro = np.mean([a for _, _, a in roc_ovr(y, proba / proba.sum(1, keepdims=True))])
    assert macro == pytest.approx(roc_auc_score(y, proba / proba.sum(1, keepdims=True), multi_class="ovr"), abs=1e-12)
    assert binary_roc(np.array([0, 1]), np.array([0.2, 0.9]))[2] == 1.0


def test_confusion_examples_and_histories():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    counts, norm = confusion(y, proba.argmax(1), 2)
    assert counts.tolist() == [[1, 1], [1, 2]] and norm[1].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert pick_examples(y, proba) == [(0, 0, True), (1, 0, False), (4, 1, True), (3, 1, False)]
    as_list = {"extras": {"history": [{"epoch": 0, "val_accuracy": 0.2, "loss": 2.0}, {"epoch": 1, "val_accuracy": 0.3, "loss": 1.5}]}}
    assert history_of(as_list) == {"loss": [2.0, 1.5], "val_accuracy": [0.2, 0.3]}
    assert history_of({"extras": {"history": {"loss": [1.0]}}}) == {"loss": [1.0]}


def test_gradcam_lights_up_the_square_that_decides_the_class():
    """Class 1 images have a bright square in the top-left corner, class 0 images none: the heat map must find it."""
    from bench.gradcam import gradcam, last_spatial_layer
    from bench.keras_train import keras, release_keras

    k = keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, size = 240, 32
    x = rng.uniform(0, 0.3, (n, size, size, 3)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, 2:10, 2:10, :] = 1.0
    L = k.layers
    inputs = k.Input((size, size, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(h)
    outputs = L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(h))
    model = k.Model(inputs, outputs)
    model.compile(optimizer=k.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    assert last_spatial_layer(model).name == "last_conv"

    test = rng.uniform(0, 0.3, (4, size, size, 3)).astype(np.float32)
    test[:, 2:10, 2:10, :] = 1.0
    heat = gradcam(model, test, [1, 1, 1, 1])
    assert heat.shape == (4, size, size) and heat.max() == pytest.approx(1.0)
    for h in heat:
        peak = np.unravel_index(np.argmax(h), h.shape)
        assert peak[0] < 12 and peak[1] < 12, f"peak at {peak}, not in the top-left corner"
        assert h[:12, :12].mean() > 3 * h[16:, 16:].mean()
    release_keras()


SPACE = {"objective": "tinynet", "params": {
    "input_size": 32, "blocks": 2, "epochs": 2, "batch_size": 16,
    "base_filters": {"type": "int", "low": 4, "high": 12, "step": 4},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_mit8):
    """A real 3-trial search with artifacts kept (models of the best 1)."""
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "space.yaml").write_text(yaml.safe_dump(SPACE))
    run = runner.invoke(app, ["search", "tinynet", "--space", str(tmp / "space.yaml"), "--data", str(tiny_mit8), "--results",
                              str(tmp / "results"), "--pruner", "none", "--trials", "3", "--keep-top", "1"])
    assert run.exit_code == 0, run.output
    return tmp / "results"


def test_search_keeps_predictions_for_all_and_the_model_of_the_best(searched):
    rows = Leaderboard(db_url(None, searched)).query(study="space")
    assert len(rows) == 3
    for r in rows:
        folder = searched / "space" / f"optuna-trial-{r['trial_number']}"
        assert r["extras"]["artifacts"] == str(folder) and r["extras"]["artifact_seconds"] < 5
        with np.load(folder / "predictions.npz") as f:
            assert f["test_proba"].shape == (24, 8) and f["val_proba"].shape[1] == 8 and len(f["test_paths"]) == 24
            assert f["classes"][0] == "Opencountry"
        acts = json.loads((folder / "activations.json").read_text())
        assert acts["epochs"] == [0, 1, 2] and all(len(s["zero_fraction"]) == 3 for s in acts["layers"].values())
    best = sorted(rows, key=lambda r: (-r["val_accuracy"], r["trial_number"]))[0]
    kept = sorted(p.parent.name for p in (searched / "space").glob("*trial-*/model.keras"))
    assert kept == [f"optuna-trial-{best['trial_number']}"]


def test_trial_report_has_every_section(searched, tiny_mit8):
    best = Leaderboard(db_url(None, searched)).query(study="space", top=1)[0]
    run = runner.invoke(app, ["report", str(best["trial_number"]), "--study", "space", "--results", str(searched), "--no-png"])
    assert run.exit_code == 0, run.output
    page = (searched / "reports" / "space" / f"optuna-trial-{best['trial_number']}.html").read_text()
    for section in ("summary", "curves", "confusion", "per-class", "roc", "gradcam", "activations"):
        assert f'<section id="{section}">' in page
    for fig in ("curves", "confusion", "per-class", "roc", "gradcam", "activations", "activation-histograms"):
        assert f'id="fig-{fig}"' in page, fig
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined once
    by_id = runner.invoke(app, ["report", str(best["id"]), "--results", str(searched), "--no-png",
                                "--out", str(searched / "by-id.html")])
    assert by_id.exit_code == 0 and 'id="fig-gradcam"' in (searched / "by-id.html").read_text()
    missing = runner.invoke(app, ["report", "99", "--study", "space", "--results", str(searched)])
    assert missing.exit_code == 2 and "no trial 99" in missing.output


def test_study_report_has_every_section_and_pngs(searched):
    from bench.plots import chromium

    run = runner.invoke(app, ["report", "--study", "space", "--results", str(searched), "--png"])
    assert run.exit_code == 0, run.output
    page = (searched / "reports" / "space" / "study.html").read_text()
    for section in ("summary", "history", "pareto", "ratio", "importance", "parallel", "pruned-failed"):
        assert f'<section id="{section}">' in page
    assert "fig-history" in page and "fig-pareto" in page and "fig-parallel" in page
    if chromium():
        assert (searched / "reports" / "space" / "study-pareto.png").stat().st_size > 1000


def test_a_family_without_a_hold_out_or_a_model_keeps_its_test_predictions(tmp_path, tiny_mit8):
    """BoVW validates by cross-validation (empty val arrays) and saves no Keras model (its pipeline is model.joblib, for
    bench export): artifacts still work, its own model file loads back to the same predictions, and the page says why
    there is no Grad-CAM."""
    from bench.objective import TrialContext, get_objective
    from bench.report import trial_report

    ctx = TrialContext(seed=0, data_root=tiny_mit8, cache_dir=tmp_path / "cache", run_dir=tmp_path / "s", trial_number=0, keep_top=1)
    result = get_objective("bovw").run(dict(image_size=64, patch_sizes="16", k=8, cv_folds=2), ctx)
    assert "artifacts_error" not in result.extras and result.extras["artifacts"] == str(tmp_path / "s" / "trial-0")
    with np.load(tmp_path / "s" / "trial-0" / "predictions.npz") as f:
        assert f["val_proba"].shape == (0, 8) and f["test_proba"].shape == (24, 8)
    folder = tmp_path / "s" / "trial-0"
    assert [p.name for p in folder.glob("model*")] == ["model.joblib"]
    bovw = get_objective("bovw")
    split = bovw.load_data(bovw.resolve(dict(image_size=64, patch_sizes="16")), ctx)
    with np.load(folder / "predictions.npz") as f:
        np.testing.assert_allclose(bovw.predict_proba(bovw.load_model(folder), split.x_test), f["test_proba"], atol=1e-5)
    row = {"study": "s", "trial_number": 0, "objective": "bovw", "status": "complete", "params": {"image_size": 64},
           "extras": result.extras, **{k: v for k, v in result.as_dict().items() if k != "extras"}}
    written, _ = trial_report(row, tmp_path / "page.html", png=False)
    page = written[0].read_text()
    assert 'id="fig-confusion"' in page and 'id="fig-roc"' in page and "no saved Keras model" in page
