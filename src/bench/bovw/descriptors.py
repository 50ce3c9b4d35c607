"""Local descriptors with OpenCV, extracted once per (data, descriptor settings) and cached on disk.

A `LocalFeatures` store holds every image's descriptors back to back (train images first, then test), with each
descriptor's position in the image (x, y in [0, 1)) for spatial pyramids, and per-image offsets. Any other source of
local descriptors (e.g. patch features of a network used as dense descriptors) can fill the same store and reuse the
codebook / encoding / classifier parts of `bench.bovw.pipeline`.

Storage: SIFT values are integers 0..255 in OpenCV, kept as uint8 (lossless); binary descriptors (ORB, AKAZE,
BRISK) as their packed uint8 bytes (unpacked to 0/1 bits for k-means); float descriptors (DAISY, KAZE) as float16.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data import write_atomically
from bench.objective import TrialFailed

CACHE_VERSION = 1
DESCRIPTORS = ("sift", "daisy", "orb", "kaze", "akaze", "brisk", "surf")
BINARY = {"orb", "akaze", "brisk"}
KEYPOINTS = ("dense", "detector")
COLORS = ("gray", "rgb", "opponent")
SURF_HELP = (
    "SURF is patented and is not built into the opencv-contrib wheels (it needs OpenCV compiled with "
    "OPENCV_ENABLE_NONFREE). Use descriptor=sift instead: SIFT's patent expired in 2020 and it is in every build."
)


class DescriptorError(TrialFailed, ValueError):
    """A descriptor setting that cannot work (SURF, dense KAZE, ...); the message says what to use instead."""


def parse_sizes(value) -> tuple[int, ...]:
    """Patch sizes from 16, "8,16", "8-16-24" or [8, 16]."""
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    if isinstance(value, str):
        parts = [p for p in value.replace("-", ",").replace(" ", ",").split(",") if p]
        return tuple(int(p) for p in parts)
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class DescriptorSpec:
    """Every setting that changes the descriptors, so every one is part of the cache key."""

    descriptor: str = "sift"
    keypoints: str = "dense"  # dense grid, or the descriptor's own detector
    step: int = 8  # dense grid step in pixels
    patch_sizes: tuple[int, ...] = (16,)  # dense keypoint sizes (scales); several give a multi-scale grid
    max_features: int = 500  # detector: keep the strongest this many
    image_size: int = 256
    color: str = "gray"  # gray, rgb (per channel, concatenated) or opponent colour space (per channel)

    def __post_init__(self):
        object.__setattr__(self, "patch_sizes", parse_sizes(self.patch_sizes))
        self.validate()

    def validate(self) -> None:
        if self.descriptor == "surf":
            raise DescriptorError(SURF_HELP)
        if self.descriptor not in DESCRIPTORS:
            raise DescriptorError(f"unknown descriptor '{self.descriptor}'; one of {', '.join(d for d in DESCRIPTORS if d != 'surf')}")
        if self.keypoints not in KEYPOINTS:
            raise DescriptorError(f"keypoints must be one of {KEYPOINTS}, got '{self.keypoints}'")
        if self.color not in COLORS:
            raise DescriptorError(f"color must be one of {COLORS}, got '{self.color}'")
        if self.keypoints == "dense" and self.descriptor in ("kaze", "akaze"):
            raise DescriptorError(
                f"{self.descriptor} computes descriptors only at keypoints of its own detector (OpenCV needs their "
                "scale-space level): use keypoints=detector, or a dense descriptor (sift, daisy, orb, brisk)"
            )
        if self.step < 1 or not self.patch_sizes or min(self.patch_sizes) < 1 or self.image_size < 16:
            raise DescriptorError(f"bad grid: step {self.step}, patch sizes {self.patch_sizes}, image size {self.image_size}")

    def key(self, data_id: str) -> str:
        text = json.dumps({**asdict(self), "data": data_id, "v": CACHE_VERSION}, sort_keys=True)
        return f"{self.descriptor}-{self.keypoints}-{self.image_size}-{self.color}-" + hashlib.sha256(text.encode()).hexdigest()[:12]


# --- one image ---


def _create(name: str, max_features: int):
    import cv2

    if name == "surf":
        raise DescriptorError(SURF_HELP)

    def find(attr):
        fn = getattr(cv2, attr, None) or getattr(getattr(cv2, "xfeatures2d", None), attr, None)
        if fn is None:
            raise DescriptorError(f"this OpenCV build ({cv2.__version__}) has no {attr}; use descriptor=sift")
        return fn

    if name == "sift":
        return find("SIFT_create")()
    if name == "daisy":
        return find("DAISY_create")()
    if name == "orb":
        return find("ORB_create")(nfeatures=max_features)
    if name == "kaze":
        return find("KAZE_create")()
    if name == "akaze":
        return find("AKAZE_create")()
    if name == "brisk":
        return find("BRISK_create")()
    raise DescriptorError(f"unknown descriptor '{name}'")


def channels(rgb: np.ndarray, color: str) -> list[np.ndarray]:
    """The uint8 planes a descriptor runs on: gray, R/G/B, or opponent O1/O2/O3 (van de Sande et al.), each 0..255."""
    import cv2

    if color == "gray":
        return [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)]
    if color == "rgb":
        return [np.ascontiguousarray(rgb[..., c]) for c in range(3)]
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    o1 = (r - g) / np.sqrt(2) / (255 * np.sqrt(2)) * 255 + 127.5  # (R-G)/sqrt2 in [-180, 180] -> 0..255
    o2 = (r + g - 2 * b) / np.sqrt(6) / (2 * 255 / np.sqrt(6)) * 127.5 + 127.5
    o3 = (r + g + b) / np.sqrt(3) / (3 * 255 / np.sqrt(3)) * 255
    return [np.clip(o, 0, 255).astype(np.uint8) for o in (o1, o2, o3)]


def dense_grid(size: int, step: int, patch_sizes: Sequence[int]):
    """Keypoints on a regular grid, one set per patch size, each patch inside the image."""
    import cv2

    kps = []
    for s in patch_sizes:
        half = s / 2
        coords = np.arange(half, size - half + 1e-6, step)
        if len(coords) == 0:
            coords = np.array([size / 2])
        kps += [cv2.KeyPoint(float(x), float(y), float(s)) for y in coords for x in coords]
    return kps


def extract_image(rgb: np.ndarray, spec: DescriptorSpec, extractor=None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors in storage dtype, positions n x 2 as float16 in [0, 1)) of one RGB uint8 image."""
    import cv2

    ext = extractor or _create(spec.descriptor, spec.max_features)
    planes = channels(rgb, spec.color)
    size = rgb.shape[0]
    if spec.keypoints == "dense":
        kps = dense_grid(size, spec.step, spec.patch_sizes)
    else:
        gray = planes[0] if spec.color == "gray" else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        detector = _create("sift", spec.max_features) if spec.descriptor == "daisy" else ext  # DAISY has no detector
        kps = detector.detect(gray, None)
        kps = sorted(kps, key=lambda k: -k.response)[: spec.max_features]
    kps, first = ext.compute(planes[0], kps)
    parts = [first]
    for plane in planes[1:]:
        kps2, d = ext.compute(plane, kps)
        if d is None or len(kps2) != len(kps):
            raise DescriptorError(f"{spec.descriptor}: channels kept different keypoints; use color=gray")
        parts.append(d)
    if first is None or len(kps) == 0:
        dim = {"sift": 128, "daisy": 200, "orb": 32, "kaze": 64, "akaze": 61, "brisk": 64}[spec.descriptor] * len(planes)
        dtype = np.uint8 if spec.descriptor in BINARY or spec.descriptor == "sift" else np.float16
        return np.zeros((0, dim), dtype), np.zeros((0, 2), np.float16)
    desc = np.concatenate(parts, axis=1)
    if spec.descriptor == "sift":
        desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
    elif spec.descriptor not in BINARY:
        desc = desc.astype(np.float16)
    xy = np.array([k.pt for k in kps], np.float32) / size
    return desc, np.clip(xy, 0, 0.9999).astype(np.float16)


