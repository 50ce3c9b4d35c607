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
    epochs: int | None = None  # without a result: the epochs a pruned trial trained before it was stopped
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
            "epochs": self.epochs, "extras": _jsonable(self.extras),
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
        return driver_url(db)
    path = Path(db) if db else results_dir / "leaderboard.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


POSTGRES_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"))  # (module, SQLAlchemy dialect), preferred first


def driver_url(url: str) -> str:
    """A PostgreSQL URL with the driver that is installed: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3,
    and bench's `postgres` extra installs psycopg2. Other URLs, and URLs that name their driver, stay as they are.
    (Used for the leaderboard and for Optuna's storage alike.)"""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, dialect in POSTGRES_DRIVERS:
        if importlib.util.find_spec(module):
            return f"postgresql+{dialect}://{rest}"
    raise ValueError("a postgresql:// URL needs a PostgreSQL driver: pip install 'bench[postgres]' (psycopg2)")


class DatabaseUnreachable(ValueError):
    """A database that cannot be reached: one line, its password masked (a ValueError: the CLI exits 2 on it)."""

    def __init__(self, url: str, error: Exception):
        from bench.safe import mask

        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        super().__init__(mask(f"cannot reach the database {url}: {cause[0] if cause else type(error).__name__}"))


CONNECTION_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)  # server down, restarting, or a locked SQLite file


class RowExists(Exception):
    """The trial already has a different row: rows are never replaced (a re-run continues the numbering instead)."""

    def __init__(self, row: dict[str, Any]):
        self.row = row
        super().__init__(f"trial {row['trial_number']} of study '{row['study']}' ({row['backend']}) already has a "
                         f"{row['status']} row; it is kept")


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
        """Connects (and creates the table); DatabaseUnreachable when the server cannot be reached."""
        url = self.url = driver_url(url)
        try:
            self._connect(url)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnreachable(url, e) from None

    def _connect(self, url: str) -> None:
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

    def append(self, record: TrialRecord | dict[str, Any]) -> None:
        """Insert a trial's row (a TrialRecord, or its row()). A finished row is never replaced: the same row written
        again (a retry whose first commit did get through) is a no-op; a different one raises RowExists. The one
        exception is a failed trial run again under its own number (Ray's --resume re-runs errored trials): its new
        outcome takes the row, and the failures before it stay in extras["earlier_failures"]."""
        row = record.row() if isinstance(record, TrialRecord) else record
        try:
            with self.engine.begin() as conn:
                conn.execute(trials.insert().values(**row))
        except sa.exc.IntegrityError:
            old = self.row(row["study"], row["backend"], row["trial_number"])
            if old is None:  # not the one-row-per-trial constraint after all
                raise
            same_params = old["params"] == _jsonable(row["params"])
            if same_params and old["status"] == row["status"]:
                return
            if not (same_params and old["status"] == "failed"):
                raise RowExists(old) from None
            self._supersede_failed(old, row)

    def _supersede_failed(self, old: dict[str, Any], row: dict[str, Any]) -> None:
        earlier = [*(old["extras"] or {}).get("earlier_failures", []),
                   {"reason": old["failure_reason"], "finished_at": old["finished_at"].isoformat()}]
        values = {**row, "extras": _jsonable({**(row.get("extras") or {}), "earlier_failures": earlier})}
        with self.engine.begin() as conn:
            conn.execute(trials.update().where(trials.c.id == old["id"]).values(**values))

    def row(self, study: str, backend: str, trial_number: int) -> dict[str, Any] | None:
        key = (trials.c.study == study) & (trials.c.backend == backend) & (trials.c.trial_number == trial_number)
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(trials).where(key)).first()
        return dict(found._mapping) if found else None

    def trial_numbers(self, study: str, backend: str) -> set[int]:
        """The trial numbers that have a row."""
        q = sa.select(trials.c.trial_number).where((trials.c.study == study) & (trials.c.backend == backend))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(q)}

    def next_trial_number(self, study: str, backend: str) -> int:
        """One past the study's largest trial number for this backend (0 for a new study): where a new run starts."""
        return max(self.trial_numbers(study, backend), default=-1) + 1

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

    def row_by_id(self, row_id: int) -> dict[str, Any] | None:
        """The row whose id is row_id (the number `bench leaderboard` prints first), None when there is none."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(trials).where(trials.c.id == row_id)).first()
        return None if found is None else dict(found._mapping)

    def studies(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(trials.c.study).distinct().order_by(trials.c.study))]


@lru_cache(maxsize=8)
def shared(url: str) -> Leaderboard:
    """One Leaderboard (one connection pool) per URL in this process, for code that looks often (the search's sweep)."""
    return Leaderboard(url)
