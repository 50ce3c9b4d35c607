"""Shared fixtures: small samples of the real MIT8 images (symlinked, never copied into the project), made-up data,
and a real PostgreSQL server."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MIT8 = Path(os.environ.get("BENCH_TEST_MIT8", REPO.parent / "shared" / "data" / "mit8"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# a test that takes the real images (and trains on them) or a server is `slow`: `pytest -m "not slow"` leaves it out.
# Tests that start a server without one of these fixtures carry the marker themselves.
SLOW_FIXTURES = {"mit8", "tiny_mit8", "postgres_url", "two_node_cluster"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _sample(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    if not MIT8.is_dir():
        pytest.skip(f"the MIT8 data is not at {MIT8} (set BENCH_TEST_MIT8)")
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for cls in sorted(p.name for p in (MIT8 / split).iterdir()):
            (dest / split / cls).mkdir(parents=True)
            for f in sorted((MIT8 / split / cls).iterdir())[:n]:
                (dest / split / cls / f.name).symlink_to(f)
    return dest


@pytest.fixture(scope="session")
def mit8() -> Path:
    if not MIT8.is_dir():
        pytest.skip(f"the MIT8 data is not at {MIT8}")
    return MIT8


@pytest.fixture(scope="session")
def tiny_mit8(tmp_path_factory) -> Path:
    """8 train and 3 test images per class of the real data: 64 + 24 images."""
    return _sample(tmp_path_factory.mktemp("tiny_mit8"), 8, 3)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own decoded-image cache, so tests never read a user's cache."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def make_image(path: Path, size=(40, 30), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze() if channels == 1 else arr, mode).save(path)
    return path


def make_folder(root: Path, classes=("a", "b"), train=4, test=2, **image_kw) -> Path:
    for split, n in (("train", train), ("test", test)):
        for ci, cls in enumerate(classes):
            for i in range(n):
                make_image(root / split / cls / f"{i}.png", seed=ci * 100 + i, **image_kw)
    return root


@pytest.fixture(scope="session")
def made_images(tmp_path_factory) -> Path:
    """Images the tests make: 4 classes x (8 train + 3 test) 48x48 RGB images, each class its own colour and stripe
    direction under seeded noise, so a model can learn them (and a contract test needs no data set)."""
    root = tmp_path_factory.mktemp("made_images")
    colours = ((200, 60, 60), (60, 200, 60), (60, 60, 200), (200, 200, 60))
    rng = np.random.default_rng(0)
    grid = np.arange(48)
    for ci, colour in enumerate(colours):
        stripes = ((grid[:, None] if ci % 2 else grid[None, :]) // 6 % 2) * 50  # horizontal or vertical
        for split, n in (("train", 8), ("test", 3)):
            for i in range(n):
                noise = rng.normal(0, 25, (48, 48, 3))
                arr = np.clip(np.array(colour) + stripes[..., None] + noise, 0, 255).astype(np.uint8)
                path = root / split / f"class{ci}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr, "RGB").save(path)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL server on loopback, from Debian's packages, in a folder of its own; a test may stop and start it."""

    def __init__(self):
        bindir = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # not under pytest's root-only tmp: it runs as postgres
        self.data = self.folder / "data"
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(self.folder, "postgres")
        self.port = _free_port()
        subprocess.run(self.run_as + [str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "bench"],
                       check=True, capture_output=True)
        self.start()

    def url(self, driver: str = "+psycopg2") -> str:
        return f"postgresql{driver}://bench@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(self.run_as + [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w",
                                      "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self.run_as + [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback, started for these tests."""
    if os.environ.get("BENCH_TEST_POSTGRES"):
        yield os.environ["BENCH_TEST_POSTGRES"]
        return
    server = PostgresServer()
    try:
        yield server.url()
    finally:
        server.remove()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, which it may stop (a database restart) and start again."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()