def _extract_paths(paths: Sequence[str], spec: DescriptorSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Worker: decode and describe a chunk of images (one OpenCV thread per worker process)."""
    import cv2

    from bench.data import decode

    cv2.setNumThreads(1)
    ext = _create(spec.descriptor, spec.max_features)
    return [extract_image(decode(Path(p), spec.image_size, True), spec, ext) for p in paths]


# --- the store ---


@dataclass
class LocalFeatures:
    """Descriptors of N images back to back: rows offsets[i]:offsets[i+1] belong to image i."""

    desc: np.ndarray  # M x D, storage dtype
    xy: np.ndarray  # M x 2, float16 in [0, 1)
    offsets: np.ndarray  # N + 1, int64
    key: str  # identity of the descriptors (data + settings): part of every codebook cache key
    binary: bool = False
    from_cache: bool = False
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.desc.shape[1] * (8 if self.binary else 1)

    def counts(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        return self.offsets[idx + 1] - self.offsets[idx]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Row numbers of every descriptor of images idx, image by image."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.counts(idx)
        starts = np.repeat(self.offsets[idx] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return starts + np.arange(counts.sum())

    def as_float(self, rows: np.ndarray) -> np.ndarray:
        """float32 descriptors of these rows (binary ones unpacked to 0/1 bits)."""
        d = np.asarray(self.desc[rows])
        if self.binary:
            return np.unpackbits(d, axis=1).astype(np.float32)
        return d.astype(np.float32)


_MEMO: dict[str, LocalFeatures] = {}


def clear_memo() -> None:
    """Forget in-process stores (the disk cache stays); tests use it to see the disk cache at work."""
    _MEMO.clear()


def extract_paths(paths: Sequence[Path], spec: DescriptorSpec, n_jobs: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    n_jobs = max(1, n_jobs or os.cpu_count() or 1)
    paths = [str(p) for p in paths]
    if n_jobs == 1 or len(paths) < 16:
        return _extract_paths(paths, spec)
    from joblib import Parallel, delayed

    chunk = max(8, min(64, len(paths) // (n_jobs * 4) or 1))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    out = Parallel(n_jobs=n_jobs, backend="loky")(delayed(_extract_paths)(c, spec) for c in chunks)
    return [item for part in out for item in part]


def cached_store(cache_dir: Path, key: str, binary: bool) -> LocalFeatures | None:
    """The store cached under key (LocalFeatures.key), memory-mapped; None when the cache does not hold it."""
    folder = Path(cache_dir) / "bovw" / "descriptors" / key
    names = ("desc", "xy", "offsets")
    if not (all((folder / f"{n}.npy").exists() for n in names) and (folder / "meta.json").exists()):
        return None
    desc, xy, offsets = (np.load(folder / f"{n}.npy", mmap_mode="r") for n in names)
    meta = json.loads((folder / "meta.json").read_text())
    return LocalFeatures(desc, xy, np.asarray(offsets), key, binary, True, 0.0, meta)


def load_features(paths: Sequence[Path], spec: DescriptorSpec, data_id: str, cache_dir: Path,
                  n_jobs: int | None = None) -> LocalFeatures:
    """The store for these images: from memory, else from the disk cache, else extracted (in n_jobs processes) and cached.

    `data_id` names the data (Catalog.fingerprint() of the data set); it and every spec field key the cache.
    """
    key = spec.key(data_id)
    if key in _MEMO:
        return _MEMO[key]
    folder = Path(cache_dir) / "bovw" / "descriptors" / key
    names = ("desc", "xy", "offsets")
    feats = cached_store(cache_dir, key, spec.descriptor in BINARY)
    if feats is None:
        start = time.perf_counter()
        parts = extract_paths(paths, spec, n_jobs)
        counts = np.array([len(d) for d, _ in parts], np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        desc = np.concatenate([d for d, _ in parts])
        xy = np.concatenate([p for _, p in parts])
        del parts
        seconds = time.perf_counter() - start
        meta = {"spec": asdict(spec), "data": data_id, "n_images": len(counts), "n_descriptors": int(offsets[-1]),
                "dim": int(desc.shape[1]), "dtype": str(desc.dtype), "seconds": seconds}
        for n, arr in zip(names, (desc, xy, offsets)):
            write_atomically(folder / f"{n}.npy", lambda tmp: np.save(tmp, arr))
        (folder / "meta.json").write_text(json.dumps(meta))
        feats = LocalFeatures(desc, xy, offsets, key, spec.descriptor in BINARY, False, seconds, meta)
    if len(feats.offsets) - 1 != len(paths):
        raise DescriptorError(f"{folder}: cache holds {len(feats.offsets) - 1} images, expected {len(paths)}; delete it")
    _MEMO.clear()  # hold one store at a time: they are large
    _MEMO[key] = feats
    return feats
