"""ImageFolder datasets: find the data, list it, decode once into an on-disk array cache, split it.

Layouts accepted:
  ROOT/train/<class>/*  and  ROOT/test/<class>/*      (the MIT 8-scene layout)
  ROOT/<class>/*  plus a test fraction                (one folder, split here, stratified and seeded)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# No image over this many pixels is decoded (about 10000 x 10000): a larger one is skipped as a possible decompression
# bomb, before its pixels are read. PIL's own limit (Image.MAX_IMAGE_PIXELS) is a warning up to twice its value.
MAX_PIXELS = 100_000_000
DECODER = "2"  # in the decoded-image cache's folder name: bump it when decode() changes what it returns
DATA_ENV = "BENCH_DATA"
DEFAULT_ROOTS = (Path("data/mit8"), Path("../shared/data/mit8"))
MISSING_DATA_HELP = (
    "No image data found. Looked at --data, ${env} and {defaults}.\n"
    "Point bench at a folder laid out as ROOT/train/<class>/*.jpg and ROOT/test/<class>/*.jpg "
    "(or one ROOT/<class>/*.jpg folder, split here by --test-fraction), e.g. `bench search tinynet --data /path/to/mit8` "
    "or `export BENCH_DATA=/path/to/mit8`.\n"
    "The MIT 8-scene images (Oliva & Torralba, 2001; 'MIT_split', 1881 train / 807 test) are the reference data set."
)


class DataError(ValueError):
    """Bad or missing data; the message names the file or folder."""


def resolve_root(flag: str | os.PathLike | None = None) -> Path:
    """The data root: --data, then $BENCH_DATA, then ./data/mit8, then ../shared/data/mit8."""
    if flag:
        root = Path(flag)
        if not root.is_dir():
            raise DataError(f"--data {root}: no such folder")
        return root.resolve()
    if os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV])
        if not root.is_dir():
            raise DataError(f"{DATA_ENV}={root}: no such folder")
        return root.resolve()
    for root in DEFAULT_ROOTS:
        if root.is_dir():
            return root.resolve()
    raise DataError(MISSING_DATA_HELP.format(env=DATA_ENV, defaults=", ".join(map(str, DEFAULT_ROOTS))))


@dataclass(frozen=True)
class FileList:
    """Image paths and integer labels of one split; labels index `classes`."""

    paths: tuple[Path, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class Catalog:
    """What is on disk: class names (sorted, so their order is deterministic) and the train/test file lists."""

    root: Path
    classes: tuple[str, ...]
    train: FileList
    test: FileList
    skipped: tuple[tuple[Path, str], ...] = ()  # (file, why) of images left out because they cannot be decoded

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        """Identity of the data, which keys every cache: each file's relative path, label and bytes, so a copy of the
        same images (new mtimes) hits the caches, and an edited image misses them. The bytes are read once per copy:
        the result is kept under cache_dir/fingerprints/, keyed by the files' paths, sizes and mtimes."""
        files = [(p, int(y)) for split in (self.train, self.test) for p, y in zip(split.paths, split.labels)]
        memo = (cache_dir or default_cache_dir()) / "fingerprints" / _listing_key(p for p, _ in files)
        if memo.exists():
            return memo.read_text().strip()
        content = hashlib.sha256()
        for p, y in files:
            data = p.read_bytes()
            content.update(os.fsencode(p.relative_to(self.root)) + f"|{y}|{len(data)}\n".encode())
            content.update(data)
        found = content.hexdigest()[:16]
        write_atomically(memo, lambda tmp: tmp.write_text(found))
        return found


