"""A trial can never take its study down: each runs in a worker process that the search supervises.

The family below misbehaves for real (os.abort(), a sleep past --trial-timeout, an allocation past --trial-memory);
each of those trials is stored as failed with its reason, and the trials around it complete. A search killed with
SIGKILL mid-trial, then run again, fails that trial with a reason, runs it again, and keeps every finished row.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from bench.leaderboard import Leaderboard, db_url

FAMILY = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from bench.objective import Objective, Result

    class Unruly(Objective):
        """Does what its `mode` says: ok returns x as its accuracy; the others misbehave."""
        name = "unruly"
        defaults = {"mode": "ok", "x": 0.5, "tag": ""}

        def run(self, params, ctx):
            params = self.resolve(params)
            mode = params["mode"]
            if mode == "abort":
                os.abort()
            if mode == "hang":
                time.sleep(3600)
            if mode == "hog":  # 600 MB, touched, so it is resident
                hog = bytearray(600 * 2**20)
                hog[::4096] = b"x" * len(hog[::4096])
                time.sleep(3600)
            if mode in ("hang_once", "abort_once"):  # misbehaves the first time only: the next run finishes
                flag = Path(os.environ["UNRULY_FLAG"])
                if not flag.exists():
                    flag.write_text("misbehaved once")
                    os.abort() if mode == "abort_once" else time.sleep(3600)
            return Result(params["x"], 0.1, params["x"], params["x"], params["x"], 0.1, params["x"], params["x"],
                          n_params=10, fit_seconds=0.0, epochs=1)
''')


def _space(tmp_path: Path, modes: list[str]) -> Path:
    starts = "\n".join(f"  - {{mode: {m}, x: {0.1 + 0.1 * i:.1f}}}" for i, m in enumerate(modes))
    path = tmp_path / "unruly.yaml"
    path.write_text(f"objective: unruly\nparams:\n  mode: {{type: categorical, choices: [{', '.join(sorted(set(modes)))}]}}\n"
                    f"  x: {{type: float, low: 0.0, high: 1.0}}\n  tag: fixed\nstart:\n{starts}\n")
    return path


def _command(tmp_path: Path, data: Path, space: Path, study: str, trials: int, *extra: str) -> list[str]:
    """`bench search unruly` (the family above, written beside the space) with random sampling and no pruning."""
    family = tmp_path / "unruly.py"
    family.write_text(FAMILY)
    return [sys.executable, "-m", "bench.cli", "search", "unruly", "--objective-file", f"{family}:Unruly",
            "--space", str(space), "--study", study, "--trials", str(trials), "--sampler", "random",
            "--pruner", "none", "--data", str(data), "--results", str(tmp_path / "results"), "--keep-top", "-1", *extra]


def _search(tmp_path: Path, data: Path, modes: list[str], *extra: str) -> list[str]:
    return _command(tmp_path, data, _space(tmp_path, modes), "unruly", len(modes), *extra)


def _rows(tmp_path: Path) -> dict[int, dict]:
    rows = Leaderboard(db_url(None, tmp_path / "results")).query(study="unruly")
    return {r["trial_number"]: r for r in rows}


def test_a_crash_a_hang_and_a_memory_hog_fail_their_own_trials_only(tmp_path, tiny_mit8):
    modes = ["ok", "abort", "ok", "hang", "ok", "hog", "ok"]
    cmd = _search(tmp_path, tiny_mit8, modes, "--trial-timeout", "8", "--trial-memory", "400")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _rows(tmp_path)
    assert [rows[n]["status"] for n in range(len(modes))] == [
        "complete", "failed", "complete", "failed", "complete", "failed", "complete"]
    assert "killed by signal 6 (SIGABRT)" in rows[1]["failure_reason"]
    assert "exceeded --trial-timeout 8 s" in rows[3]["failure_reason"]
    assert "exceeded --trial-memory 400 MB" in rows[5]["failure_reason"]
    assert [rows[n]["val_accuracy"] for n in (0, 2, 4, 6)] == pytest.approx([0.1, 0.3, 0.5, 0.7])
    log = (tmp_path / "results" / "unruly" / "failures.log").read_text()
    assert "SIGABRT" in log and "--trial-timeout" in log
    assert "trial 1 failed" in run.stderr and "SIGABRT" in run.stderr


def test_kill_9_of_a_search_then_the_same_command_runs_the_cut_trial_again(tmp_path, tiny_mit8):
    modes = ["ok", "ok", "hang_once", "ok"]
    env = {**os.environ, "UNRULY_FLAG": str(tmp_path / "flag")}
    cmd = _search(tmp_path, tiny_mit8, modes)
    search = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "flag").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "flag").exists(), "the search never reached the trial that hangs"
    before = _rows(tmp_path)
    os.killpg(search.pid, signal.SIGKILL)  # the search and its worker, as the OOM killer or a power cut would
    search.wait()
    assert sorted(before) == [0, 1] and all(r["status"] == "complete" for r in before.values())

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows = _rows(tmp_path)
    assert {n: rows[n]["finished_at"] for n in (0, 1)} == {n: before[n]["finished_at"] for n in (0, 1)}  # untouched
    assert rows[2]["status"] == "failed" and "ended while it ran" in rows[2]["failure_reason"]
    assert rows[2]["params"] == {**rows[2]["params"], "tag": "fixed"} and set(rows[2]["params"]) == set(rows[0]["params"])
    retried = [r for n, r in rows.items() if n > 2 and r["params"]["mode"] == "hang_once"]
    assert len(retried) == 1 and retried[0]["status"] == "complete"
    assert sum(r["status"] == "complete" for r in rows.values()) == len(modes)  # the cut trial does not count
    study = optuna.load_study(study_name="unruly", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "results" / "optuna.journal"))))
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def _once_space(tmp_path: Path, timeout: str = "", mode: str = "hang_once") -> Path:
    """Trial after trial of a family that misbehaves the first time only; `timeout` as the space's own trial_timeout."""
    path = tmp_path / f"{mode}.yaml"
    path.write_text(f"objective: unruly\nparams:\n  mode: {mode}\n  x: {{type: float, low: 0.2, high: 0.9}}\n"
                    + (f"trial_timeout: {timeout}\n" if timeout else ""))
    return path


