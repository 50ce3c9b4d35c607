"""Chaos: two workers on one study, a random one SIGKILLed every 20-60 s and started again; then what was lost.

    python benchmarks/chaos.py [--minutes 10] [--space tinynet_quick] [--fix KEY=VALUE,...] [--data ROOT]
                               [--storages journal,postgresql] [--postgres URL] [--results DIR]

For each storage: the Optuna journal file (two `bench search` processes on one study), and PostgreSQL (`bench search
--storage URL` and a `bench worker`; a throw-away server from Debian's packages unless --postgres gives one). A killed
worker's process group goes (its trial processes too); the same command is started again at once. After --minutes the
workers are stopped, the trials a kill left RUNNING are swept the way a next run would (fail_orphans; stale heartbeats
for PostgreSQL), and it prints, per storage:
  finished   trials the study holds as complete / pruned / failed
  lost       finished trials with no leaderboard row, plus trials still RUNNING after the sweep
  duplicate  leaderboard rows beyond one per (study, backend, trial)
  differ     rows whose status, params or accuracy differ from the Optuna trial, or with no trial at all
The last three must be 0. Honours /tmp/quiet: waits while it exists before each run.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy as sa

from bench.leaderboard import Leaderboard, db_url, trials as leaderboard_table

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
HEARTBEAT = 5  # seconds, for PostgreSQL: a killed worker's trial is failed after two silent beats


def _wait_quiet() -> None:
    while Path("/tmp/quiet").exists():
        time.sleep(15)


def _throwaway_postgres() -> tuple[str, callable]:
    """A PostgreSQL server of this run's own (as tests/conftest.py starts one); returns (URL, stop)."""
    bindir = max(Path("/usr/lib/postgresql").glob("*/bin"))
    folder = Path(tempfile.mkdtemp(prefix="bench-chaos-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "bench"],
                   check=True, capture_output=True)
    subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-o",
                             f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(run_as + [str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

    return f"postgresql://bench@127.0.0.1:{port}/postgres", stop


def _commands(args, storage: str, results: Path, url: str | None) -> list[list[str]]:
    base = [sys.executable, "-m", "bench.cli"]
    common = ["--data", args.data] if args.data else []
    search = [*base, "search", args.objective, "--space", args.space, "--study", "chaos", "--trials", "100000",
              "--results", str(results), "--seed", "0", *common]
    if args.fix:
        search += ["--fix", args.fix]
    if storage == "journal":
        return [search, search]  # two searches on one journal: each is a worker of the study
    db = ["--storage", url, "--heartbeat", str(HEARTBEAT)]
    return [search + db, [*base, "worker", "--study", "chaos", "--results", str(results), *db, *common]]


def _start(cmd: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(["nice", "-n", "19", *cmd], stdout=log, stderr=log, start_new_session=True)


def _kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def chaos(args, storage: str) -> dict[str, int]:
    results = Path(args.results) / storage
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    url, stop_pg = (args.postgres, None) if args.postgres or storage == "journal" else _throwaway_postgres()
    rng = random.Random(args.seed)
    log = open(results / "workers.log", "ab")
    try:
        cmds = _commands(args, storage, results, url)
        procs = [_start(cmds[0], log)]
        time.sleep(20 if storage == "postgresql" else 1)  # the search creates the study the worker joins
        procs.append(_start(cmds[1], log))
        end, kills = time.time() + 60 * args.minutes, 0
        while time.time() < end:
            time.sleep(min(rng.uniform(20, 60), max(0.0, end - time.time())))
            if time.time() >= end:
                break
            victim = rng.randrange(2)
            _kill(procs[victim])
            procs[victim].wait()
            kills += 1
            procs[victim] = _start(cmds[victim], log)
        for p in procs:  # Ctrl-C, as a user stops a search: trials in flight are stored as interrupted
            _kill(p, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                _kill(p)
                p.wait()
        return {"kills": kills, **_account(storage, results, url)}
    finally:
        log.close()
        if stop_pg:
            stop_pg()


def _account(storage: str, results: Path, url: str | None) -> dict[str, int]:
    from bench.backends import SearchConfig
    from bench.backends.optuna import fail_orphans, make_storage

    config = SearchConfig(objective="", study="chaos", trials=0, db_url=db_url(url, results), results_dir=results,
                          storage=url if storage == "postgresql" else None, heartbeat=HEARTBEAT)
    study = optuna.load_study(study_name="chaos", storage=make_storage(config))
    config.objective = study.user_attrs.get("objective", "")
    fail_orphans(config, study)  # what the next run would do with the trials a kill left RUNNING
    if storage == "postgresql":
        time.sleep(2 * HEARTBEAT + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    board = Leaderboard(config.db_url)
    rows = {r["trial_number"]: r for r in board.query(study="chaos") if r["backend"] == "optuna"}
    finished = [t for t in trials if t.state.name in STATES]
    running = [t for t in trials if t.state.name == "RUNNING"]
    lost = sum(t.number not in rows for t in finished) + len(running)
    by_number = {t.number: t for t in trials}
    differ = 0
    for number, row in rows.items():
        t = by_number.get(number)
        same_params = all(row["params"].get(k) == v for k, v in t.params.items()) if t else False  # rows add fixed ones
        if t is None or t.state.name not in STATES or STATES[t.state.name] != row["status"] or not same_params:
            differ += 1
        elif row["status"] == "complete" and abs(row["val_accuracy"] - t.values[0]) > 1e-9:
            differ += 1
    key = (leaderboard_table.c.study, leaderboard_table.c.backend, leaderboard_table.c.trial_number)
    with board.engine.connect() as conn:
        duplicate = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.literal_column("n") - 1), 0)).select_from(
            sa.select(sa.func.count().label("n")).where(leaderboard_table.c.study == "chaos").group_by(*key).subquery()
        )).scalar()
    counts = {s: sum(STATES[t.state.name] == s for t in finished) for s in STATES.values()}
    return {"finished": len(finished), **counts, "lost": lost, "duplicate": int(duplicate), "differ": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--objective", default="tinynet")
    parser.add_argument("--space", default="tinynet_quick")
    parser.add_argument("--fix", help="params fixed for the run, as bench search --fix (e.g. input_size=32,epochs=2)")
    parser.add_argument("--data")
    parser.add_argument("--storages", default="journal,postgresql")
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of a throw-away server")
    parser.add_argument("--results", default="results/chaos")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill schedule")
    args = parser.parse_args()
    for storage in args.storages.split(","):
        _wait_quiet()
        start = time.perf_counter()
        r = chaos(args, storage)
        print(f"{storage:10s} {args.minutes:g} min, {r['kills']} kills: finished {r['finished']} ({r['complete']} complete, "
              f"{r['pruned']} pruned, {r['failed']} failed) | lost {r['lost']} | duplicate rows {r['duplicate']} | "
              f"rows differing from the backend {r['differ']}  [{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
