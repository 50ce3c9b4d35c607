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

    # a network over the family's compute cap is stopped before it trains: a pruned row with the reason, not a failure
    capped = tmp_path / "capped.yaml"
    capped.write_text(yaml.safe_dump({**SPACE, "params": {**SPACE["params"], "max_mmacs": 0.001}}))
    run = subprocess.run(bench("search", "tinynet", "--backend", "ray", "--address", two_node_cluster, "--pruner", "none",
                               "--space", capped, "--trials", 2, "--data", tiny_mit8, "--results", tmp_path),
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = Leaderboard(db_url(None, tmp_path)).query(study="capped")
    assert len(rows) == 2 and all(r["status"] == "pruned" and r["epochs"] == 0 for r in rows), rows
    assert all(r["failure_reason"].endswith("exceed max_mmacs 0.001; skipped before training") for r in rows)


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

def _listening(root_pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket held by root_pid or its descendants."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.Error:
        return set()
    found = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in procs:
            try:
                found.add((procs[c.pid].name(), c.laddr.ip, c.laddr.port))
            except psutil.Error:
                pass
    return found


def test_local_ray_listens_on_loopback_only_and_report_finds_its_artifacts(tmp_path, tiny_mit8):
    """The default relative --results: Ray's trials chdir into Tune's folders, yet their artifacts land under
    results/<study>/ and `bench report` finds them. Every socket Ray's processes listen on is on loopback."""
    space = space_file(tmp_path)
    cmd = bench("search", "tinynet", "--backend", "ray", "--pruner", "none", "--space", space, "--trials", 2,
                "--data", tiny_mit8, "--results", "results")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # a local Ray as a user gets it
    search = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str, int]] = set()
    while search.poll() is None:
        seen |= _listening(search.pid)
        time.sleep(0.5)
    out, errors = search.communicate()
    assert search.returncode == 0, errors[-3000:]
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # Ray's own servers were seen while it ran
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for _, ip, _ in seen), sorted(seen)

    results = tmp_path / "results"
    rows = Leaderboard(db_url(None, results)).query(study="rayspace")
    assert len(rows) == 2 and all(r["status"] == "complete" for r in rows)
    for r in rows:
        folder = Path(r["extras"]["artifacts"])
        assert folder.parent == results / "rayspace" and folder.name.startswith("ray-trial-"), folder
        assert (folder / "predictions.npz").exists()
    assert not list((results / "rayspace").rglob("working_dirs/**/predictions.npz"))
    report = subprocess.run(bench("report", rows[0]["trial_number"], "--study", "rayspace", "--results", "results",
                                  "--no-png"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    page = results / "reports" / "rayspace" / f"ray-trial-{rows[0]['trial_number']}.html"
    assert 'id="fig-confusion"' in page.read_text()
