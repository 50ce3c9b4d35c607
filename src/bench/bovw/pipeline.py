"""Codebook, encoding, normalisation, reduction and classifier over any store of local descriptors.

`BoVWPipeline(config, cache_dir).fit(features, idx, y)` fits everything on the images `idx` of a `LocalFeatures`
store and nothing else (so inside a CV fold, only on that fold's training part); `predict_proba(features, idx)`
classifies other images of the same store. The objective `objectives/bovw.py` feeds it OpenCV descriptors; a
family with other local descriptors (patch features of a network, say) fills a `LocalFeatures` and calls the same.
Its tail, `FeatureClassifier(config).fit_vectors(x, y)` / `.predict_vectors(x)` (normalise -> reduce -> classify),
works alone on any fixed-length per-image features.

Caches (under cache_dir/bovw/): k-means codebooks and Fisher GMMs per (descriptor store key, k or components, seed,
sample size, descriptor transform, training image indices); visual-word assignments per (codebook, descriptor store,
images).

Learned numbers (`n_params`): codebook k x D (Fisher: PCA D' x D + D, GMM means and variances K x D' each and K
weights) + standard scaler (2 x dim) + PCA (n x dim + dim) / LDA (dim x n + dim) + classifier: SVM support vectors x
dim + dual coefficients + intercepts + Platt parameters (a linear SVM counts its primal weights if fewer); kNN its
stored samples x dim; logistic regression coef + intercept.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.bovw.descriptors import LocalFeatures
from bench.data import write_atomically
from bench.objective import TrialFailed

ENCODINGS = ("hist", "fisher")
LAYOUTS = ("square", "strips")
LEVEL_WEIGHTS = ("lazebnik", "uniform")
NORMALIZE = ("none", "l1", "l2", "power", "standard")
REDUCE = ("none", "pca", "lda")
CLASSIFIERS = ("svm", "knn", "logreg")
SVM_KERNELS = ("linear", "rbf", "intersection", "chi2")
KNN_METRICS = ("euclidean", "manhattan", "cosine")


class BoVWError(TrialFailed, ValueError):
    """A configuration that cannot work; the message says why."""


@dataclass(frozen=True)
class PipelineConfig:
    encoding: str = "hist"  # hard-assignment histogram, or Fisher vector
    k: int = 256  # codebook size (hist)
    codebook_samples: int = 100_000  # descriptors sampled (seeded) from the training images for k-means / GMM
    rootsift: bool = False  # L1 + signed square root of each descriptor (Hellinger / RootSIFT) before anything else
    fisher_components: int = 64  # GMM components K (fisher)
    fisher_pca: int = 64  # PCA of descriptors to D' dims before the GMM (0: none)
    fisher_weights: bool = False  # add the K mixture-weight gradients: dim 2*K*D' + K
    levels: int = 0  # spatial pyramid levels 0..2
    layout: str = "square"  # square: 2^l x 2^l cells at level l; strips: 2^(l+1)-1 horizontal bands (1, 3, 7)
    level_weights: str = "lazebnik"  # lazebnik: 1/2^L for level 0, 1/2^(L-l+1) for level l; uniform: all 1
    normalize: str = "l1"  # none, l1, l2, power (signed sqrt + L2), standard (scaler fitted on the training part)
    reduce: str = "none"  # none, pca, lda
    pca_components: float = 0.95  # < 1: variance fraction kept; >= 1: number of components
    classifier: str = "svm"
    svm_kernel: str = "intersection"
    C: float = 1.0
    gamma: float = 1.0  # rbf / chi2: relative to 1 / mean distance of the training part (1.0 is sklearn's 'scale' idea)
    knn_k: int = 5
    knn_metric: str = "euclidean"
    seed: int = 0  # descriptor sample, k-means, GMM, PCA
    classifier_seed: int = 0  # SVM's Platt scaling CV

    def __post_init__(self):
        for name, allowed in (("encoding", ENCODINGS), ("layout", LAYOUTS), ("level_weights", LEVEL_WEIGHTS),
                              ("normalize", NORMALIZE), ("reduce", REDUCE), ("classifier", CLASSIFIERS),
                              ("svm_kernel", SVM_KERNELS), ("knn_metric", KNN_METRICS)):
            if getattr(self, name) not in allowed:
                raise BoVWError(f"{name} must be one of {', '.join(allowed)}, got '{getattr(self, name)}'")
        if not 0 <= self.levels <= 2:
            raise BoVWError(f"levels must be 0, 1 or 2, got {self.levels}")
        if self.k < 2 or self.fisher_components < 1:
            raise BoVWError(f"k ({self.k}) must be >= 2 and fisher_components ({self.fisher_components}) >= 1")


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:20]


def _cache_path(cache_dir: Path | None, kind: str, key: str) -> Path | None:
    return Path(cache_dir) / "bovw" / kind / f"{key}.npz" if cache_dir is not None else None


def _save(path: Path | None, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to path (none: caching is off)."""
    if path is not None:
        write_atomically(path, lambda tmp: np.savez(tmp, **arrays))


