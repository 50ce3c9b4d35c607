"""Input a user did not make: odd image files, hostile names, broken spaces, passwords in URLs. Each table holds the
cases of one kind; a new case is one line, and each builds its file for real."""
from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from bench import data as bdata
from bench.cli import _parse_assignments, app
from bench.leaderboard import Leaderboard, db_url
from bench.safe import csv_cell, mask, md_cell
from conftest import make_folder
from test_leaderboard import record, result

runner = CliRunner()
ONE_EPOCH = {"objective": "tinynet", "params": {"input_size": 16, "blocks": 1, "base_filters": 4, "epochs": 1, "batch_size": 8}}


# --- images: each is written into class `a` of a small folder, then the folder is scanned as a search would ---

def _half_dark(path: Path, **save) -> None:
    """Left half black, right half white, 40 x 20; saved with EXIF orientation 6 (turn 90 degrees clockwise to view)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif, **save)


def _gray16(path: Path) -> None:
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(path)  # 40000 / 65535 of white: 8-bit 156


def _transparent(path: Path, mode: str) -> None:
    arr = np.zeros((16, 16, 4), np.uint8)  # black, fully transparent: seen as the white page behind it
    im = Image.fromarray(arr, "RGBA")
    if mode == "P":
        im = im.convert("RGB").convert("P")
        im.info["transparency"] = 0
        im.save(path, transparency=0)
    else:
        im.save(path)


def _bomb(path: Path) -> None:
    """A 20000 x 20000 one-bit PNG, 48 KB on disk, 400 million pixels when decoded."""
    w = h = 20000
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + w // 8)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    chunk = lambda k, v: struct.pack(">I", len(v)) + k + v + struct.pack(">I", zlib.crc32(k + v))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _truncated(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])


def _pixel(x, row, col):
    return tuple(int(v) for v in x[row, col])


IMAGES = [
    # (case, file name (bytes: need not be UTF-8), builder, outcome: "loads" + check(decoded 8x8 RGB) | "ignored" | "skipped" + reason)
    ("macOS AppleDouble", b"._photo.jpg", lambda p: p.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X"), "ignored", None),
    ("hidden file", b".DS_Store.png", lambda p: p.write_bytes(b"\x00\x00\x00\x01Bud1"), "ignored", None),
    ("name not UTF-8", b"caf\xe9.png", lambda p: Image.new("RGB", (9, 9), (10, 200, 30)).save(p, "PNG"), "loads",
     lambda x: _pixel(x, 4, 4) == (10, 200, 30)),
    ("16-bit gray PNG", b"gray16.png", _gray16, "loads", lambda x: _pixel(x, 4, 4) == (156, 156, 156)),
    ("32-bit gray TIFF of 8-bit values", b"gray32.tif", lambda p: Image.fromarray(np.full((9, 9), 200, np.int32)).save(p),
     "loads", lambda x: _pixel(x, 4, 4) == (200, 200, 200)),
    ("EXIF-rotated JPEG", b"phone.jpg", lambda p: _half_dark(p, quality=95), "loads",
     lambda x: x[0, 4].max() < 40 and x[7, 4].min() > 215),  # turned: the dark half is on top
    ("CMYK JPEG", b"cmyk.jpg", lambda p: Image.new("CMYK", (9, 9), (0, 255, 255, 0)).save(p, quality=95), "loads",
     lambda x: x[4, 4, 0] > 200 and x[4, 4, 1] < 60 and x[4, 4, 2] < 60),
    ("palette PNG", b"palette.png", lambda p: Image.new("RGB", (9, 9), (0, 0, 255)).convert("P").save(p), "loads",
     lambda x: _pixel(x, 4, 4) == (0, 0, 255)),
    ("palette with transparency", b"clear.png", lambda p: _transparent(p, "P"), "loads",
     lambda x: _pixel(x, 4, 4) == (255, 255, 255)),
    ("RGBA, transparent", b"rgba.png", lambda p: _transparent(p, "RGBA"), "loads",
     lambda x: _pixel(x, 4, 4) == (255, 255, 255)),
    ("not an image", b"notes.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg"), "skipped", "cannot decode"),
    ("truncated JPEG", b"cut.jpg", _truncated, "skipped", "truncated"),
    ("decompression bomb", b"bomb.png", _bomb, "skipped", "over bench's limit of 100,000,000 pixels"),
]


@pytest.mark.parametrize("case,name,build,outcome,expect", IMAGES, ids=[c[0] for c in IMAGES])
def test_odd_image_file(tmp_path, case, name, build, outcome, expect):
    root = make_folder(tmp_path / "data", train=3, test=2, size=(12, 12))
    path = Path(os.fsdecode(os.fsencode(root / "train" / "a") + b"/" + name))
    build(path)
    catalog = bdata.scan(root)
    listed = set(catalog.train.paths)
    skipped = dict(catalog.skipped)
    if outcome == "ignored":
        assert path not in listed and path not in skipped
    elif outcome == "skipped":
        assert path not in listed and expect in skipped[path]
        assert len(catalog.train.paths) == 6 and len(bdata.load_arrays(catalog, 8).x_train) == 6  # the rest still loads
    else:
        assert path in listed and not skipped
        assert expect(bdata.decode(path, 8))
        arrays = bdata.load_arrays(catalog, 8)  # the fingerprint and cache keys take the name too
        assert len(arrays.x_train) == len(catalog.train.paths) == 7


def test_a_class_whose_images_are_all_broken_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "data", train=3, test=2, size=(12, 12))
    for f in (root / "test" / "b").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(bdata.DataError, match=r"test/b: none of its 2 images can be decoded \(the first: 0.png: cannot decode"):
        bdata.scan(root)


def test_search_lists_skipped_images_and_counts_them(tmp_path):
    root = make_folder(tmp_path / "data", train=3, test=2, size=(12, 12))
    (root / "train" / "a" / "bad.png").write_bytes(b"garbage")
    many = make_folder(tmp_path / "many", classes=[f"c{i:02d}" for i in range(15)], train=4, test=1, size=(8, 8))
    run = runner.invoke(app, ["search", "tinynet", "--data", str(root), "--results", str(tmp_path / "r"), "--trials", "1",
                              "--val-fraction", "0.5", "--study", "x", "--space", str(_space(tmp_path))], catch_exceptions=False)
    assert f"skipped {root}/train/a/bad.png: cannot decode image" in run.output
    assert "skipped 1 of 11 images that cannot be used" in run.output
    assert run.exit_code == 0, run.output
    # 15 classes of 4 training images: the 15 % hold-out is 9 images, which cannot hold each class once
    refused = runner.invoke(app, ["search", "tinynet", "--data", str(many), "--results", str(tmp_path / "r2"), "--trials", "1"])
    assert refused.exit_code == 2 and not (tmp_path / "r2").exists()
    assert ("the 15 % validation hold-out (9 images) cannot hold one image of each of 15 classes: use --val-fraction 0.25 "
            "or more, or more images") in " ".join(refused.output.split())


@pytest.mark.parametrize("command", ["worker", "confirm"])
def test_worker_and_confirm_check_the_data_before_any_trial(tmp_path, command):
    many = make_folder(tmp_path / "many", classes=[f"c{i:02d}" for i in range(15)], train=4, test=1, size=(8, 8))
    (many / "train" / "c00" / "bad.png").write_bytes(b"garbage")
    results = tmp_path / "r"
    board = Leaderboard(db_url(None, results))
    board.append(record(0, res=result(0.8, 1000), study="x"))  # a best trial that confirm would re-run
    extra = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}"] if command == "worker" else []
    run = runner.invoke(app, [command, "--study", "x", "--data", str(many), "--results", str(results), *extra])
    assert run.exit_code == 2, run.output
    text = " ".join(run.output.split())
    assert f"skipped {many}/train/c00/bad.png: cannot decode image" in text and "Traceback" not in text
    assert "validation hold-out (9 images) cannot hold one image of each of 15 classes" in text
    assert [r["study"] for r in board.query()] == ["x"]  # no trial ran


def _space(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(ONE_EPOCH))
    return path


# --- names: a study name is a folder name; it is refused where it enters, with exit 2 and nothing written ---

NAMES = [
    ("../../escaped", "path separator"),
    ("[/x]", "path separator"),
    ("a\\b", "path separator"),
    ("..", "starts with '.'"),
    (".hidden", "starts with '.'"),
    ("tab\there", "control character"),
    ("bell\x07", "control character"),
    ("x" * 101, "at most 100"),
    (os.fsdecode(b"caf\xe9"), "not valid UTF-8"),
    ("", "empty"),
]
COMMANDS = [
    ["search", "tinynet", "--trials", "1"],
    ["worker", "--storage", "sqlite:///never.db"],
    ["confirm"],
    ["report"],
    ["leaderboard"],
    ["plot", "pareto"],
]


@pytest.mark.parametrize("name,why", NAMES, ids=[repr(n[0])[:20] for n in NAMES])
@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] if c[0] != "plot" else "plot" for c in COMMANDS])
def test_bad_study_name_is_refused_before_anything_is_written(tmp_path, tiny_folder, command, name, why):
    results = tmp_path / "deep" / "results"
    run = runner.invoke(app, [*command, "--study", name, "--results", str(results),
                              *(["--data", str(tiny_folder)] if command[0] in ("search", "worker", "confirm") else [])])
    assert run.exit_code == 2, run.output
    assert why in run.output and "Traceback" not in run.output
    assert not (tmp_path / "deep").exists() and not (tmp_path / "escaped").exists()


@pytest.fixture
def tiny_folder(tmp_path):
    return make_folder(tmp_path / "d", train=3, test=2, size=(8, 8))


def test_names_and_reasons_with_markup_print_as_they_are(tmp_path):
    board = Leaderboard(db_url(None, tmp_path))
    board.append(record(0, res=result(0.8, 1000), study="[bold]x[/bold] [red"))
    board.append(record(1, status="failed", failure_reason="ValueError: [/x] and [link=evil] at =1+2", study="[bold]x[/bold] [red"))
    shown = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "[bold]x[/bold] [red #1" in text and "ValueError: [/x] and [link=evil]" in text
    # the live progress line of a failed trial (the one that raised MarkupError)
    from bench.progress import SearchProgress

    buf = io.StringIO()
    progress = SearchProgress(Console(file=buf, width=200))
    with progress:
        progress.begin(0, 1)
        progress.trial_done(3, "failed", None, 1.0, failure="[/x] in a reason")
    assert "trial 3 failed in 1.0 s (1/1): [/x] in a reason" in buf.getvalue()


CELLS = [
    # (value, as a CSV cell, as a Markdown cell)
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")", "=HYPERLINK(\"http://x\",\"y\")"),
    ("+1+cmd", "'+1+cmd", "+1+cmd"),
    ("-2+3", "'-2+3", "-2+3"),
    ("@SUM(A1)", "'@SUM(A1)", "@SUM(A1)"),
    ("-0.05", "-0.05", "-0.05"),
    (0.25, 0.25, "0.25"),
    ("a|b\nc", "a|b\nc", "a\\|b<br>c"),
]


HOLDOUTS = [
    # (images of each class, fraction, the message, or None when the hold-out can be made)
    ([4] * 15, 0.15, "the 15 % validation hold-out (9 images) cannot hold one image of each of 15 classes: use --val-fraction 0.25"),
    ([4] * 15, 0.25, None),
    ([10] * 3, 0.05, "the 5 % validation hold-out (2 images) cannot hold one image of each of 3 classes: use --val-fraction 0.10"),
    ([1] * 3, 0.5, "cannot hold one image of each of 3 classes: add more images"),
    ([2] * 3, 0.9, "leaves 0 images to train on, fewer than the 3 classes"),
    ([1, 9, 9], 0.3, "class 0 has 1 training image"),
]


@pytest.mark.parametrize("counts,fraction,message", HOLDOUTS)
def test_validation_holdout_check(counts, fraction, message):
    labels = np.repeat(np.arange(len(counts)), counts)
    if message is None:
        fit, val = bdata.holdout_indices(labels, fraction, seed=0)
        assert set(labels[val]) == set(labels[fit]) == set(range(len(counts)))
    else:
        with pytest.raises(bdata.DataError, match=re.escape(message)):
            bdata.holdout_indices(labels, fraction, seed=0)


@pytest.mark.parametrize("value,as_csv,as_md", CELLS)
def test_table_cells(value, as_csv, as_md):
    assert csv_cell(value) == as_csv and md_cell(value) == as_md


def test_leaderboard_csv_guards_formulas(tmp_path):
    board = Leaderboard(db_url(None, tmp_path))
    board.append(record(0, status="failed", failure_reason="=HYPERLINK(\"http://evil\")"))
    csv_text = runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--format", "csv"]).stdout
    assert "'=HYPERLINK" in csv_text and ",=HYPERLINK" not in csv_text


# --- reports: nothing from a name or a file reaches the page as a tag ---

def test_report_escapes_hostile_study_and_class_names(tmp_path):
    from bench.report import study_report, trial_report

    study, klass = "<img src=x onerror=alert(1)>", "<svg onload=alert(2)>"
    results = tmp_path / "results"
    board = Leaderboard(db_url(None, results))
    board.append(record(0, res=result(0.8, 1000), study=study, failure_reason=None))
    board.append(record(1, res=result(0.7, 2000), study=study))
    board.append(record(2, status="failed", failure_reason="<script>alert(3)</script>", study=study))
    folder = results / study / "trial-0"
    folder.mkdir(parents=True)
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    np.savez_compressed(folder / "predictions.npz", val_proba=proba, y_val=y, test_proba=proba, y_test=y,
                        classes=np.array([klass, "b"]), test_paths=np.array(["../../../etc/passwd"] * 4))
    (folder / "activations.json").write_text('{"batch": "<b onmouseover=alert(4)>", "layers": {}}')
    row = next(r for r in board.query(study=study) if r["trial_number"] == 0)
    pages = [trial_report(row, tmp_path / "t.html", results=results, data_root=tmp_path, png=False)[0][0],
             study_report(board, study, tmp_path / "s.html", results=results, png=False)[0][0]]
    for page in pages:
        text = page.read_text()
        for tag in ("<img src=x", "<svg onload", "<script>alert", "<b onmouseover"):
            assert tag not in text, (page.name, tag)
    trial_text = pages[0].read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in trial_text and "&lt;b onmouseover" in trial_text
    assert "files that are not images under the data root" in trial_text  # test_paths from the folder are not followed out of --data


ARTIFACT_PATHS = [("train/a/x.jpg", True), ("a/b.PNG", True), ("../x.jpg", False), ("/etc/x.jpg", False),
                  ("train/a/../../../x.png", False), ("train/a/notes.txt", False), ("../../etc/passwd", False)]


@pytest.mark.parametrize("relative,opened", ARTIFACT_PATHS)
def test_report_opens_only_images_under_the_data_root(tmp_path, relative, opened):
    from bench.report.trial import _inside

    assert _inside(str(tmp_path / "data"), relative) is opened


# --- spaces and flags ---

SPACES = [
    # (case, builder of the --space path, the one line it must give)
    ("a folder named x.yaml", lambda p: (p / "x.yaml").mkdir() or p / "x.yaml", "is a folder, not a space file"),
    ("not UTF-8", lambda p: _write(p / "latin1.yaml", "objective: tinynet\nparams:\n  lr: 0.1 # caf\xe9\n".encode("latin-1")),
     "not UTF-8 text"),
    ("type is a list", lambda p: _write(p / "list.yaml", b"objective: tinynet\nparams:\n  lr: {type: [float], low: 0.1, high: 1}\n"),
     "param 'lr': type must be one word"),
]


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case,build,line", SPACES, ids=[c[0] for c in SPACES])
def test_bad_space_file_gives_one_line(tmp_path, tiny_folder, case, build, line):
    run = runner.invoke(app, ["search", "tinynet", "--space", str(build(tmp_path)), "--data", str(tiny_folder),
                              "--results", str(tmp_path / "r")])
    assert run.exit_code == 2 and line in run.output and "Traceback" not in run.output
    assert len(run.output.strip().splitlines()) <= 2 and not (tmp_path / "r").exists()  # one line, wrapped at most once


PARAMS = [("lr=1e-3", {"lr": 0.001}), ("lr=2E+2,n=3", {"lr": 200.0, "n": 3}), ("opt=adam,flip=true", {"opt": "adam", "flip": True}),
          ("lr=0.5", {"lr": 0.5})]


def test_space_files_read_exponents_as_floats(tmp_path):
    from bench.space import load_space

    path = _write(tmp_path / "exp.yaml", b"objective: tinynet\nparams:\n  lr: 1e-3\n  wd: {type: categorical, choices: [1e-4, 5E-4]}\n")
    space = load_space(str(path))
    assert space.fixed()["lr"] == 0.001 and space.params["wd"].choices == [0.0001, 0.0005]


@pytest.mark.parametrize("text,parsed", PARAMS)
def test_params_flag_reads_exponents_as_floats(text, parsed):
    assert _parse_assignments(text) == parsed and all(type(parsed[k]) is type(v) for k, v in _parse_assignments(text).items())


# --- secrets: a password in a URL is never shown or written ---

MASKED = [
    ("postgresql+psycopg2://bench:hunter2@db:5432/x", "postgresql+psycopg2://bench:***@db:5432/x"),
    ("no study 'w' in mysql://u:p%40ss@h/db; start it", "no study 'w' in mysql://u:***@h/db; start it"),
    ("sqlite:///results/leaderboard.db", "sqlite:///results/leaderboard.db"),
    ("postgresql://bench@host/db", "postgresql://bench@host/db"),
]


@pytest.mark.parametrize("text,shown", MASKED)
def test_mask(text, shown):
    assert mask(text) == shown


def test_a_run_never_shows_or_writes_the_database_password(tmp_path, tiny_mit8, postgres_url):
    secret = "hunter2-s3cret"
    url = postgres_url.replace("bench@", f"bench:{secret}@")  # the test server trusts loopback, so any password works
    results = tmp_path / "results"
    common = ["--results", results, "--data", tiny_mit8]
    bench = lambda *a: subprocess.run([sys.executable, "-m", "bench.cli", *map(str, a)], capture_output=True, text=True,  # noqa: E731
                                      env={**os.environ, "COLUMNS": "200"})
    runs = [bench("search", "tinynet", "--space", _space(tmp_path), "--trials", "1", "--study", "secret", "--storage", url, *common),
            bench("worker", "--study", "secret", "--storage", url, *common),
            bench("worker", "--study", "missing", "--storage", url, *common),
            bench("leaderboard", "--db", url, "--study", "secret", "--format", "csv", "--results", results),
            bench("report", "--study", "secret", "--storage", url, "--db", url, "--no-png", "--results", results)]
    assert [r.returncode for r in runs] == [0, 0, 2, 0, 0], [r.stderr[-800:] for r in runs]
    assert "worker done: study secret on postgresql+psycopg2://bench:***@" in runs[1].stderr
    assert "no study 'missing' in postgresql+psycopg2://bench:***@" in " ".join(runs[2].stderr.split())
    for r in runs:
        assert secret not in r.stdout + r.stderr
    written = [p for p in results.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    rows = Leaderboard(postgres_url).query(study="secret")
    assert rows and secret not in repr(rows)


# --- Ray: a local Ray keeps token auth (its ports listen on every interface); --resume says it unpickles ---

def _listening(pid: int) -> set[str]:
    """The addresses that a process and its children listen on, as psutil sees them."""
    import psutil

    found = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return found
    for proc in procs:
        try:
            found |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def test_local_ray_listens_only_on_loopback_or_asks_for_a_token(tmp_path, tiny_mit8):
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | {"HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "search", "tinynet", "--backend", "ray", "--pruner", "none",
                             "--space", str(_space(tmp_path)), "--trials", "1", "--resume", "--data", str(tiny_mit8),
                             "--results", str(tmp_path / "r")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    addresses = set()
    while proc.poll() is None:  # Ray's processes are the search's children while it runs
        addresses |= _listening(proc.pid)
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    assert "--resume unpickles Ray's saved experiment" in " ".join(stderr.split())
    assert addresses, "no listening socket seen: the check saw nothing"
    if not addresses <= {"127.0.0.1", "::1"}:  # Ray 2.60 listens on "::" (every interface) whatever it is told
        assert (tmp_path / "home" / ".ray" / "auth_token").is_file(), addresses  # then Ray's token auth guards it
    assert Leaderboard(db_url(None, tmp_path / "r")).query(status="complete")


def test_ray_keeps_the_database_password_out_of_its_pickles(tmp_path, tiny_mit8, postgres_url):
    pytest.importorskip("ray")
    secret = "hunter3-s3cret"
    url = postgres_url.replace("bench@", f"bench:{secret}@")
    results = tmp_path / "r"
    run = subprocess.run([sys.executable, "-m", "bench.cli", "search", "tinynet", "--backend", "ray", "--pruner", "none",
                          "--space", str(_space(tmp_path)), "--trials", "1", "--study", "raysecret", "--db", url,
                          "--data", str(tiny_mit8), "--results", str(results)],
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert secret not in run.stdout + run.stderr
    pickles = list(results.rglob("*.pkl"))
    assert pickles and not [p for p in results.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert Leaderboard(postgres_url).query(study="raysecret", status="complete")  # the driver still wrote its row


UNREACHABLE = "postgresql+psycopg2://bench:hunter4@127.0.0.1:1/db"  # nothing listens on port 1


@pytest.mark.parametrize("command", [["search", "tinynet", "--trials", "1"], ["worker", "--study", "w"]], ids=["search", "worker"])
def test_a_database_that_cannot_be_reached_is_one_masked_line(tmp_path, tiny_folder, command):
    run = runner.invoke(app, [*command, "--storage", UNREACHABLE, "--data", str(tiny_folder), "--results", str(tmp_path / "r"),
                              *(["--space", str(_space(tmp_path)), "--val-fraction", "0.5"] if command[0] == "search" else [])])
    assert run.exit_code == 2 and "error: cannot reach the database" in run.output and "connection to server" in run.output
    assert "hunter4" not in run.output and "Traceback" not in run.output