def _misbehaving_once(tmp_path: Path, data: Path, mode: str, backend: str, *extra: str, timeout: str = "") -> list[dict]:
    """`bench search unruly` of 2 trials on `backend` whose first trial misbehaves (`mode`: hang_once, abort_once);
    asserts the search itself ends well and returns its rows by trial number."""
    env = {**os.environ, "UNRULY_FLAG": str(tmp_path / "flag")}
    study = mode.split("_")[0]
    cmd = _command(tmp_path, data, _once_space(tmp_path, timeout, mode), study, 2, "--backend", backend, *extra)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    return sorted(Leaderboard(db_url(None, tmp_path / "results")).query(study=study), key=lambda r: r["trial_number"])


@pytest.mark.parametrize("backend, limit_from", [("kerastuner", "flag"), ("ray", "space")])
def test_trial_timeout_kills_a_hung_trial_on_every_backend(tmp_path, tiny_mit8, backend, limit_from):
    """keras-tuner (--trial-timeout) and Ray (the space's trial_timeout: default) run each trial in a child process
    that is killed at the limit: the hung trial fails with the reason, the next one completes."""
    pytest.importorskip("keras_tuner" if backend == "kerastuner" else "ray")
    if backend == "ray":  # one trial at a time, so the second never starts while the first hangs
        extra = ["--cpus-per-trial", str(os.cpu_count())]
    else:
        extra = ["--trial-timeout", "6"]
    start = time.time()
    rows = _misbehaving_once(tmp_path, tiny_mit8, "hang_once", backend, *extra,
                             timeout="6" if limit_from == "space" else "")
    assert [r["status"] for r in rows] == ["failed", "complete"], [(r["status"], r["failure_reason"]) for r in rows]
    assert "exceeded --trial-timeout 6 s; its process was killed" in rows[0]["failure_reason"]
    assert rows[1]["val_accuracy"] == pytest.approx(rows[1]["params"]["x"])
    assert time.time() - start < 300  # not the hour the trial would have slept


