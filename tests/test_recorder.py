"""No finished result is lost or replaced: every backend's rows go through bench.recorder.TrialRecorder, which retries a
write the database cannot take now, keeps the row when it stays down, and writes it once the database is back (or
`bench leaderboard --sync` does). Real SQLite and real PostgreSQL servers, stopped and started for real."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from bench.backends import SearchConfig
from bench.cli import app
from bench.leaderboard import Leaderboard, db_url, driver_url
from bench.objective import Result
from bench.recorder import KEPT_ROW, UNWRITTEN, TrialRecorder, sync_files

FAMILY = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from bench.objective import Objective, Result, TrialFailed

    class Steady(Objective):
        """Four epochs whose validation accuracy climbs to x; mode fail fails, mode gate waits for the file $STEADY_GATE."""
        name = "steady"
        defaults = {"mode": "ok", "x": 0.5}

        def run(self, params, ctx):
            params = self.resolve(params)
            if params["mode"] == "gate":
                while not Path(os.environ["STEADY_GATE"]).exists():
                    time.sleep(0.1)
            ctx.n_params = 10
            for epoch in range(4):
                ctx.report(epoch, {"val_accuracy": params["x"] * (epoch + 1) / 4}, total_epochs=4)
            if params["mode"] == "fail":
                raise TrialFailed("failed on purpose")
            x = params["x"]
            return Result(x, 0.1, x, x, x, 0.1, x, x, n_params=10, fit_seconds=0.0, epochs=4,
                          extras={"history": {"val_accuracy": [x * (e + 1) / 4 for e in range(4)]}})
''')
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def _search(tmp_path: Path, data: Path, points: list[tuple[str, float]], *extra: str) -> list[str]:
    family = tmp_path / "steady.py"
    family.write_text(FAMILY)
    starts = "\n".join(f"  - {{mode: {m}, x: {x}}}" for m, x in points)
    space = tmp_path / "steady.yaml"
    space.write_text("objective: steady\nparams:\n  mode: {type: categorical, choices: [fail, gate, ok]}\n"
                     f"  x: {{type: float, low: 0.0, high: 1.0}}\nstart:\n{starts}\n")
    return [sys.executable, "-m", "bench.cli", "search", "steady", "--objective-file", f"{family}:Steady", "--space",
            str(space), "--study", "steady", "--trials", str(len(points)), "--sampler", "random", "--data", str(data),
            "--results", str(tmp_path / "results"), "--keep-top", "-1", *extra]


def _journal_study(tmp_path: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "results" / "optuna.journal")))
    return optuna.load_study(study_name="steady", storage=storage)


def assert_agree(study: optuna.Study, board: Leaderboard) -> None:
    """The leaderboard and the Optuna study agree trial for trial: one row per finished trial, same status and params,
    a complete row's accuracy is the trial's value, a pruned row's epochs its last reported step."""
    rows = {r["trial_number"]: r for r in board.query(study=study.study_name) if r["backend"] == "optuna"}
    finished = [t for t in study.get_trials() if t.state.name in STATES]
    assert sorted(rows) == [t.number for t in finished]
    for t in finished:
        row = rows[t.number]
        assert (row["status"], row["params"]) == (STATES[t.state.name], t.params), t.number
        if row["status"] == "complete":
            assert row["val_accuracy"] == pytest.approx(t.value)
        if row["status"] == "pruned":
            assert row["epochs"] == t.last_step and len(row["extras"]["history"]["val_accuracy"]) == t.last_step


