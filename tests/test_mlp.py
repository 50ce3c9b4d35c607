"""The MLP family: each variant end to end on a tiny sample of the real images, the patch grid, patch aggregation,
the SVM's feature width and the parameter count of what a variant adds."""
from __future__ import annotations

import numpy as np
import pytest

from bench.objective import TrialContext, TrialFailed, get_objective
from bench.objectives import mlp

# tiny and quick: 16 px images, 8 px patches, two small hidden layers, 2 epochs
QUICK = {"input_size": 16, "hidden_layers": 2, "units": 32, "taper": 0.5, "epochs": 2, "batch_size": 16,
         "patch_size": 8, "k": 16, "codebook_samples": 2000}


def run(tiny_mit8, seed=0, **params):
    ctx = TrialContext(seed=seed, data_root=tiny_mit8, val_fraction=0.25)
    return get_objective("mlp").run({**QUICK, **params}, ctx)


def check(result, history_keys=()):
    assert 0 <= result.val_accuracy <= 1 and 0 <= result.test_accuracy <= 1
    assert result.n_params > 0 and result.epochs == 2
    assert result.extras["classes"] and len(result.extras["classes"]) == 8
    for key in history_keys:
        assert key in result.extras["history"], key


# --- the patch grid ---


@pytest.mark.parametrize("size,patch,step", [(16, 8, 4), (16, 8, 3), (64, 24, 12), (32, 32, 16), (20, 7, 5), (9, 1, 1)])
def test_patch_grid_covers_the_image(size, patch, step):
    x = np.arange(2 * size * size * 3, dtype=np.int64).reshape(2, size, size, 3)
    patches, centres = mlp.grid_patches(x, patch, step)
    starts = mlp.grid_positions(size, patch, step)
    assert patches.shape == (2, len(starts) ** 2, patch, patch, 3)
    assert starts[0] == 0 and starts[-1] == size - patch  # flush with both edges
    assert all(0 < b - a <= step for a, b in zip(starts, starts[1:]))
    covered = np.zeros((size, size), bool)
    for r in starts:
        for c in starts:
            covered[r : r + patch, c : c + patch] = True
    assert covered.all()
    # every patch is the image's pixels at its place, and its centre is where it was cut
    i = len(starts) - 1  # first row, last column
    np.testing.assert_array_equal(patches[1, i], x[1, :patch, starts[-1] : starts[-1] + patch])
    np.testing.assert_allclose(centres[i], [(starts[-1] + patch / 2) / size, patch / 2 / size], atol=1e-6)
    assert ((0 <= centres) & (centres < 1)).all()


def test_patch_larger_than_image_fails():
    with pytest.raises(TrialFailed, match="patch_size 24"):
        mlp.grid_positions(16, 24, 8)