def test_keras_tuner_runs_every_trial_in_a_child_process(tmp_path, tiny_mit8):
    """No limit given: a trial that aborts still takes only its own child process with it, and fails with the signal;
    keras-tuner's loop, in the search's process, goes on to the next trial."""
    pytest.importorskip("keras_tuner")
    rows = _misbehaving_once(tmp_path, tiny_mit8, "abort_once", "kerastuner")
    assert [r["status"] for r in rows] == ["failed", "complete"], [(r["status"], r["failure_reason"]) for r in rows]
    assert "killed by signal 6 (SIGABRT)" in rows[0]["failure_reason"]


def test_ray_trial_whose_actor_aborts_errors_and_resume_reruns_it_into_its_row(tmp_path, tiny_mit8):
    """Without limits a Ray trial runs in Ray's own actor: its abort ends that trial as errored (a failed row), the
    next trial completes; `--resume` runs the errored trial again, and its result takes the failed row."""
    pytest.importorskip("ray")
    sequential = ["--cpus-per-trial", str(os.cpu_count())]
    rows = _misbehaving_once(tmp_path, tiny_mit8, "abort_once", "ray", *sequential)
    assert [r["status"] for r in rows] == ["failed", "complete"], [(r["status"], r["failure_reason"]) for r in rows]
    assert rows[0]["failure_reason"].startswith("Ray trial error")
    resumed = _misbehaving_once(tmp_path, tiny_mit8, "abort_once", "ray", *sequential, "--resume")
    assert [r["status"] for r in resumed] == ["complete", "complete"]
    assert resumed[0]["params"] == rows[0]["params"] and resumed[1] == rows[1]  # same trial; the finished one untouched
    assert [e["reason"] for e in resumed[0]["extras"]["earlier_failures"]] == [rows[0]["failure_reason"]]


FORKED = textwrap.dedent('''
    import os, sys, time
    from bench.backends.processes import WorkerEvents, supervise

    def tell(slot, events):
        """Says what it found at its start: the caller's MARK, whether the preload is imported, its parent."""
        WorkerEvents(events, slot).note(f"{os.environ['MARK']} {'colorsys' in sys.modules} {os.getppid()}")
        if os.environ["MARK"] == "hang":
            time.sleep(3600)

    class Notes:
        def note(self, text):
            print(text, flush=True)

    if __name__ == "__main__":
        print(os.getpid(), flush=True)
        for mark in sys.argv[1:]:
            os.environ["MARK"] = mark  # set after the forkserver started (with the first worker)
            supervise(tell, lambda pid, why: None, jobs=1, more=lambda: False, progress=Notes(), preload=["colorsys"])
''')


def test_workers_fork_from_one_server_that_imported_the_preload_and_start_in_the_callers_environment(tmp_path):
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    run = subprocess.run([sys.executable, str(script), "first", "second"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    me, *notes = run.stdout.split("\n")[:3]
    server = notes[0].split()[2]
    assert notes == [f"first True {server}", f"second True {server}"]  # the preload is there; the MARK is each call's
    assert server != me  # forked from the server, not from the search's process


def test_a_kill_9_of_the_search_alone_takes_its_forked_workers_with_it(tmp_path):
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    search = subprocess.Popen([sys.executable, str(script), "hang"], stdout=subprocess.PIPE, text=True)
    me = int(search.stdout.readline())
    _, _, server = search.stdout.readline().split()
    import psutil

    worker = [p for p in psutil.Process(int(server)).children() if p.is_running()]
    assert me != int(server) and len(worker) == 1
    os.kill(me, signal.SIGKILL)  # the search only, not its process group: the server and the worker must follow
    search.wait()
    gone, alive = psutil.wait_procs([psutil.Process(int(server)), *worker], timeout=15)
    assert not alive, f"left running after the search was killed: {alive}"
