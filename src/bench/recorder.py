"""The one writer of leaderboard rows: every backend stores its complete, pruned and failed trials through a
TrialRecorder, so every row has the same shape (one `history` shape: a dict of per-epoch lists, as Keras gives it).

No finished result is lost to the database: a write that fails on the connection (a locked SQLite file, a PostgreSQL
restart) is retried with back-off; if the database stays down, the row is kept (with the Optuna trial as a user
attribute, else in RESULTS/<study>/unwritten-rows.jsonl) and written later: by this process once the database answers
again, by the Optuna search's periodic sweep, or by `bench leaderboard --sync` (`sync_study`, `sync_files`).
A row is never replaced: a trial that already has a different row keeps it (Leaderboard.append raises RowExists).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from bench.leaderboard import CONNECTION_ERRORS, DatabaseUnreachable, Leaderboard, RowExists, TrialRecord, now
from bench.objective import Result
from bench.safe import mask

if TYPE_CHECKING:
    import optuna

    from bench.backends import SearchConfig

log = logging.getLogger(__name__)

KEPT_ROW = "leaderboard_row"  # the Optuna trial's user attribute that holds a row the database did not take
UNWRITTEN = "unwritten-rows.jsonl"  # in the study's run folder, for backends without an Optuna trial to hold it
RETRY_ENV = "BENCH_DB_RETRY_SECONDS"  # how long a write is retried before its row is kept for later


def retry_seconds() -> float:
    return float(os.environ.get(RETRY_ENV, "60"))  # a server restart fits in a minute


def history_of_curve(curve: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-epoch dicts [{"epoch": 0, "val_accuracy": ...}, ...] as Keras' shape {"val_accuracy": [...], ...}."""
    curve = list(curve)
    keys = sorted({k for e in curve for k in e if k != "epoch"})
    return {k: [e.get(k) for e in curve] for k in keys}


def backoff(total: float, first: float = 0.25, cap: float = 8.0) -> list[float]:
    """Waits between attempts that double from `first` up to `cap`, summing to about `total` seconds."""
    waits, wait = [], first
    while sum(waits) + wait <= total:
        waits.append(wait)
        wait = min(2 * wait, cap)
    return waits


def to_json(row: dict[str, Any]) -> str:
    return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})


def from_json(text: str) -> dict[str, Any]:
    row = json.loads(text)
    for key in ("started_at", "finished_at"):
        if row.get(key):
            row[key] = datetime.fromisoformat(row[key])
    return row