# --- descriptors -> float rows ---


def transform_descriptors(x: np.ndarray, rootsift: bool) -> np.ndarray:
    if rootsift:
        x = np.abs(x) / np.maximum(np.abs(x).sum(axis=1, keepdims=True), 1e-7)
        np.sqrt(x, out=x)
    return x


def sample_rows(features: LocalFeatures, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of at most n descriptor rows of images idx, in row order."""
    rows = features.rows(idx)
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    return rows


# --- codebook and hard assignment ---


def fit_codebook(features: LocalFeatures, idx: np.ndarray, cfg: PipelineConfig,
                 cache_dir: Path | None) -> tuple[str, np.ndarray]:
    """(cache key, k x D float32 centres): MiniBatchKMeans on a seeded sample of the descriptors of images idx."""
    key = _hash("codebook", features.key, cfg.k, cfg.seed, cfg.codebook_samples, cfg.rootsift, np.asarray(idx, np.int64))
    path = _cache_path(cache_dir, "codebooks", key)
    if path and path.exists():
        return key, np.load(path)["centers"]
    from sklearn.cluster import MiniBatchKMeans

    x = transform_descriptors(features.as_float(sample_rows(features, idx, cfg.codebook_samples, cfg.seed)), cfg.rootsift)
    if len(x) < cfg.k:
        raise BoVWError(f"k={cfg.k} is more than the {len(x)} descriptors the training images give")
    batch = max(2048, 2 * cfg.k)
    km = MiniBatchKMeans(n_clusters=cfg.k, batch_size=batch, n_init=1, max_no_improvement=10,
                         init_size=min(len(x), 3 * batch), random_state=cfg.seed).fit(x)
    centers = km.cluster_centers_.astype(np.float32)
    _save(path, {"centers": centers})
    return key, centers


def assign(x: np.ndarray, centers: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row, with BLAS in float32 chunks."""
    c2 = (centers**2).sum(axis=1)
    out = np.empty(len(x), np.int32)
    for i in range(0, len(x), chunk):
        d = c2[None, :] - 2 * (x[i : i + chunk] @ centers.T)
        out[i : i + chunk] = d.argmin(axis=1)
    return out


def visual_words(features: LocalFeatures, idx: np.ndarray, codebook_key: str, centers: np.ndarray, cfg: PipelineConfig,
                 cache_dir: Path | None, chunk_images: int = 256) -> np.ndarray:
    """Word of every descriptor of images idx (in image order), cached per (codebook, images)."""
    idx = np.asarray(idx, np.int64)
    path = _cache_path(cache_dir, "words", _hash(codebook_key, features.key, idx))  # idx means images of this store
    if path and path.exists():
        return np.load(path)["words"]
    parts = []
    for i in range(0, len(idx), chunk_images):
        x = transform_descriptors(features.as_float(features.rows(idx[i : i + chunk_images])), cfg.rootsift)
        parts.append(assign(x, centers))
    words = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    words = words.astype(np.int16 if len(centers) < 2**15 else np.int32)
    _save(path, {"words": words})
    return words


# --- spatial pyramid ---


def pyramid_cells(levels: int, layout: str) -> list[int]:
    """Cells at each level: square 1, 4, 16; strips 1, 3, 7."""
    return [4**l if layout == "square" else 2 ** (l + 1) - 1 for l in range(levels + 1)]


def cell_of(xy: np.ndarray, level: int, layout: str) -> np.ndarray:
    x, y = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    if layout == "square":
        n = 2**level
        return np.minimum((y * n).astype(np.int64), n - 1) * n + np.minimum((x * n).astype(np.int64), n - 1)
    n = 2 ** (level + 1) - 1
    return np.minimum((y * n).astype(np.int64), n - 1)


def level_weights(levels: int, kind: str) -> np.ndarray:
    if kind == "uniform":
        return np.ones(levels + 1)
    return np.array([1 / 2**levels] + [1 / 2 ** (levels - l + 1) for l in range(1, levels + 1)])


def histograms(words: np.ndarray, xy: np.ndarray, counts: np.ndarray, k: int, levels: int = 0, layout: str = "square",
               weights: str = "lazebnik") -> np.ndarray:
    """Hard-assignment histograms, N x (k * cells): each level's block sums to the level's weight (1 at level 0 alone)."""
    n = len(counts)
    img = np.repeat(np.arange(n), counts)
    denom = np.maximum(counts, 1)[:, None].astype(np.float32)
    blocks = []
    for level, w in zip(range(levels + 1), level_weights(levels, weights)):
        cells = pyramid_cells(levels, layout)[level]
        bins = (img * cells + cell_of(xy, level, layout)) * k + words
        h = np.bincount(bins, minlength=n * cells * k).astype(np.float32).reshape(n, cells * k)
        blocks.append(h * (w / denom))
    return np.concatenate(blocks, axis=1)


# --- Fisher vectors ---


@dataclass
class FisherModel:
    pca_mean: np.ndarray | None
    pca_components: np.ndarray | None  # D' x D
    means: np.ndarray  # K x D'
    variances: np.ndarray  # K x D'
    weights: np.ndarray  # K

    def project(self, x: np.ndarray) -> np.ndarray:
        return x if self.pca_components is None else (x - self.pca_mean) @ self.pca_components.T

    def n_params(self) -> int:
        pca = 0 if self.pca_components is None else self.pca_components.size + self.pca_mean.size
        return int(pca + self.means.size + self.variances.size + self.weights.size)

    def posteriors(self, x: np.ndarray) -> np.ndarray:
        inv = 1.0 / self.variances
        log_det = np.log(self.variances).sum(axis=1)
        d = x.shape[1]
        quad = (x**2) @ inv.T - 2 * x @ (self.means * inv).T + (self.means**2 * inv).sum(axis=1)
        logp = np.log(self.weights) - 0.5 * (log_det + d * np.log(2 * np.pi) + quad)
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)