def _listing_key(paths) -> str:
    """Paths (as bytes: a name need not be UTF-8), sizes and mtimes: what changes when a file is copied or edited."""
    listing = hashlib.sha256()
    for p in paths:
        st = p.stat()
        listing.update(os.fsencode(p.absolute()) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return listing.hexdigest()[:24]


def display_name(name: str) -> str:
    """A file or folder name as text: bytes that are not UTF-8 shown as \\xNN, so labels, JSON and databases take it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")  # hidden files, and macOS' AppleDouble `._photo.jpg` beside each photo in a zip


def _class_files(folder: Path, bad: dict[Path, str]) -> dict[str, list[Path]]:
    """Class name -> its image files, less the unusable ones (in bad)."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and _visible(d))
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/*.jpg)")
    out = {}
    for d in classes:
        files = sorted(f for f in d.iterdir() if f.is_file() and _visible(f) and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{d}: empty class folder (no images with suffix {sorted(IMAGE_SUFFIXES)})")
        usable = [f for f in files if f not in bad]
        if not usable:
            raise DataError(f"{d}: none of its {len(files)} images can be decoded (the first: {files[0].name}: {bad[files[0]]})")
        out[display_name(d.name)] = usable
    return out


def _unusable(folders: list[Path]) -> dict[Path, str]:
    """Every image under the class folders of `folders` that cannot be decoded, with why. Each is decoded once per copy
    of the data; the answer is kept under the cache, keyed by the files' paths, sizes and mtimes."""
    files = sorted(f for top in folders for d in top.iterdir() if d.is_dir() and _visible(d)
                   for f in d.iterdir() if f.is_file() and _visible(f) and f.suffix.lower() in IMAGE_SUFFIXES)
    memo = default_cache_dir() / "checked" / f"{_listing_key(files)}-{DECODER}.json"
    if memo.exists():
        return {Path(p): why for p, why in json.loads(memo.read_text())}
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(_why_unusable, files))
    bad = {f: why for f, why in zip(files, reasons) if why}
    write_atomically(memo, lambda tmp: tmp.write_text(json.dumps([[str(p), why] for p, why in bad.items()])))
    return bad


def _why_unusable(path: Path) -> str | None:
    try:
        decode(path, 8)
    except DataError as e:
        return str(e).removeprefix(f"{display_name(str(path))}: ")
    return None


def _file_list(per_class: dict[str, list[Path]], classes: tuple[str, ...]) -> FileList:
    paths, labels = [], []
    for i, c in enumerate(classes):
        paths += per_class[c]
        labels += [i] * len(per_class[c])
    return FileList(tuple(paths), np.asarray(labels, dtype=np.int64))


def scan(root: str | os.PathLike, test_fraction: float = 0.3, seed: int = 0) -> Catalog:
    """List the images under root, with either layout, and check them against each other."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise DataError(f"{root}: has train/ but no test/ folder")
        bad = _unusable([root / "train", root / "test"])
        skipped = tuple(sorted(bad.items()))
        train = _class_files(root / "train", bad)
        test = _class_files(root / "test", bad)
        if set(train) != set(test):
            raise DataError(
                f"{root}: test classes differ from train classes: "
                f"only in train {sorted(set(train) - set(test))}, only in test {sorted(set(test) - set(train))}"
            )
        classes = tuple(sorted(train))
        return Catalog(root, classes, _file_list(train, classes), _file_list(test, classes), skipped)
    if not 0 < test_fraction < 1:
        raise DataError(f"{root}: single-folder layout needs 0 < test fraction < 1, got {test_fraction}")
    bad = _unusable([root])
    skipped = tuple(sorted(bad.items()))
    per_class = _class_files(root, bad)
    classes = tuple(sorted(per_class))
    every = _file_list(per_class, classes)
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(
        np.arange(len(every.paths)), test_size=test_fraction, stratify=every.labels, random_state=seed
    )
    pick = lambda idx: FileList(tuple(every.paths[i] for i in sorted(idx)), every.labels[np.sort(idx)])  # noqa: E731
    return Catalog(root, classes, pick(idx_train), pick(idx_test), skipped)


def decode(path: Path, size: int, color: bool = True) -> np.ndarray:
    """One image as uint8 HxWxC, as it is meant to be seen: turned by its EXIF orientation (phone photos), 16-bit
    scaled to 8-bit, transparency laid on white, any mode (CMYK, palette, grayscale) converted to RGB (or L), resized
    to size x size. Raises DataError naming the file for one that cannot be decoded or is over MAX_PIXELS."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS below is bench's own limit
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{display_name(str(path))}: {im.width} x {im.height} pixels, over bench's limit of {MAX_PIXELS:,} "
                                "(a decompression bomb, or a photo to shrink first)")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit gray: PIL's convert would clip it to white
                gray = np.asarray(im, dtype=np.float64)
                gray = gray / 257 if gray.max() > 255 else gray  # 65535 -> 255; an "I" image of 8-bit values stays
                im = Image.fromarray(gray.clip(0, 255).round().astype(np.uint8), "L")
            if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "RGBa", "La"):
                im = im.convert("RGBA")
            if im.mode == "RGBA":
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
            im = im.convert("RGB" if color else "L").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, DataError):
            raise
        if isinstance(e, Image.DecompressionBombError):  # PIL refuses past twice its own limit before we can look
            raise DataError(f"{display_name(str(path))}: over bench's limit of {MAX_PIXELS:,} pixels ({e})") from e
        raise DataError(f"{display_name(str(path))}: cannot decode image ({type(e).__name__}: {e})") from e
    return arr if color else arr[..., None]


@dataclass
class Arrays:
    """Decoded images of a catalog at one (size, colour): uint8 N x H x W x C, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    paths_train: tuple[Path, ...] = field(default=(), repr=False)
    paths_test: tuple[Path, ...] = field(default=(), repr=False)


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) to a temporary file beside path, then rename it into place: a killed run never leaves half a file,
    and workers writing the same file at once never mix. The temporary name holds the process id and keeps path's
    suffixes, which np.save and Keras' save_weights look at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:  # a failed or interrupted write: the old file stays, and no temporary one is left beside it
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def _decode_all(paths: tuple[Path, ...], size: int, color: bool) -> np.ndarray:
    channels = 3 if color else 1
    if not paths:
        return np.zeros((0, size, size, channels), np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:  # PIL releases the GIL while decoding
        return np.stack(list(pool.map(lambda p: decode(p, size, color), paths)))


_MEMO: dict[tuple, Arrays] = {}


def load_arrays(catalog: Catalog, size: int, color: bool = True, cache_dir: Path | None = None) -> Arrays:
    """Decode each image once per (data, size, colour) into .npy files; later calls load those (memoised in-process)."""
    key = (catalog.fingerprint(cache_dir), int(size), bool(color))
    if key in _MEMO:
        return _MEMO[key]
    folder = (cache_dir or default_cache_dir()) / "images" / f"{key[0]}-{size}-{'rgb' if color else 'gray'}-d{DECODER}"
    names = ("x_train", "x_test")
    if all((folder / f"{n}.npy").exists() for n in names):
        x_train, x_test = (np.load(folder / f"{n}.npy") for n in names)
    else:
        x_train = _decode_all(catalog.train.paths, size, color)
        x_test = _decode_all(catalog.test.paths, size, color)
        for n, x in zip(names, (x_train, x_test)):
            write_atomically(folder / f"{n}.npy", lambda tmp: np.save(tmp, x))
        (folder / "meta.json").write_text(json.dumps({"root": display_name(str(catalog.root)), "classes": catalog.classes}))
    arrays = Arrays(
        x_train, catalog.train.labels, x_test, catalog.test.labels, catalog.classes, catalog.train.paths, catalog.test.paths
    )
    _MEMO[key] = arrays
    return arrays


# --- splits: stratified and seeded, all by index so arrays are never copied more than once ---


def holdout_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices: a stratified, seeded hold-out of `fraction` of the labels."""
    from sklearn.model_selection import train_test_split

    check_holdout(labels, fraction)
    idx = np.arange(len(labels))
    fit, val = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    if len(fit) == 0 or len(val) == 0:
        raise DataError(f"validation split of {len(labels)} images at fraction {fraction} leaves an empty split")
    return np.sort(fit), np.sort(val)


def check_holdout(labels: np.ndarray, fraction: float, classes: tuple[str, ...] = ()) -> None:
    """Refuse, in words a user can act on, a hold-out that a stratified split cannot make: it must hold one image of
    each class, and so must what is left to train on (scikit-learn's own message names neither the flag nor the fix)."""
    if not 0 < fraction < 1:
        raise DataError(f"--val-fraction must be in (0, 1), got {fraction}")
    n, counts = len(labels), np.bincount(labels) if len(labels) else np.zeros(0, int)
    k = int((counts > 0).sum())
    n_val = math.ceil(fraction * n)  # as train_test_split counts a fractional test_size
    if n_val < k:
        need = math.ceil(k / n * 20 - 1e-9) / 20  # the next 0.05 step that holds k images
        fix = f"use --val-fraction {need:.2f} or more, or more images" if need < 1 else "add more images"
        raise DataError(f"the {fraction * 100:g} % validation hold-out ({n_val} images) cannot hold one image of each of "
                        f"{k} classes: {fix}")
    if n - n_val < k:
        raise DataError(f"the {fraction * 100:g} % validation hold-out leaves {n - n_val} images to train on, fewer than the {k} "
                        "classes: use a smaller --val-fraction, or more images")
    if k and counts[counts > 0].min() < 2:
        lone = int(np.flatnonzero(counts == 1)[0])
        raise DataError(f"class {classes[lone] if classes else lone} has 1 training image: a stratified hold-out needs at least 2 of each class")


def tiny_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A seeded subset of `per_class` images of each class (the paper's 400-image set is 50 per class)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} images, fewer than the {per_class} per class asked for")
        out.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(out))


def kfold_indices(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, seeded k-fold: a list of (fit, validation) index pairs."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(fit, val) for fit, val in folds.split(np.zeros(len(labels)), labels)]


@dataclass
class Split:
    """What an objective trains and is judged on. Test is measured and stored, never used to select."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def make_split(arrays: Arrays, val_fraction: float, seed: int, tiny_per_class: int | None = None) -> Split:
    """Hold out a validation part of train; optionally train on a tiny per-class subset of the rest."""
    fit, val = holdout_indices(arrays.y_train, val_fraction, seed)
    if tiny_per_class:
        fit = fit[tiny_indices(arrays.y_train[fit], tiny_per_class, seed)]
    if len(arrays.y_test) == 0:
        raise DataError("the test split is empty")
    return Split(
        arrays.x_train[fit], arrays.y_train[fit], arrays.x_train[val], arrays.y_train[val],
        arrays.x_test, arrays.y_test, arrays.classes,
    )