def test_random_patches_are_seeded_crops():
    x = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 1), dtype=np.uint8)
    a, b = mlp.random_patches(x, 8, 5, seed=1), mlp.random_patches(x, 8, 5, seed=1)
    assert a.shape == (3, 5, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    windows = np.lib.stride_tricks.sliding_window_view(x[0, ..., 0], (8, 8)).reshape(-1, 8, 8)
    assert any((w == a[0, 0, ..., 0]).all() for w in windows)


# --- aggregation ---


def test_vote_and_mean_aggregation_differ_where_they_should():
    # two patches lean to class 1, one is sure of class 0: the mean picks 0, the vote picks 1
    proba = np.array([[[0.4, 0.6], [0.4, 0.6], [1.0, 0.0]]])
    np.testing.assert_allclose(mlp.aggregate(proba, "mean"), [[0.6, 0.4]])
    vote = mlp.aggregate(proba, "vote")
    assert vote.argmax() == 1
    np.testing.assert_allclose(vote.sum(axis=1), 1)


def test_vote_ties_break_by_mean_probability():
    proba = np.array([[[0.9, 0.1], [0.45, 0.55]]])  # one vote each; the mean favours class 0
    assert mlp.aggregate(proba, "vote").argmax() == 0
    proba = np.array([[[0.55, 0.45], [0.1, 0.9]]])
    assert mlp.aggregate(proba, "vote").argmax() == 1


# --- each variant end to end on real images ---


def test_end_to_end(tiny_mit8):
    r = run(tiny_mit8, variant="end_to_end", color=False)
    check(r)
    # gray 16x16 input -> 32 -> 16 -> 8, batch-norm without dense biases (4 numbers per unit)
    assert r.n_params == 256 * 32 + 4 * 32 + 32 * 16 + 4 * 16 + 16 * 8 + 8


def test_svm_sees_the_chosen_hidden_layer(tiny_mit8):
    net = 16 * 16 * 3 * 32 + 4 * 32 + 32 * 16 + 4 * 16 + 16 * 8 + 8
    for back, width in ((0, 16), (1, 32)):  # the last hidden layer (16 units), then the one before it (32)
        r = run(tiny_mit8, variant="svm", feature_layer=back, svm_kernel="linear", svm_normalize="standard")
        h = r.extras["history"]
        check(r, ("feature_dim", "n_params_classifier", "n_params_scaler"))
        assert h["feature_dim"] == [width]
        assert h["n_params_network"] == [net]
        assert h["n_params_scaler"] == [2 * width]
        # the SVM adds its support vectors x width (at least 8 classes' worth) and coefficients to the network
        assert h["n_params_classifier"][0] >= 8 * width
        assert r.n_params == net + 2 * width + h["n_params_classifier"][0]


def test_patches_aggregate_by_mean_and_by_vote(tiny_mit8):
    results = {how: run(tiny_mit8, variant="patches", aggregate=how, patch_step=1.0) for how in ("mean", "vote")}
    for r in results.values():
        check(r, ("patch_val_accuracy",))
        # the network sees 8x8 patches: 192 inputs, not the 768 of a whole 16 px image
        assert r.n_params == 192 * 32 + 4 * 32 + 32 * 16 + 4 * 16 + 16 * 8 + 8
    # same seed, same network: only the aggregation differs, and it is per image (24 test images, 3 per class)
    assert results["mean"].extras["history"]["loss"] == results["vote"].extras["history"]["loss"]
    for r in results.values():
        assert round(r.test_accuracy * 24) == pytest.approx(r.test_accuracy * 24)


def test_patches_from_random_crops(tiny_mit8):
    check(run(tiny_mit8, variant="patches", patch_sampling="random", patches_per_image=4, aggregate="vote"))


def test_patch_bovw_adds_codebook_and_svm(tiny_mit8):
    r = run(tiny_mit8, variant="patch_bovw", k=16, levels=1, feature_layer=0)
    h = r.extras["history"]
    check(r, ("n_params_codebook", "n_params_classifier"))
    assert h["feature_dim"] == [16]
    assert h["n_params_codebook"] == [16 * 16]  # k x the last hidden layer's width
    assert r.n_params == h["n_params_network"][0] + h["n_params_codebook"][0] + h["n_params_classifier"][0]


def test_same_seed_same_metrics(tiny_mit8):
    a, b = (run(tiny_mit8, variant="svm") for _ in range(2))
    assert (a.val_accuracy, a.test_accuracy, a.n_params) == (b.val_accuracy, b.test_accuracy, b.n_params)
    assert a.extras["history"]["loss"] == b.extras["history"]["loss"]


def test_unknown_variant_fails_before_training(tiny_mit8):
    with pytest.raises(TrialFailed, match="variant"):
        run(tiny_mit8, variant="cnn")


# --- the per-epoch figure the pruner sees ---


def test_per_epoch_figure_uses_the_trials_aggregation():
    # image 0 (class 1): two patches lean to 1, one is sure of 0; image 1 (class 0): all lean to 0.
    # By mean image 0 is wrong (1 of 2 right); by vote it is right (2 of 2)
    proba = np.array([[[0.4, 0.6], [0.4, 0.6], [1.0, 0.0]], [[0.7, 0.3], [0.8, 0.2], [0.6, 0.4]]])
    y = np.array([1, 0])
    assert mlp.image_metrics(proba, y, "mean")["val_accuracy"] == 0.5
    assert mlp.image_metrics(proba, y, "vote")["val_accuracy"] == 1.0
    assert mlp.image_metrics(proba, y, "vote")["val_loss"] < mlp.image_metrics(proba, y, "mean")["val_loss"]


@pytest.mark.parametrize("how", ["mean", "vote"])
def test_patches_report_per_epoch_what_they_select_on(tiny_mit8, how):
    # without early stopping the last epoch's weights are the final ones: the last figure reported to the pruner is the
    # trial's own validation figure, aggregated the same way
    ctx = TrialContext(seed=0, data_root=tiny_mit8, val_fraction=0.25)
    r = get_objective("mlp").run({**QUICK, "variant": "patches", "aggregate": how, "patch_step": 1.0}, ctx)
    assert [e["epoch"] for e in ctx.curve] == [0, 1]
    assert ctx.curve[-1]["val_accuracy"] == pytest.approx(r.val_accuracy)
    assert ctx.curve[-1]["val_loss"] == pytest.approx(r.val_loss)
    assert r.extras["history"]["val_accuracy"][-1] == pytest.approx(r.val_accuracy)


# --- the search space: each SVM's gamma only where its kernel reads it ---


def test_gamma_is_sampled_only_for_kernels_that_read_it():
    import optuna

    from bench.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("mlp")
    assert "gamma" not in space.params and {"svm_gamma", "bovw_gamma"} <= set(mlp.MLP.defaults)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        point = space.to_optuna(study.ask())
        assert ("svm_gamma" in point) == (point.get("svm_kernel") == "rbf"), point
        assert ("bovw_gamma" in point) == (point.get("bovw_kernel") in ("rbf", "chi2")), point
        seen |= {(point["variant"], "svm_gamma" in point or "bovw_gamma" in point)}
    # every variant drawn; both SVM variants drawn with and without a gamma
    assert seen >= {("svm", True), ("svm", False), ("patch_bovw", True), ("patch_bovw", False), ("patches", False)}
    for point in space.start:
        mlp.MLP().resolve(point)  # every start point names only known params


def test_each_svm_gamma_reaches_its_svm():
    cfg = mlp.MLP()._head_config
    params = {**mlp.MLP.defaults, "svm_gamma": 2.5, "bovw_gamma": 0.3}
    assert cfg({**params, "variant": "svm", "svm_kernel": "rbf"}, 0).gamma == 2.5
    assert cfg({**params, "variant": "patch_bovw", "bovw_kernel": "chi2"}, 0).gamma == 0.3


# --- the saved model, for `bench report` ---


@pytest.mark.parametrize("variant", ["end_to_end", "svm", "patches", "patch_bovw"])
def test_saved_model_predicts_as_the_trained_one(tiny_mit8, tmp_path, variant):
    import json

    from bench.report.trial import saved_network

    ctx = TrialContext(seed=0, data_root=tiny_mit8, val_fraction=0.25, run_dir=tmp_path, trial_number=0, keep_top=1,
                       keep_models=True)
    params = {**QUICK, "variant": variant, "aggregate": "vote", "k": 16}
    r = get_objective("mlp").run(params, ctx)
    assert "artifacts_error" not in r.extras
    folder = tmp_path / "trial-0"
    assert json.loads((folder / "meta.json").read_text())["model"] == "model.keras"
    assert (folder / "model-head.joblib").exists()
    kept = np.load(folder / "predictions.npz")  # what the in-memory model predicted during the trial
    split = ctx.images(QUICK["input_size"], True)
    objective = mlp.MLP()
    loaded = objective.load_model(folder)
    assert loaded.params["variant"] == variant and (loaded.head is None) == (variant in ("end_to_end", "patches"))
    np.testing.assert_allclose(objective.predict_proba(loaded, split.x_test), kept["test_proba"], atol=1e-5)
    np.testing.assert_allclose(objective.predict_proba(loaded, split.x_val[:6]), kept["val_proba"][:6], atol=1e-5)
    # and `bench report` opens the network
    assert saved_network({"objective": "mlp"}, folder).count_params() == r.extras["history"]["n_params_network"][0]


# --- patch_bovw's caches ---


def test_patch_bovw_leaves_nothing_in_the_cache(tiny_mit8, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # nor in a temporary folder
    cache = tmp_path / "cache"
    ctx = TrialContext(seed=0, data_root=tiny_mit8, val_fraction=0.25, cache_dir=cache)
    ctx.images(QUICK["input_size"], True)  # the decoded-image cache, which the trial shares with every other
    before = {p for p in cache.rglob("*")}
    r = get_objective("mlp").run({**QUICK, "variant": "patch_bovw", "k": 16}, ctx)
    assert r.extras["history"]["n_params_codebook"] == [16 * 16]  # a codebook was fitted
    assert {p for p in cache.rglob("*")} == before and not (cache / "bovw").exists()
    assert not any(scratch.iterdir())