def fisher_dim(n_components: int, dim: int, weights: bool) -> int:
    """Fisher vector length of one cell: 2*K*D (+K with the mixture-weight gradients)."""
    return 2 * n_components * dim + (n_components if weights else 0)


def fit_fisher(features: LocalFeatures, idx: np.ndarray, cfg: PipelineConfig, cache_dir: Path | None) -> FisherModel:
    """PCA of descriptors, then a diagonal GMM, both on a seeded sample of the descriptors of images idx; cached."""
    key = _hash("fisher", features.key, cfg.fisher_components, cfg.fisher_pca, cfg.seed, cfg.codebook_samples, cfg.rootsift,
                np.asarray(idx, np.int64))
    path = _cache_path(cache_dir, "gmms", key)
    if path and path.exists():
        z = np.load(path)
        has_pca = z["pca_components"].size > 0
        return FisherModel(z["pca_mean"] if has_pca else None, z["pca_components"] if has_pca else None,
                           z["means"], z["variances"], z["weights"])
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = transform_descriptors(features.as_float(sample_rows(features, idx, cfg.codebook_samples, cfg.seed)), cfg.rootsift)
    if len(x) < cfg.fisher_components * 2:
        raise BoVWError(f"{cfg.fisher_components} GMM components need more than the {len(x)} training descriptors")
    mean = comps = None
    if 0 < cfg.fisher_pca < x.shape[1]:
        pca = PCA(n_components=min(cfg.fisher_pca, len(x)), random_state=cfg.seed).fit(x)
        mean, comps = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        x = (x - mean) @ comps.T
    gmm = GaussianMixture(cfg.fisher_components, covariance_type="diag", reg_covar=1e-4, max_iter=100,
                          init_params="k-means++", random_state=cfg.seed).fit(x)
    model = FisherModel(mean, comps, gmm.means_.astype(np.float32), gmm.covariances_.astype(np.float32),
                        gmm.weights_.astype(np.float32))
    empty = np.zeros(0, np.float32)
    _save(path, {"pca_mean": mean if mean is not None else empty, "pca_components": comps if comps is not None else empty,
                 "means": model.means, "variances": model.variances, "weights": model.weights})
    return model