def test_leaderboard_and_study_agree_trial_for_trial(tmp_path, tiny_mit8):
    points = [("ok", 0.9), ("ok", 0.8), ("fail", 0.99), ("ok", 0.1), ("ok", 0.85), ("ok", 0.05), ("fail", 0.98)]
    run = subprocess.run(_search(tmp_path, tiny_mit8, points, "--pruner", "asha"), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    study = _journal_study(tmp_path)
    board = Leaderboard(db_url(None, tmp_path / "results"))
    assert {STATES[t.state.name] for t in study.trials} == {"complete", "pruned", "failed"}
    assert_agree(study, board)

    # a re-run continues the study (rows untouched); with its journal gone, it refuses instead of replacing rows
    before = board.query(study="steady")
    (tmp_path / "results" / "optuna.journal").rename(tmp_path / "old.journal")
    again = subprocess.run(_search(tmp_path, tiny_mit8, points), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds 7 optuna rows of study 'steady'" in again.stderr
    assert "Traceback" not in again.stderr and board.query(study="steady") == before


def test_a_database_down_mid_search_loses_nothing_and_sync_fills_the_gap(tmp_path, tiny_mit8, own_postgres):
    """The leaderboard's PostgreSQL stops while the search runs: trials go on, their rows are kept with their Optuna
    trials, and `bench leaderboard --sync` writes them once the server is back."""
    url = own_postgres.url("")  # postgresql:// as the README writes it
    gate = tmp_path / "gate"
    env = {**os.environ, "STEADY_GATE": str(gate), "BENCH_DB_RETRY_SECONDS": "2"}
    points = [("ok", 0.3), ("gate", 0.4), ("ok", 0.5), ("fail", 0.6), ("ok", 0.7)]
    search = subprocess.Popen(_search(tmp_path, tiny_mit8, points, "--pruner", "none", "--db", url), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        board = Leaderboard(url)
        deadline = time.time() + 120
        while not board.query(study="steady") and time.time() < deadline:  # trial 0 is in, trial 1 waits at the gate
            time.sleep(0.5)
        assert len(board.query(study="steady")) == 1
        board.engine.dispose()
        own_postgres.stop()
        gate.touch()
        out, errors = search.communicate(timeout=240)
    finally:
        search.kill()
    assert search.returncode == 0, errors[-3000:]
    assert "leaderboard did not take its row" in errors and "bench leaderboard --sync" in errors
    study = _journal_study(tmp_path)
    assert sum(KEPT_ROW in t.user_attrs for t in study.trials) == 4  # trials 1-4 finished while it was down

    own_postgres.start()
    synced = CliRunner().invoke(app, ["leaderboard", "--sync", "--db", url, "--results", str(tmp_path / "results")])
    assert synced.exit_code == 0, synced.output
    assert "synced study steady: 4 rows written" in synced.output
    assert_agree(study, Leaderboard(url))
    again = CliRunner().invoke(app, ["leaderboard", "--sync", "--db", url, "--results", str(tmp_path / "results")])
    assert "synced study steady: 0 rows written" in again.output  # idempotent


def _result(acc: float) -> Result:
    return Result(acc, 0.1, acc, acc, acc, 0.1, acc, acc, n_params=100, fit_seconds=1.0, epochs=2)


def _config(tmp_path: Path, url: str) -> SearchConfig:
    return SearchConfig(objective="tinynet", study="rec", trials=3, db_url=url, results_dir=tmp_path / "results")


def test_rows_kept_while_postgresql_restarts_are_written_when_it_is_back(tmp_path, own_postgres):
    recorder = TrialRecorder(_config(tmp_path, own_postgres.url("")), "ray", retry_seconds=1)
    started = datetime.now(timezone.utc)
    assert recorder.complete(0, {"lr": 0.1}, _result(0.5), started)
    recorder.board.engine.dispose()
    own_postgres.stop()
    t0 = time.perf_counter()
    assert not recorder.pruned(1, {"lr": 0.2}, 2, started, [{"epoch": 0, "val_accuracy": 0.2}, {"epoch": 1, "val_accuracy": 0.3}])
    assert time.perf_counter() - t0 >= 0.75  # it retried with back-off before keeping the row
    kept = (tmp_path / "results" / "rec" / UNWRITTEN).read_text().splitlines()
    assert len(kept) == 1 and '"trial_number": 1' in kept[0]
    own_postgres.start()
    assert recorder.failed(2, {"lr": 0.3}, "boom", started)  # the database answers: the kept row goes in too
    rows = {r["trial_number"]: r for r in Leaderboard(own_postgres.url()).query(study="rec")}
    assert [rows[n]["status"] for n in (0, 1, 2)] == ["complete", "pruned", "failed"]
    assert rows[1]["epochs"] == 2 and rows[1]["extras"]["history"] == {"val_accuracy": [0.2, 0.3]}
    assert sync_files(Leaderboard(own_postgres.url()), tmp_path / "results") == 0  # already written: nothing twice


def test_a_locked_sqlite_file_is_waited_for(tmp_path):
    url = db_url(None, tmp_path / "results")
    recorder = TrialRecorder(_config(tmp_path, url), "optuna", retry_seconds=30)
    recorder.complete(0, {"lr": 0.1}, _result(0.5), datetime.now(timezone.utc))
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    threading.Timer(2.0, lock.rollback).start()
    assert recorder.complete(1, {"lr": 0.2}, _result(0.6), datetime.now(timezone.utc))
    assert sorted(r["trial_number"] for r in Leaderboard(url).query(study="rec")) == [0, 1]
    assert not (tmp_path / "results" / "rec" / UNWRITTEN).exists()


def test_postgresql_urls_as_the_readme_writes_them(tmp_path, postgres_url):
    """postgresql:// (no driver named) reaches the server through the installed driver, for the leaderboard and for
    Optuna's storage."""
    from bench.backends.optuna import make_storage

    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    assert driver_url(bare) == postgres_url and driver_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    Leaderboard(bare).query(study="none")
    storage = make_storage(SearchConfig(objective="tinynet", study="readme-url", trials=1, db_url=bare,
                                        results_dir=tmp_path, storage=bare))
    optuna.create_study(study_name="readme-url", storage=storage, load_if_exists=True)
    assert "readme-url" in optuna.get_all_study_names(postgres_url)


@pytest.mark.parametrize("command", ["search", "worker", "leaderboard"])
def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path, tiny_mit8, command):
    from conftest import _free_port

    url = f"postgresql://bench:secret@127.0.0.1:{_free_port()}/bench"  # nothing listens there
    args = {"search": ["search", "tinynet", "--trials", "1", "--storage", url, "--data", str(tiny_mit8)],
            "worker": ["worker", "--study", "s", "--storage", url, "--data", str(tiny_mit8)],
            "leaderboard": ["leaderboard", "--db", url]}[command]
    run = subprocess.run([sys.executable, "-m", "bench.cli", *args, "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("study ")]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database postgresql+psycopg2://bench:***@"), run.stderr
    assert "secret" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # Optuna's own thread, ending
def test_a_heartbeat_that_fails_is_retried_not_given_up(own_postgres):
    """Optuna's heartbeat thread ends at its first failed write, after which its live trial looks dead to the other
    workers; bench's storage keeps beating through a database restart."""
    import sqlalchemy as sa
    from optuna.storages._heartbeat import HeartbeatThread

    from bench.backends.optuna import PatientRDBStorage

    url = own_postgres.url()
    patient = PatientRDBStorage(url, heartbeat_interval=1, grace_period=2, engine_kwargs={"pool_pre_ping": True})
    plain = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2, engine_kwargs={"pool_pre_ping": True})
    trial = optuna.create_study(study_name="beat", storage=patient).ask()
    engine = sa.create_engine(url, pool_pre_ping=True)

    def last_beat():
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"),
                                {"t": trial._trial_id}).scalar()

    beats = [HeartbeatThread(trial._trial_id, patient), HeartbeatThread(trial._trial_id, plain)]
    for b in beats:
        b.start()
    time.sleep(1.5)
    before = last_beat()
    own_postgres.stop()
    time.sleep(3)  # beats fail meanwhile
    assert beats[0]._thread.is_alive() and not beats[1]._thread.is_alive()  # Optuna's own has given up
    own_postgres.start()
    time.sleep(3)
    assert last_beat() > before  # the patient one beats again
    for b in beats:
        b.join()
