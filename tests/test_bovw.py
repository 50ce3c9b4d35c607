"""BoVW on a tiny real sample of MIT8 (a few symlinked images per class, small sizes): real OpenCV, real sklearn."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench import data as bdata
from bench.bovw import descriptors as bd
from bench.bovw import pipeline as bp
from bench.objective import TrialContext, TrialFailed, get_objective

MIT8 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mit8"
pytestmark = pytest.mark.skipif(not MIT8.is_dir(), reason=f"needs the MIT8 images at {MIT8}")
SIZE = 64


def _link_sample(root: Path, n_train: int, n_test: int) -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in sorted(p.name for p in (MIT8 / split).iterdir() if p.is_dir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((MIT8 / split / cls).glob("*.jpg"))[:n]:
                (root / split / cls / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _link_sample(tmp_path_factory.mktemp("mit8tiny"), 6, 3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def catalog(tiny) -> bdata.Catalog:
    return bdata.scan(tiny)


@pytest.fixture(scope="module")
def rgb(catalog) -> np.ndarray:
    return bdata.decode(catalog.train.paths[0], SIZE, True)


def _features(catalog, cache, **spec) -> bd.LocalFeatures:
    spec = bd.DescriptorSpec(**{"image_size": SIZE, "patch_sizes": "8,16", "step": 8, **spec})
    return bd.load_features(catalog.train.paths + catalog.test.paths, spec, catalog.fingerprint(cache), cache, n_jobs=2)


@pytest.fixture(scope="module")
def sift(catalog, cache) -> bd.LocalFeatures:
    return _features(catalog, cache)


# --- descriptors ---


@pytest.mark.parametrize(
    "descriptor, keypoints, color, dim",
    [
        ("sift", "dense", "gray", 128), ("sift", "dense", "rgb", 3 * 128), ("sift", "dense", "opponent", 3 * 128),
        ("sift", "detector", "gray", 128), ("daisy", "dense", "gray", 200), ("daisy", "detector", "gray", 200),
        ("orb", "dense", "gray", 32), ("orb", "detector", "gray", 32), ("brisk", "dense", "gray", 64),
        ("kaze", "detector", "gray", 64), ("akaze", "detector", "gray", 61),
    ],
)
def test_each_descriptor_on_a_real_image(rgb, descriptor, keypoints, color, dim):
    image = rgb if keypoints == "dense" else np.asarray(__import__("cv2").resize(rgb, (256, 256)))  # detectors need detail
    spec = bd.DescriptorSpec(descriptor=descriptor, keypoints=keypoints, color=color, image_size=image.shape[0],
                             step=8, patch_sizes=(16,) if descriptor != "orb" else (31,), max_features=100)
    desc, xy = bd.extract_image(image, spec)
    assert desc.ndim == 2 and desc.shape[1] == dim and len(desc) == len(xy) > 0
    assert desc.dtype == (np.uint8 if descriptor in ("sift", "orb", "akaze", "brisk") else np.float16)
    assert xy.dtype == np.float16 and (xy >= 0).all() and (xy < 1).all()
    if keypoints == "detector":
        assert len(desc) <= 100
    if descriptor in ("sift", "daisy") and keypoints == "dense":
        n = len(np.arange(8, image.shape[0] - 8 + 1e-6, 8))
        assert len(desc) == n * n  # every grid point described
    assert np.asarray(desc, np.float32).std() > 0  # real content, not zeros


def test_sift_is_stored_losslessly_as_uint8(rgb):
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kps = bd.dense_grid(SIZE, 8, (16,))
    _, ref = cv2.SIFT_create().compute(gray, kps)
    desc, _ = bd.extract_image(rgb, bd.DescriptorSpec(image_size=SIZE, patch_sizes=(16,)))
    np.testing.assert_array_equal(desc.astype(np.float32), ref)


def test_surf_raises_a_clear_error(tiny, cache):
    with pytest.raises(bd.DescriptorError, match=r"(?s)patented.*sift"):
        bd.DescriptorSpec(descriptor="surf")
    with pytest.raises(TrialFailed, match="patented"):
        get_objective("bovw").run({"descriptor": "surf"}, TrialContext(data_root=tiny, cache_dir=cache))


def test_dense_kaze_says_to_use_the_detector():
    with pytest.raises(bd.DescriptorError, match="keypoints=detector"):
        bd.DescriptorSpec(descriptor="kaze", keypoints="dense")


def test_descriptor_cache_is_hit_then_invalidated_by_a_keying_setting(catalog, tmp_path):
    first = _features(catalog, tmp_path)
    assert not first.from_cache and first.n_images == len(catalog.train.paths) + len(catalog.test.paths)
    bd.clear_memo()
    second = _features(catalog, tmp_path)
    assert second.from_cache and second.key == first.key
    np.testing.assert_array_equal(np.asarray(second.desc), np.asarray(first.desc))
    np.testing.assert_array_equal(np.asarray(second.offsets), first.offsets)
    for change in ({"step": 4}, {"patch_sizes": "16"}, {"color": "rgb"}, {"image_size": 48}):
        bd.clear_memo()
        other = _features(catalog, tmp_path, **change)
        assert not other.from_cache and other.key != first.key, change
    assert bd.DescriptorSpec().key("data-a") != bd.DescriptorSpec().key("data-b")  # the data's identity keys it too
    assert len(list((tmp_path / "bovw" / "descriptors").iterdir())) == 5


def test_objective_reports_the_cache_hit(tiny, tmp_path):
    obj, ctx = get_objective("bovw"), TrialContext(data_root=tiny, cache_dir=tmp_path)
    params = dict(image_size=SIZE, k=16, levels=0, cv_folds=3, classifier="knn", knn_k=3)
    bd.clear_memo()
    cold = obj.run(params, ctx)
    bd.clear_memo()
    warm = obj.run(params, ctx)
    assert cold.extras["history"]["descriptor_cache_hit"] == [0.0]
    assert warm.extras["history"]["descriptor_cache_hit"] == [1.0]
    assert (cold.val_accuracy, cold.test_accuracy) == (warm.val_accuracy, warm.test_accuracy)


def test_store_rows_follow_image_order(sift):
    idx = np.array([3, 0, 5])
    rows = sift.rows(idx)
    expect = np.concatenate([np.arange(sift.offsets[i], sift.offsets[i + 1]) for i in idx])
    np.testing.assert_array_equal(rows, expect)


# --- kernels, encodings ---


def test_intersection_kernel_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 13)).astype(np.float32), rng.random((5, 13)).astype(np.float32)
    x[x < 0.4] = 0
    brute = np.array([[sum(min(a, b) for a, b in zip(xi, yj)) for yj in y] for xi in x])
    np.testing.assert_allclose(bp.intersection_kernel(x, y), brute, rtol=1e-5)
    chi = np.array([[sum((a - b) ** 2 / (a + b) for a, b in zip(xi, yj) if a + b > 0) for yj in y] for xi in x])
    np.testing.assert_allclose(bp.chi2_distance(x, y), chi, rtol=1e-5)


def test_histograms_and_pyramid(sift, cache):
    cfg = bp.PipelineConfig(k=16)
    idx = np.arange(10)
    key, centers = bp.fit_codebook(sift, idx, cfg, cache)
    assert centers.shape == (16, 128)
    words = bp.visual_words(sift, idx, key, centers, cfg, cache)
    assert len(words) == sift.counts(idx).sum() and words.max() < 16
    xy = np.asarray(sift.xy[sift.rows(idx)])
    for layout, cells in (("square", [1, 4, 16]), ("strips", [1, 3, 7])):
        h = bp.histograms(words, xy, sift.counts(idx), 16, 2, layout, "lazebnik")
        assert h.shape == (10, 16 * sum(cells))
        weights = bp.level_weights(2, "lazebnik")
        np.testing.assert_allclose(weights, [0.25, 0.25, 0.5])
        bounds = np.cumsum([0] + [16 * c for c in cells])
        for level in range(3):  # each level's block holds every descriptor once, scaled by its weight
            np.testing.assert_allclose(h[:, bounds[level] : bounds[level + 1]].sum(1), weights[level], rtol=1e-5)
    h0 = bp.histograms(words, xy, sift.counts(idx), 16)
    np.testing.assert_allclose(h0[0], np.bincount(words[: sift.counts(idx)[0]], minlength=16) / sift.counts(idx)[0], rtol=1e-6)


def test_codebooks_are_cached_per_training_images(sift, cache):
    cfg = bp.PipelineConfig(k=8, codebook_samples=2000)
    key_a, a = bp.fit_codebook(sift, np.arange(0, 20), cfg, cache)
    key_b, b = bp.fit_codebook(sift, np.arange(20, 40), cfg, cache)
    assert key_a != key_b and not np.allclose(a, b)
    files = set((cache / "bovw" / "codebooks").iterdir())
    key_a2, a2 = bp.fit_codebook(sift, np.arange(0, 20), cfg, cache)
    assert key_a2 == key_a and set((cache / "bovw" / "codebooks").iterdir()) == files
    np.testing.assert_array_equal(a, a2)
    # the sample comes only from the training images' rows
    rows = bp.sample_rows(sift, np.arange(0, 20), 500, 0)
    assert rows.max() < sift.offsets[20] and len(rows) == 500


@pytest.mark.parametrize("weights, levels", [(False, 0), (True, 0), (False, 1)])
def test_fisher_vector_dimensions(sift, cache, weights, levels):
    K, D = 4, 16
    cfg = bp.PipelineConfig(encoding="fisher", fisher_components=K, fisher_pca=D, fisher_weights=weights, levels=levels,
                            codebook_samples=3000)
    model = bp.fit_fisher(sift, np.arange(20), cfg, cache)
    assert model.means.shape == (K, D) and model.pca_components.shape == (D, 128)
    fv = bp.fisher_vectors(sift, np.arange(3), model, cfg)
    per_cell = 2 * K * D + (K if weights else 0)
    assert bp.fisher_dim(K, D, weights) == per_cell
    cells = 1 if levels == 0 else 5
    assert fv.shape == (3, per_cell * cells)
    lw = bp.level_weights(levels, "lazebnik")
    norms = np.linalg.norm(fv[:, :per_cell], axis=1)  # power + L2 per cell, times the level weight
    np.testing.assert_allclose(norms, lw[0], rtol=1e-4)
    assert model.n_params() == D * 128 + 128 + 2 * K * D + K


# --- classifiers ---


@pytest.mark.parametrize(
    "overrides",
    [
        dict(classifier="svm", svm_kernel="linear"), dict(classifier="svm", svm_kernel="rbf", gamma=0.5),
        dict(classifier="svm", svm_kernel="intersection", levels=1), dict(classifier="svm", svm_kernel="chi2"),
        dict(classifier="knn", knn_k=3, knn_metric="manhattan"), dict(classifier="knn", knn_metric="cosine"),
        dict(classifier="logreg", C=10.0), dict(classifier="logreg", normalize="standard", reduce="pca", pca_components=8),
        dict(classifier="svm", svm_kernel="rbf", normalize="power", reduce="pca", pca_components=0.9),
        dict(classifier="knn", reduce="lda"),
        dict(classifier="logreg", encoding="fisher", fisher_components=4, fisher_pca=16, normalize="none"),
    ],
)
def test_every_classifier_path(sift, cache, catalog, overrides):
    n_train = len(catalog.train.paths)
    cfg = bp.PipelineConfig(**{"k": 16, "codebook_samples": 5000, **overrides})
    pipe = bp.BoVWPipeline(cfg, cache, 8).fit(sift, np.arange(n_train), catalog.train.labels)
    test_idx = n_train + np.arange(len(catalog.test.paths))
    p = pipe.predict_proba(sift, test_idx)
    assert p.shape == (len(test_idx), 8) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    parts = pipe.param_breakdown()
    dim = pipe.feature_dim
    if cfg.encoding == "hist":
        assert parts["codebook"] == 16 * 128
    if cfg.classifier == "knn":
        assert parts["classifier"] == n_train * dim
    elif cfg.classifier == "logreg":
        assert parts["classifier"] == 8 * dim + 8
    else:
        n_sv, pairs = len(pipe.clf.support_), 28
        sv_form = n_sv * dim + pipe.clf.dual_coef_.size + 3 * pairs
        expect = min(sv_form, pairs * dim + 3 * pairs) if cfg.svm_kernel == "linear" else sv_form
        assert parts["classifier"] == expect and 0 < n_sv <= n_train
    if cfg.reduce == "lda":
        assert dim == 7 and parts["projection"] > 0
    if cfg.reduce == "pca" and cfg.pca_components >= 1:
        assert dim == 8 and parts["projection"] == 8 * pipe.encoded_dim + pipe.encoded_dim
    assert pipe.n_params() == sum(parts.values())


def test_chi2_kernel_refuses_signed_features(sift, cache, catalog):
    cfg = bp.PipelineConfig(k=16, normalize="standard", svm_kernel="chi2")
    with pytest.raises(bp.BoVWError, match="non-negative"):
        bp.BoVWPipeline(cfg, cache).fit(sift, np.arange(len(catalog.train.paths)), catalog.train.labels)


# --- the objective ---


def test_objective_cross_validates_and_refits(tiny, cache):
    obj = get_objective("bovw")
    params = dict(image_size=SIZE, patch_sizes="8,16", k=16, levels=1, cv_folds=3)
    reports = []
    ctx = TrialContext(seed=3, data_root=tiny, cache_dir=cache, report_hook=lambda e, m: reports.append((e, m)) and False)
    r = obj.run(params, ctx)
    assert [e for e, _ in reports] == [0, 1, 2]  # one report per fold: a backend may prune
    for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "test_accuracy"):
        assert 0 <= getattr(r, key) <= 1
    assert math.isfinite(r.val_loss) and r.epochs == 3
    hist = r.extras["history"]
    assert len(hist["fold_accuracy"]) == 3
    assert np.isclose(reports[-1][1]["val_accuracy"], r.val_accuracy)  # the running CV accuracy ends at the CV accuracy
    fitted = hist["n_params_fitted"][0]
    assert 16 * 128 < fitted <= r.n_params  # before fitting the template gets an upper bound
    assert fitted == sum(v[0] for k, v in hist.items() if k.startswith("n_params_") and k != "n_params_fitted")
    again = obj.run(params, TrialContext(seed=3, data_root=tiny, cache_dir=cache))
    assert (again.val_accuracy, again.val_loss, again.test_accuracy) == (r.val_accuracy, r.val_loss, r.test_accuracy)


def test_objective_beats_chance_on_a_bigger_sample(tmp_path, cache):
    """12 images per class at 96 px: dense SIFT + pyramid + intersection SVM must beat chance (1/8) clearly."""
    root = _link_sample(tmp_path / "mit8", 12, 6)
    r = get_objective("bovw").run(dict(image_size=96, patch_sizes="8,16", k=32, levels=1, cv_folds=3),
                                  TrialContext(data_root=root, cache_dir=cache))
    assert r.val_accuracy > 0.3 and r.test_accuracy > 0.3


def test_spaces_load_and_sample_known_params():
    import optuna

    from bench.space import list_spaces, load_space

    names = [n for n in list_spaces() if n == "bovw" or n == "bovw_best" or n.startswith("paper/bovw")]
    assert {"bovw", "bovw_best", "paper/bovw_stage1_keypoints", "paper/bovw_fisher"} <= set(names)
    obj = get_objective("bovw")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in names:
        space = load_space(name)
        assert space.objective == "bovw"
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(30):
            params = space.to_optuna(study.ask())
            resolved = obj.resolve(params)  # unknown names raise
            assert all(space.active(n, params) for n in params)  # e.g. no Fisher params on a histogram trial
            bp.PipelineConfig(**{k: resolved[k] for k in bp.PipelineConfig.__dataclass_fields__ if k in resolved})
            try:
                bd.DescriptorSpec(**{k: resolved[k] for k in ("descriptor", "keypoints", "step", "patch_sizes",
                                                             "max_features", "image_size", "color")})
            except bd.DescriptorError:
                assert resolved["descriptor"] in ("kaze", "akaze") and resolved["keypoints"] == "dense"
    best = load_space("bovw_best")
    assert not best.grid() or all(len(v) == 1 for v in best.grid().values())  # every param fixed


def test_fisher_pyramid_reuses_cell_statistics_exactly(sift, cache):
    """Level 0 of a pyramid is built from its cells' statistics: it must equal the Fisher vector of the whole image."""
    cfg0 = bp.PipelineConfig(encoding="fisher", fisher_components=4, fisher_pca=16, fisher_weights=True, codebook_samples=3000)
    model = bp.fit_fisher(sift, np.arange(20), cfg0, cache)
    whole = bp.fisher_vectors(sift, np.arange(4), model, cfg0)
    for layout in ("square", "strips"):
        cfg1 = bp.PipelineConfig(**{**bp.config_dict(cfg0), "levels": 1, "layout": layout, "level_weights": "uniform"})
        pyramid = bp.fisher_vectors(sift, np.arange(4), model, cfg1)
        np.testing.assert_allclose(pyramid[:, : whole.shape[1]], whole, atol=2e-5)
        assert np.abs(pyramid[:, whole.shape[1]:]).sum() > 0