def _power_l2(v: np.ndarray) -> np.ndarray:
    v = np.sign(v) * np.sqrt(np.abs(v))
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def fisher_vectors(features: LocalFeatures, idx: np.ndarray, model: FisherModel, cfg: PipelineConfig) -> np.ndarray:
    """Improved Fisher vectors (Perronnin et al. 2010): per pyramid cell, gradients w.r.t. means and variances
    (and weights), each cell power + L2 normalised, then scaled by its level weight."""
    idx = np.asarray(idx, np.int64)
    K, D = model.means.shape
    per_cell = fisher_dim(K, D, cfg.fisher_weights)
    cells_per_level = pyramid_cells(cfg.levels, cfg.layout)
    lw = level_weights(cfg.levels, cfg.level_weights)
    out = np.zeros((len(idx), per_cell * sum(cells_per_level)), np.float32)
    sigma = np.sqrt(model.variances)
    sw = np.sqrt(model.weights)

    def vector(t, s0, s1, s2):
        g_mu = (s1 - s0[:, None] * model.means) / sigma / (t * sw[:, None])
        g_sig = ((s2 - 2 * model.means * s1 + s0[:, None] * model.means**2) / model.variances - s0[:, None]) / (
            t * np.sqrt(2) * sw[:, None])
        parts = [g_mu.ravel(), g_sig.ravel()]
        if cfg.fisher_weights:
            parts.append((s0 - t * model.weights) / (t * sw))
        return _power_l2(np.concatenate(parts))

    for i, image in enumerate(idx):
        rows = np.arange(features.offsets[image], features.offsets[image + 1])
        if len(rows) == 0:
            continue
        x = model.project(transform_descriptors(features.as_float(rows), cfg.rootsift)).astype(np.float32)
        g = model.posteriors(x).astype(np.float32)
        xy = np.asarray(features.xy[rows])
        # sufficient statistics (count, sum g, g^T x, g^T x^2) per cell; they add up, so the whole image's (level 0)
        # are the sum over level 1's cells rather than a second pass over every descriptor
        stats: list[list[tuple]] = []
        for level, n_cells in enumerate(cells_per_level):
            if level == 0 and cfg.levels >= 1:
                stats.append([])
                continue
            cell = cell_of(xy, level, cfg.layout)
            level_stats = []
            for c in range(n_cells):
                m = cell == c if n_cells > 1 else slice(None)
                gm, xm = g[m], x[m]
                level_stats.append((len(gm), gm.sum(axis=0), gm.T @ xm, gm.T @ (xm * xm)))
            stats.append(level_stats)
        if cfg.levels >= 1:
            stats[0] = [tuple(sum(parts) for parts in zip(*stats[1]))]
        col = 0
        for level, level_stats in enumerate(stats):
            for t, s0, s1, s2 in level_stats:
                if t:
                    out[i, col : col + per_cell] = vector(t, s0, s1, s2) * lw[level]
                col += per_cell
    return out


# --- kernels ---