@dataclass
class TrialRecorder:
    """Writes one backend's rows of one study. `keep(row_json)` holds a row the database would not take (default: the
    study's unwritten-rows.jsonl); `for_trial` gives a copy whose rows go elsewhere (an Optuna trial's attribute)."""

    config: SearchConfig
    backend: str
    keep: Callable[[str], None] | None = None
    retry_seconds: float = field(default_factory=retry_seconds)
    board: Leaderboard | None = field(default=None, repr=False)
    unwritten: list[dict[str, Any]] = field(default_factory=list, repr=False)  # kept by this process, written when it can

    def for_trial(self, keep: Callable[[str], None]) -> TrialRecorder:
        return TrialRecorder(self.config, self.backend, keep, self.retry_seconds, self.board, self.unwritten)

    def complete(self, number: int, params: dict[str, Any], result: Result, started: datetime,
                 seed: int | None = None) -> bool:
        return self.write(self._record(number, params, "complete", started, seed, result=result))

    def pruned(self, number: int, params: dict[str, Any], epoch: int, started: datetime, curve=(),
               n_params: int | None = None, seed: int | None = None, reason: str | None = None) -> bool:
        """epoch: how many epochs the trial trained before it was stopped (stored in the row's `epochs`)."""
        return self.write(self._record(number, params, "pruned", started, seed, epochs=epoch, n_params=n_params,
                                       failure_reason=reason or f"pruned after epoch {epoch}",
                                       extras={"history": history_of_curve(curve)}))

    def failed(self, number: int, params: dict[str, Any], reason: str, started: datetime | None, curve=(),
               n_params: int | None = None, seed: int | None = None) -> bool:
        return self.write(self._record(number, params, "failed", started, seed, failure_reason=reason,
                                       n_params=n_params, extras={"history": history_of_curve(curve)}))

    def _record(self, number, params, status, started, seed, **kw) -> TrialRecord:
        c = self.config
        return TrialRecord(study=c.study, objective=c.objective, backend=self.backend, trial_number=number,
                           params=dict(params), status=status, seed=c.seed + number if seed is None else seed,
                           started_at=started or now(), finished_at=now(), **kw)

    def write(self, record: TrialRecord) -> bool:
        """Store the row, retrying while the database cannot be reached. True: the trial has its row (this one, or one
        written before, which is kept). False: the database stayed down, and the row was kept to be written later."""
        row = record.row()
        reason = self._insert(row, self.retry_seconds)
        if reason is None:
            self._write_unwritten()
            return True
        (self.keep or self._keep_in_file)(to_json(row))
        self.unwritten.append(row)
        log.warning(mask(f"trial {row['trial_number']}: the leaderboard did not take its row ({reason}); it is kept and "
                         f"written when the database is back, or by `bench leaderboard --sync`"))
        return False

    def _insert(self, row: dict[str, Any], retry_seconds: float) -> str | None:
        """None once the row is in (or the trial has a row already), else why it could not be written."""
        waits, why = backoff(retry_seconds), ""
        for attempt in range(len(waits) + 1):
            try:
                self.board = self.board or Leaderboard(self.config.db_url)
                self.board.append(row)
                return None
            except RowExists as e:
                log.warning(str(e))
                return None
            except (DatabaseUnreachable, *CONNECTION_ERRORS) as e:
                why = str(e).splitlines()[0]
                if attempt < len(waits):
                    time.sleep(waits[attempt])
            except Exception as e:  # noqa: BLE001 - a value the database refuses: no retry helps, but keep the row
                return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return why

    def _write_unwritten(self) -> None:
        """The database answers again: write the rows this process had to keep (one attempt each)."""
        while self.unwritten and self._insert(self.unwritten[0], 0) is None:
            self.unwritten.pop(0)

    def _keep_in_file(self, row_json: str) -> None:
        path = Path(self.config.results_dir) / self.config.study / UNWRITTEN
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one line per row; several workers may append
            f.write(row_json + "\n")


def sync_study(board: Leaderboard, study: optuna.Study, objective: str, seed: int = 0,
               kept_only: bool = False) -> tuple[int, list[int]]:
    """Write the rows an Optuna study's finished trials lack in the leaderboard. A trial's kept row is written as it
    is; a failed or pruned trial without one gets its row from the trial itself (unless kept_only: the search's sweep,
    which must not race the worker that is writing that row). Returns (rows written, complete trials with no row that
    cannot be rebuilt)."""
    import optuna

    states = optuna.trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.FAIL))
              if not kept_only or KEPT_ROW in t.user_attrs]
    if not trials:
        return 0, []
    have = board.trial_numbers(study.study_name, "optuna")
    written, lost = 0, []
    for t in trials:
        if t.number in have:
            continue
        if KEPT_ROW in t.user_attrs:
            row = from_json(t.user_attrs[KEPT_ROW])
        elif t.state == states.COMPLETE:
            lost.append(t.number)
            continue
        else:
            pruned = t.state == states.PRUNED
            row = TrialRecord(
                study=study.study_name, objective=objective, backend="optuna", trial_number=t.number, params=t.params,
                status="pruned" if pruned else "failed", seed=seed + t.number, started_at=t.datetime_start or now(),
                finished_at=t.datetime_complete or now(), epochs=t.last_step if pruned else None,
                failure_reason=(f"pruned after epoch {t.last_step}" if pruned
                                else t.user_attrs.get("failure_reason") or "failed (its row was rebuilt from the Optuna trial)"),
                extras={"history": {"val_accuracy": [t.intermediate_values[s] for s in sorted(t.intermediate_values)]}},
            ).row()
        try:
            board.append(row)
            written += 1
        except RowExists as e:
            log.warning(str(e))
    return written, lost


def sync_files(board: Leaderboard, results_dir: Path) -> int:
    """Write the rows kept in RESULTS/*/unwritten-rows.jsonl that the leaderboard lacks; returns how many."""
    written = 0
    for path in sorted(Path(results_dir).glob(f"*/{UNWRITTEN}")):
        for line in path.read_text().splitlines():
            row = from_json(line) if line.strip() else None
            if row is None or row["trial_number"] in board.trial_numbers(row["study"], row["backend"]):
                continue
            try:
                board.append(row)
                written += 1
            except RowExists as e:
                log.warning(str(e))
    return written
