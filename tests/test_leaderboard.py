from datetime import datetime, timezone

import pytest

import sqlalchemy as sa

from bench.leaderboard import Leaderboard, RowExists, TrialRecord, db_url, trials
from bench.objective import Result


def result(acc, n_params, loss=0.5):
    return Result(val_accuracy=acc, val_loss=loss, val_balanced_accuracy=acc, val_macro_f1=acc, test_accuracy=acc - 0.01,
                  test_loss=loss, test_balanced_accuracy=acc, test_macro_f1=acc, n_params=n_params, fit_seconds=1.0,
                  epochs=3, extras={"history": {"loss": [1.0, float("nan")]}})


def record(number, status="complete", res=None, study="s", params=None, **kw):
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return TrialRecord(study=study, objective="tinynet", backend="optuna", trial_number=number,
                       params=params or {"lr": 0.01 * (number + 1)},
                       status=status, seed=number, started_at=t, finished_at=t, result=res, **kw)


def exercise(board: Leaderboard, s: str = "board-test") -> None:
    """Every query is filtered by study: the database may be shared with other tests."""
    board.append(record(0, res=result(0.80, 50_000), study=s))
    board.append(record(1, res=result(0.85, 400_000), study=s))
    board.append(record(2, res=result(0.70, 5_000), study=s))
    board.append(record(3, status="failed", failure_reason="loss became NaN at epoch 2", study=s))
    board.append(record(4, status="pruned", failure_reason="pruned after epoch 2", n_params=1234, study=s))
    board.append(record(0, res=result(0.80, 50_000), study=s))  # the same row again (a retried write): a no-op
    with pytest.raises(RowExists, match="trial 0 of study .* already has a complete row"):
        board.append(record(0, status="failed", failure_reason="later", study=s))  # a row is never replaced
    # a failed trial run again under its own number (Ray's --resume): its new outcome takes the row, the failure is kept
    board.append(record(5, status="failed", failure_reason="Ray trial error: actor died", study=s))
    board.append(record(5, res=result(0.60, 9_000), study=s))
    rerun = board.row(s, "optuna", 5)
    assert rerun["status"] == "complete" and rerun["val_accuracy"] == pytest.approx(0.60)
    assert [e["reason"] for e in rerun["extras"]["earlier_failures"]] == ["Ray trial error: actor died"]
    with pytest.raises(RowExists, match="trial 5 .* already has a complete row"):
        board.append(record(5, status="failed", failure_reason="again", study=s))
    with pytest.raises(RowExists):  # other params: another trial, not a re-run
        board.append(record(3, res=result(0.9, 1), study=s, params={"lr": 1.0}))
    with board.engine.begin() as conn:  # the rest of the checks count five rows
        conn.execute(sa.delete(trials).where((trials.c.study == s) & (trials.c.trial_number == 5)))

    by_acc = board.query(study=s)
    assert [r["trial_number"] for r in by_acc] == [1, 0, 2, 3, 4]  # rows without accuracy come last
    assert by_acc[1]["val_accuracy"] == pytest.approx(0.80)
    assert [r["trial_number"] for r in board.query(study=s, sort="params", status="complete")] == [2, 0, 1]
    by_ratio = board.query(study=s, sort="ratio", top=1)[0]
    assert by_ratio["trial_number"] == 2 and by_ratio["ratio"] == pytest.approx(0.70 * 1e5 / 5_000)
    failed = board.query(study=s, status="failed")[0]
    assert failed["failure_reason"] == "loss became NaN at epoch 2" and failed["val_accuracy"] is None
    assert board.query(study=s, status="pruned")[0]["n_params"] == 1234
    assert by_acc[0]["extras"]["history"]["loss"] == [1.0, None]  # NaN stored as JSON null
    assert by_acc[0]["params"] == {"lr": 0.02} and by_acc[0]["started_at"].year == 2026
    assert s in board.studies()
    with pytest.raises(ValueError, match="sort must be one of"):
        board.query(sort="speed")


def test_sqlite_leaderboard(tmp_path):
    url = db_url(None, tmp_path)
    assert url == f"sqlite:///{tmp_path.resolve()}/leaderboard.db"
    exercise(Leaderboard(url))
    assert len(Leaderboard(url).query()) == 5  # persistent: a new connection sees the rows


def test_invalid_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status must be one of"):
        Leaderboard(db_url(None, tmp_path)).append(record(0, status="done"))


def test_postgresql_leaderboard(postgres_url):
    exercise(Leaderboard(postgres_url))


def test_an_old_trials_table_is_renamed_and_kept(tmp_path):
    import sqlalchemy as sa

    from bench.leaderboard import trials

    url = db_url(None, tmp_path)
    engine = sa.create_engine(url)
    old = trials.to_metadata(sa.MetaData(), name="trials")
    old.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.insert().values(**record(7, res=result(0.9, 1000), study="old").row()))
    engine.dispose()
    rows = Leaderboard(url).query(study="old")
    assert [r["trial_number"] for r in rows] == [7] and rows[0]["val_accuracy"] == 0.9
