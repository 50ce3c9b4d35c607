"""Ray Tune backend on a real Ray cluster on loopback: a head and a second node joined with `ray start --address`."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from bench.leaderboard import Leaderboard, db_url
from conftest import _free_port

pytest.importorskip("ray")
RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
SPACE = {"objective": "tinynet", "params": {
    "input_size": 32, "blocks": 2, "batch_size": 16, "epochs": 2,
    "base_filters": {"type": "int", "low": 4, "high": 12, "step": 4},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": "sgd"}},
}}


def bench(*args):
    return [sys.executable, "-m", "bench.cli", *map(str, args)]


def space_file(tmp_path):
    path = tmp_path / "rayspace.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


@pytest.fixture
def two_node_cluster():
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="bray")  # short: Ray's Unix socket paths must stay under ~107 bytes
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false", *common],
                   check=True, env=ENV, capture_output=True)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], check=True, env=ENV, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp, port)


def _stop_cluster(temp: str, port: int) -> None:
    """Stop this test's cluster only: `ray stop` would end every Ray on the machine, a user's own included."""
    mine = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and (temp in cmdline or f"127.0.0.1:{port}" in cmdline):
            mine.append(int(proc.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def test_search_on_a_two_node_cluster(tmp_path, tiny_mit8, two_node_cluster):
    alive = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{two_node_cluster}', log_to_driver=False); "
                            "print(sum(n['Alive'] for n in ray.nodes()))"], env=ENV, capture_output=True, text=True)
    assert alive.stdout.strip().splitlines()[-1] == "2", alive.stderr
    run = subprocess.run(bench("search", "tinynet", "--backend", "ray", "--address", two_node_cluster, "--pruner", "none",
                               "--space", space_file(tmp_path), "--trials", 4, "--data", tiny_mit8, "--results", tmp_path),
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = Leaderboard(db_url(None, tmp_path)).query(study="rayspace")
    assert sorted(r["trial_number"] for r in rows) == [0, 1, 2, 3]
    assert all(r["status"] == "complete" and r["backend"] == "ray" and 0 <= r["val_accuracy"] <= 1 for r in rows)
    assert all(("momentum" in r["params"]) == (r["params"]["optimizer"] == "sgd") for r in rows)
    assert len({r["extras"]["ray_node"] for r in rows}) == 2  # both nodes ran trials


def test_interrupted_experiment_resumes_without_rerunning(tmp_path, tiny_mit8):
    cmd = bench("search", "tinynet", "--backend", "ray", "--pruner", "none", "--space", space_file(tmp_path),
                "--trials", 5, "--data", tiny_mit8, "--results", tmp_path)
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    board = Leaderboard(db_url(None, tmp_path))
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and len(board.query(status="complete")) < 2:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=120)
    done_before = {r["trial_number"]: r["finished_at"] for r in board.query(status="complete")}
    assert len(done_before) >= 2

    resumed = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = board.query(study="rayspace")
    assert sorted(r["trial_number"] for r in rows) == [0, 1, 2, 3, 4]
    for r in rows:  # trials finished before the interruption were not run again
        if r["trial_number"] in done_before:
            assert r["finished_at"] == done_before[r["trial_number"]]

    # a new run of the same study (no --resume) numbers its trials after the study's rows and replaces none of them
    before = {r["trial_number"]: (r["params"], r["finished_at"]) for r in rows}
    again = subprocess.run(bench("search", "tinynet", "--backend", "ray", "--pruner", "none", "--space", space_file(tmp_path),
                                 "--trials", 2, "--data", tiny_mit8, "--results", tmp_path),
                           env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    after = {r["trial_number"]: (r["params"], r["finished_at"]) for r in board.query(study="rayspace")}
    assert sorted(after) == [0, 1, 2, 3, 4, 5, 6] and all(after[n] == before[n] for n in before)
