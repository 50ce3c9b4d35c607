"""The persistent leaderboard: one row per trial, in a real database (SQLite file by default, any SQLAlchemy URL).

It is the one source for the `leaderboard`, `plot` and `report` commands.
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.objective import Result

STATUSES = ("complete", "pruned", "failed")
RESULT_COLUMNS = (
    "val_accuracy", "val_loss", "val_balanced_accuracy", "val_macro_f1",
    "test_accuracy", "test_loss", "test_balanced_accuracy", "test_macro_f1",
    "ratio", "test_ratio", "fit_seconds",
)
SORTS = {"accuracy": ("val_accuracy", True), "ratio": ("ratio", True), "params": ("n_params", False),
         "test_accuracy": ("test_accuracy", True), "time": ("fit_seconds", False)}

metadata = sa.MetaData()
trials = sa.Table(
    "leaderboard", metadata,  # not "trials": Optuna's own tables may share the database
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(200), nullable=False, index=True),
    sa.Column("objective", sa.String(100), nullable=False, index=True),
    sa.Column("backend", sa.String(50), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("failure_reason", sa.Text),
    *(sa.Column(c, sa.Float) for c in RESULT_COLUMNS),
    sa.Column("n_params", sa.BigInteger),
    sa.Column("epochs", sa.Integer),
    sa.Column("extras", sa.JSON),
    sa.Column("seed", sa.Integer),
    sa.Column("code_version", sa.String(100)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("study", "backend", "trial_number", name="one_row_per_trial"),
)


@dataclass
class TrialRecord:
    study: str
    objective: str
    backend: str
    trial_number: int
    params: dict[str, Any]
    status: str
    seed: int
    started_at: datetime
    finished_at: datetime
    result: Result | None = None
    failure_reason: str | None = None
    n_params: int | None = None  # known without a result for pruned trials
    extras: dict[str, Any] = field(default_factory=dict)
    code_version: str = field(default_factory=lambda: code_version())

    def row(self) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        row = {
            "study": self.study, "objective": self.objective, "backend": self.backend,
            "trial_number": self.trial_number, "params": _jsonable(self.params), "status": self.status,
            "failure_reason": self.failure_reason, "seed": self.seed, "code_version": self.code_version,
            "started_at": self.started_at, "finished_at": self.finished_at, "n_params": self.n_params,
            "extras": _jsonable(self.extras),
        }
        if self.result is not None:
            r = self.result.as_dict()
            row.update({c: _finite(r[c]) for c in RESULT_COLUMNS})
            row.update(n_params=r["n_params"], epochs=r["epochs"], extras=_jsonable({**r["extras"], **self.extras}))
        return row


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _jsonable(value):
    """Plain JSON types only, with NaN/inf as null (strict JSON; PostgreSQL refuses NaN in JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the checkout bench runs from (with +dirty), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return version("bench")


def now() -> datetime:
    return datetime.now(timezone.utc)


def db_url(db: str | None, results_dir: Path) -> str:
    """A URL as given, a bare path as a SQLite file, nothing as results/leaderboard.db."""
    if db and "://" in db:
        return db
    path = Path(db) if db else results_dir / "leaderboard.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def _rename_old_table(engine) -> None:
    """Databases written before the table was renamed keep their rows in `trials` (not Optuna's table of that name):
    rename it, replacing an empty `leaderboard` that a newer bench may have created beside it."""
    inspector = sa.inspect(engine)
    names = inspector.get_table_names()
    if "trials" not in names or not {"study", "objective", "backend", "val_accuracy"} <= {c["name"] for c in inspector.get_columns("trials")}:
        return
    with engine.begin() as conn:
        if "leaderboard" in names:
            if conn.execute(sa.text("SELECT COUNT(*) FROM leaderboard")).scalar():
                return
            conn.execute(sa.text("DROP TABLE leaderboard"))
        conn.execute(sa.text("ALTER TABLE trials RENAME TO leaderboard"))


class Leaderboard:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            # several local workers append at once: WAL plus a generous lock timeout
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA journal_mode=WAL"))
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        _rename_old_table(self.engine)
        try:
            metadata.create_all(self.engine)
        except sa.exc.DatabaseError:  # another worker created the table between the check and the CREATE
            if "leaderboard" not in sa.inspect(self.engine).get_table_names():
                raise

    def append(self, record: TrialRecord) -> None:
        """Insert a trial's row, or replace it when the same (study, backend, trial) is written again."""
        row = record.row()
        key = (trials.c.study == row["study"]) & (trials.c.backend == row["backend"]) & (trials.c.trial_number == row["trial_number"])
        with self.engine.begin() as conn:
            conn.execute(trials.delete().where(key))
            conn.execute(trials.insert().values(**row))

    def query(self, objective: str | None = None, study: str | None = None, status: str | None = None,
              sort: str = "accuracy", top: int | None = None) -> list[dict[str, Any]]:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {sorted(SORTS)}, got {sort!r}")
        column, descending = SORTS[sort]
        q = sa.select(trials)
        if objective:
            q = q.where(trials.c.objective == objective)
        if study:
            q = q.where(trials.c.study == study)
        if status:
            q = q.where(trials.c.status == status)
        col = trials.c[column]
        q = q.order_by(col.is_(None), col.desc() if descending else col.asc(), trials.c.id)
        if top:
            q = q.limit(top)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def row(self, row_id: int) -> dict[str, Any] | None:
        """The row whose id is row_id (the number `bench leaderboard` prints first), None when there is none."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(trials).where(trials.c.id == row_id)).first()
        return None if found is None else dict(found._mapping)

    def studies(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(trials.c.study).distinct().order_by(trials.c.study))]