def _rowwise(fn, x: np.ndarray, y: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Kernel rows in threads (numpy's ufuncs release the GIL)."""
    out = np.empty((len(x), len(y)), np.float32)
    step = max(1, len(x) // (8 * (threads or os.cpu_count() or 1)))

    def work(start):
        tmp = np.empty_like(y)
        for i in range(start, min(start + step, len(x))):
            out[i] = fn(x[i], y, tmp)

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        list(pool.map(work, range(0, len(x), step)))
    return out


def intersection_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Histogram intersection K[i, j] = sum_d min(x[i, d], y[j, d])."""
    x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)
    return _rowwise(lambda row, ys, tmp: np.minimum(row, ys, out=tmp).sum(axis=1), x, y)


def chi2_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """D[i, j] = sum_d (x - y)^2 / (x + y), terms with x + y = 0 left out."""
    x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)

    def row(r, ys, tmp):
        num = (ys - r) ** 2
        den = ys + r
        np.divide(num, den, out=tmp, where=den > 0)
        tmp[den <= 0] = 0
        return tmp.sum(axis=1)

    return _rowwise(row, x, y)


def sq_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * (x @ y.T)
    return np.maximum(d, 0)


# --- the pipeline ---


class FeatureClassifier:
    """Normalise -> reduce -> classify fixed-length vectors, everything fitted on the training rows only.

    The tail of every BoVW pipeline, and usable alone on any per-image features (a network's hidden layer, say).
    """

    def __init__(self, cfg: PipelineConfig, n_classes: int | None = None):
        self.cfg = cfg
        self.n_classes = n_classes

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        kind = self.cfg.normalize
        if kind == "l1":
            return x / np.maximum(np.abs(x).sum(axis=1, keepdims=True), 1e-12)
        if kind == "l2":
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if kind == "power":
            return _power_l2(x)
        if kind == "standard":
            return self.scaler.transform(x).astype(np.float32)
        return x

    def transform_vectors(self, x: np.ndarray) -> np.ndarray:
        x = self._normalize(x)
        if self.reducer is not None:
            x = self.reducer.transform(x).astype(np.float32)
        return np.ascontiguousarray(x, np.float32)

    # kernels
    def _kernel(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        kind = self.cfg.svm_kernel
        if kind == "linear":
            return x @ y.T
        if kind == "rbf":
            return np.exp(-self.gamma_ * sq_distance(x, y))
        if kind == "intersection":
            return intersection_kernel(x, y)
        return np.exp(-self.gamma_ * chi2_distance(x, y))

    def fit_vectors(self, x: np.ndarray, y: np.ndarray) -> "FeatureClassifier":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        cfg = self.cfg
        y = np.asarray(y)
        self.n_classes = self.n_classes or int(y.max()) + 1
        self.encoded_dim = x.shape[1]
        self.scaler = StandardScaler().fit(x) if cfg.normalize == "standard" else None
        x = self._normalize(x)
        self.reducer = None
        if cfg.reduce == "pca":
            n = cfg.pca_components
            n = min(int(n), *x.shape) if n >= 1 else float(n)
            self.reducer = PCA(n_components=n, svd_solver="full" if n < 1 else "auto", random_state=cfg.seed).fit(x)
        elif cfg.reduce == "lda":
            n = min(self.n_classes - 1, len(np.unique(y)) - 1, x.shape[1])
            self.reducer = LinearDiscriminantAnalysis(n_components=n).fit(x, y)
        if self.reducer is not None:
            x = self.reducer.transform(x).astype(np.float32)
        x = np.ascontiguousarray(x, np.float32)
        self.feature_dim = x.shape[1]
        if cfg.classifier == "svm" and cfg.svm_kernel in ("intersection", "chi2") and (x < 0).any():
            raise BoVWError(f"the {cfg.svm_kernel} kernel needs non-negative features: use the histogram encoding "
                            f"without standard scaling, PCA or LDA (got normalize={cfg.normalize}, reduce={cfg.reduce}, "
                            f"encoding={cfg.encoding})")
        self._fit_classifier(x, y)
        return self

    def _fit_classifier(self, x: np.ndarray, y: np.ndarray) -> None:
        cfg = self.cfg
        self.x_train = self.gamma_ = None
        if cfg.classifier == "svm":
            from sklearn.svm import SVC

            if cfg.svm_kernel == "rbf":
                mean_sq = 2 * max(float((x**2).sum(1).mean() - (x.mean(0) ** 2).sum()), 1e-12)
                self.gamma_ = cfg.gamma / mean_sq
            elif cfg.svm_kernel == "chi2":
                d = chi2_distance(x, x)
                self.gamma_ = cfg.gamma / max(float(d.mean()), 1e-12)
            gram = np.exp(-self.gamma_ * d) if cfg.svm_kernel == "chi2" else self._kernel(x, x)
            with warnings.catch_warnings():  # sklearn 1.9 deprecates probability=True (removal planned for 1.11)
                warnings.simplefilter("ignore", FutureWarning)
                self.clf = SVC(kernel="precomputed", C=cfg.C, probability=True, random_state=cfg.classifier_seed,
                               cache_size=500).fit(gram.astype(np.float64), y)
            self.x_train_len = len(x)
            self.support_x = x[self.clf.support_]
        elif cfg.classifier == "knn":
            from sklearn.neighbors import KNeighborsClassifier

            self.clf = KNeighborsClassifier(n_neighbors=min(cfg.knn_k, len(x)), metric=cfg.knn_metric,
                                            algorithm="brute").fit(x, y)
            self.x_train = x
        else:
            from sklearn.linear_model import LogisticRegression

            self.clf = LogisticRegression(C=cfg.C, max_iter=2000).fit(x, y)

    def predict_vectors(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of raw (un-normalised) feature rows."""
        x = self.transform_vectors(x)
        if self.cfg.classifier == "svm":
            gram = np.zeros((len(x), self.x_train_len), np.float64)
            gram[:, self.clf.support_] = self._kernel(x, self.support_x)  # only support vectors count
            p = self.clf.predict_proba(gram)
        else:
            p = self.clf.predict_proba(x)
        out = np.zeros((len(x), self.n_classes), np.float64)
        out[:, self.clf.classes_] = p
        return out

    # learned numbers
    def param_breakdown(self) -> dict[str, int]:
        cfg = self.cfg
        parts = {}
        if self.scaler is not None:
            parts["scaler"] = 2 * self.encoded_dim
        if cfg.reduce == "pca":
            parts["projection"] = int(self.reducer.components_.size + self.reducer.mean_.size)
        elif cfg.reduce == "lda":
            parts["projection"] = int(self.reducer.scalings_[:, : self.feature_dim].size + self.reducer.xbar_.size)
        clf = self.clf
        if cfg.classifier == "svm":
            n_pairs = len(clf.intercept_)
            sv = len(clf.support_) * self.feature_dim + clf.dual_coef_.size + n_pairs + 2 * n_pairs  # + Platt A, B
            primal = n_pairs * self.feature_dim + n_pairs + 2 * n_pairs
            parts["classifier"] = int(min(sv, primal) if cfg.svm_kernel == "linear" else sv)
        elif cfg.classifier == "knn":
            parts["classifier"] = int(self.x_train.size)
        else:
            parts["classifier"] = int(clf.coef_.size + clf.intercept_.size)
        return parts

    def n_params(self) -> int:
        return int(sum(self.param_breakdown().values()))


class BoVWPipeline(FeatureClassifier):
    """Encode (codebook or GMM fitted on the training images only) -> normalise -> reduce -> classify."""

    def __init__(self, cfg: PipelineConfig, cache_dir: Path | None, n_classes: int | None = None):
        """cache_dir None: cache nothing (descriptors that no later fit will see again, such as a trained network's)."""
        super().__init__(cfg, n_classes)
        self.cache_dir = cache_dir

    # encoding
    def encode(self, features: LocalFeatures, idx: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if cfg.encoding == "fisher":
            return fisher_vectors(features, idx, self.fisher, cfg)
        words = visual_words(features, idx, self.codebook_key, self.centers, cfg, self.cache_dir)
        xy = np.asarray(features.xy[features.rows(idx)])
        return histograms(words, xy, features.counts(idx), cfg.k, cfg.levels, cfg.layout, cfg.level_weights)

    def transform(self, features: LocalFeatures, idx: np.ndarray) -> np.ndarray:
        return self.transform_vectors(self.encode(features, idx))

    def fit(self, features: LocalFeatures, idx: np.ndarray, y: np.ndarray) -> "BoVWPipeline":
        cfg = self.cfg
        idx = np.asarray(idx, np.int64)
        self.n_classes = self.n_classes or int(np.asarray(y).max()) + 1
        self.fisher = self.centers = self.codebook_key = None
        if cfg.encoding == "fisher":
            self.fisher = fit_fisher(features, idx, cfg, self.cache_dir)
        else:
            self.codebook_key, self.centers = fit_codebook(features, idx, cfg, self.cache_dir)
        self.descriptor_dim = features.dim
        if cfg.encoding == "fisher":
            dim = sum(pyramid_cells(cfg.levels, cfg.layout)) * fisher_dim(*self.fisher.means.shape, cfg.fisher_weights)
            if dim * len(idx) * 4 > 4e9:
                raise BoVWError(f"Fisher vectors of {dim:,} dims for {len(idx)} images would need "
                                f"{dim * len(idx) * 4 / 1e9:.1f} GB: use fewer components, PCA dims or pyramid levels")
        return self.fit_vectors(self.encode(features, idx), y)

    def predict_proba(self, features: LocalFeatures, idx: np.ndarray) -> np.ndarray:
        return self.predict_vectors(self.encode(features, idx))

    def param_breakdown(self) -> dict[str, int]:
        codebook = self.fisher.n_params() if self.fisher is not None else int(self.centers.size)
        return {"codebook": codebook, **super().param_breakdown()}


def config_dict(cfg: PipelineConfig) -> dict:
    return asdict(cfg)
