"""`bench confirm`: re-run a study's best configurations over several training seeds before trusting its ranking.

One trial is one draw of the training noise (initial weights, batch order, dropout, augmentation). On MIT8 two transfer
configurations swapped places between seeds (search_spaces/transfer_best.yaml), so a search's winner deserves a check.
Each of the study's `top` best complete configurations (by validation accuracy, distinct params) runs `seeds` times as a
fixed space, in a study of its own, `<study>-confirm-<trial>` (`<study>-confirm-<backend>-<trial>` for a trial
found by ray or kerastuner). Trial seeds are seed, seed+1, ...; the validation split
is the one `seed` makes, the same for every configuration. Runs go through the Optuna backend into the leaderboard, so
a re-run resumes and finished runs are not trained again. Configurations are ranked by mean validation accuracy;
test accuracy is shown, never used to rank.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Confirmed:
    """One configuration of the study, re-run over seeds."""

    trial_number: int  # the study's trial it came from
    study: str  # where its runs are stored
    params: dict[str, Any]
    n_params: int | None
    val: list[float]
    test: list[float]
    fit_seconds: list[float]
    failed: list[str]

    @property
    def mean_val(self) -> float:
        return statistics.fmean(self.val) if self.val else float("nan")


def candidates(rows: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The `top` best complete rows by validation accuracy, one per distinct configuration."""
    chosen, seen = [], set()
    for row in sorted((r for r in rows if r["status"] == "complete"), key=lambda r: -r["val_accuracy"]):
        key = repr(sorted(row["params"].items()))
        if key not in seen:
            seen.add(key)
            chosen.append(row)
    return chosen[:top]


def confirm_study(study: str, top: int, seeds: int, seed: int, results: Path, db: str | None, data_root: Path,
                  backend: str | None = None, log: Callable[[str], None] = print, progress: Callable[[], Any] | None = None) -> list[Confirmed]:
    """Re-run the study's best configurations (see the module's docstring); best mean validation accuracy first.
    progress: makes a fresh bench.progress.SearchProgress for each configuration's runs."""
    from bench.backends import SearchConfig, get_backend
    from bench.leaderboard import Leaderboard, db_url
    from bench.space import SearchSpace

    url = db_url(db, results)
    board = Leaderboard(url)
    best = candidates([r for r in board.query(study=study) if backend in (None, r["backend"])], top)
    if not best:
        of = f" of backend {backend}" if backend else ""
        raise ValueError(f"study '{study}' has no complete trial{of} in {url}")
    confirmed = []
    for i, row in enumerate(best):
        # two backends number their trials each from 0: a configuration found by another than Optuna says which
        of = "" if row["backend"] == "optuna" else f"{row['backend']}-"
        name = f"{study}-confirm-{of}{row['trial_number']}"
        log(f"{i + 1}/{len(best)}: {study} #{row['trial_number']} (val {row['val_accuracy']:.3f}) over {seeds} seeds "
            f"-> study {name}")
        space = SearchSpace.from_dict({"objective": row["objective"], "params": row["params"]}, source=f"{study} #{row['trial_number']}")
        config = SearchConfig(objective=row["objective"], study=name, trials=seeds, db_url=url, results_dir=results,
                              seed=seed, pruner="none", data_root=str(data_root))
        try:
            get_backend("optuna").run(space, config, progress=progress() if progress else None)
        except ValueError as e:  # every run fails alike: the failed rows say why
            log(f"{name}: {e}")
        runs = sorted(board.query(study=name), key=lambda r: r["trial_number"])
        done = [r for r in runs if r["status"] == "complete"]
        confirmed.append(Confirmed(
            row["trial_number"], name, row["params"], row["n_params"], [r["val_accuracy"] for r in done],
            [r["test_accuracy"] for r in done], [r["fit_seconds"] for r in done],
            [r["failure_reason"] or "" for r in runs if r["status"] == "failed"],
        ))
    return sorted(confirmed, key=lambda c: (not c.val, -c.mean_val if c.val else 0.0))


def spread(values: list[float]) -> str:
    """mean ± sample standard deviation, to 3 places."""
    if not values:
        return ""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"
