import os
from collections import Counter

import numpy as np
import pytest

from bench import data as bdata
from bench.data import DataError
from conftest import make_folder, make_image


def test_real_mit8_catalog(mit8):
    cat = bdata.scan(mit8)
    assert cat.classes == ("Opencountry", "coast", "forest", "highway", "inside_city", "mountain", "street", "tallbuilding")
    assert len(cat.train.paths) == 1881 and len(cat.test.paths) == 807
    assert Counter(cat.train.labels.tolist())[cat.classes.index("highway")] == 184
    assert all(p.parent.name == cat.classes[y] for p, y in zip(cat.test.paths, cat.test.labels))


def test_root_resolution_order(tmp_path, monkeypatch):
    flag, env, local = (make_folder(tmp_path / n) for n in ("flag", "env", "local"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    local.rename(tmp_path / "data" / "mit8")
    monkeypatch.setenv("BENCH_DATA", str(env))
    assert bdata.resolve_root(flag) == flag.resolve()
    assert bdata.resolve_root(None) == env.resolve()
    monkeypatch.delenv("BENCH_DATA")
    assert bdata.resolve_root(None) == (tmp_path / "data" / "mit8").resolve()


def test_missing_data_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(DataError) as e:
        bdata.resolve_root(None)
    assert "MIT 8-scene" in str(e.value) and "ROOT/train/<class>" in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        bdata.resolve_root(tmp_path / "nowhere")


def test_decode_cache_is_written_once_and_then_read(tiny_mit8, tmp_path, monkeypatch):
    cat = bdata.scan(tiny_mit8)
    bdata._MEMO.clear()  # earlier tests of this session may have loaded the same images into memory
    first = bdata.load_arrays(cat, 32, True, tmp_path)
    assert first.x_train.shape == (64, 32, 32, 3) and first.x_train.dtype == np.uint8
    assert len(list((tmp_path / "images").iterdir())) == 1
    bdata._MEMO.clear()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(bdata, "decode", no_decoding)
    second = bdata.load_arrays(cat, 32, True, tmp_path)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    monkeypatch.undo()
    gray = bdata.load_arrays(cat, 32, False, tmp_path)  # another colour mode is another cache entry
    assert gray.x_train.shape == (64, 32, 32, 1)
    assert len(list((tmp_path / "images").iterdir())) == 2


def test_fingerprint_follows_content_not_copies(tiny_mit8, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    copy = tmp_path / "copy"
    shutil.copytree(tiny_mit8, copy, copy_function=shutil.copy)  # new mtimes, the same bytes
    assert os.stat(next(copy.rglob("*.jpg"))).st_mtime_ns != os.stat(next(tiny_mit8.rglob("*.jpg"))).st_mtime_ns
    original = bdata.scan(tiny_mit8).fingerprint(cache)
    assert bdata.scan(copy).fingerprint(cache) == original
    assert len(list((cache / "fingerprints").iterdir())) == 2  # the bytes were read once per copy

    bdata._MEMO.clear()
    bdata.load_arrays(bdata.scan(tiny_mit8), 32, True, cache)
    bdata._MEMO.clear()
    monkeypatch.setattr(bdata, "decode", lambda *a, **k: pytest.fail("the copy decoded its images again"))
    bdata.load_arrays(bdata.scan(copy), 32, True, cache)  # the copy hits the original's decoded-image cache
    monkeypatch.undo()

    image = sorted(copy.rglob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")  # one byte differs
    assert bdata.scan(copy).fingerprint(cache) != original


def test_holdout_is_stratified_and_seeded(mit8):
    labels = bdata.scan(mit8).train.labels
    fit, val = bdata.holdout_indices(labels, 0.15, seed=3)
    again, _ = bdata.holdout_indices(labels, 0.15, seed=3)
    other, _ = bdata.holdout_indices(labels, 0.15, seed=4)
    np.testing.assert_array_equal(fit, again)
    assert not np.array_equal(fit, other)
    assert len(set(fit) & set(val)) == 0 and len(fit) + len(val) == len(labels)
    share = np.bincount(labels[val]) / np.bincount(labels)
    assert np.all(np.abs(share - 0.15) < 0.02)


def test_tiny_subset_and_kfold(mit8):
    labels = bdata.scan(mit8).train.labels
    tiny = bdata.tiny_indices(labels, 50, seed=0)
    assert len(tiny) == 400 and set(np.bincount(labels[tiny])) == {50}
    np.testing.assert_array_equal(tiny, bdata.tiny_indices(labels, 50, seed=0))
    folds = bdata.kfold_indices(labels, 8, seed=0)
    assert len(folds) == 8
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(labels)))
    for _, val in folds:
        assert np.all(np.abs(np.bincount(labels[val]) - np.bincount(labels) / 8) <= 1)


def test_single_folder_layout_is_split_stratified(tmp_path):
    root = tmp_path / "flat"
    for cls in ("x", "y"):
        for i in range(10):
            make_image(root / cls / f"{i}.png", seed=i)
    cat = bdata.scan(root, test_fraction=0.3, seed=0)
    assert cat.classes == ("x", "y")
    assert Counter(cat.test.labels.tolist()) == {0: 3, 1: 3}
    assert not set(cat.train.paths) & set(cat.test.paths)


def test_grayscale_and_odd_sized_images_are_converted(tmp_path):
    root = make_folder(tmp_path / "d", train=2, test=1)
    make_image(root / "train" / "a" / "gray.png", size=(17, 50), mode="L")
    make_image(root / "train" / "b" / "alpha.png", size=(300, 20), mode="RGBA")
    arrays = bdata.load_arrays(bdata.scan(root), 24, True, tmp_path / "cache")
    assert arrays.x_train.shape == (6, 24, 24, 3)
    names = [p.name for p in arrays.paths_train]
    assert arrays.y_train[names.index("gray.png")] == 0 and arrays.y_train[names.index("alpha.png")] == 1


def test_bad_data_names_the_culprit(tmp_path):
    root = make_folder(tmp_path / "corrupt")
    bad = root / "train" / "b" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
        bdata.decode(bad, 16)
    catalog = bdata.scan(root)  # a search leaves it out, and says so (tests/test_hostile_input.py)
    assert bad not in catalog.train.paths and "cannot decode image" in dict(catalog.skipped)[bad]

    root = make_folder(tmp_path / "empty")
    (root / "train" / "c").mkdir()
    with pytest.raises(DataError, match=f"{root / 'train' / 'c'}: empty class folder"):
        bdata.scan(root)

    root = make_folder(tmp_path / "mismatch")
    (root / "test" / "b").rename(root / "test" / "z")
    with pytest.raises(DataError, match=r"only in train \['b'\], only in test \['z'\]"):
        bdata.scan(root)

    root = make_folder(tmp_path / "notest")
    os.rename(root / "test", tmp_path / "elsewhere")
    with pytest.raises(DataError, match="no test/ folder"):
        bdata.scan(root)


def test_tiny_subset_larger_than_a_class_is_an_error():
    with pytest.raises(DataError, match="fewer than the 5 per class"):
        bdata.tiny_indices(np.array([0, 0, 1, 1, 1, 1, 1]), 5, seed=0)
