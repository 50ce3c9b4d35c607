"""The study page: the study's leaderboard rows → bench.report.metrics → figures → page.

Sections: summary (counts of complete / pruned / failed, wall time); optimisation history; Pareto front of validation
accuracy against parameters (bench.pareto / bench.plots); the accuracy-to-parameter ratio ranking; parameter
importances (Optuna's fANOVA on the study loaded from its storage, else on a study rebuilt from the leaderboard rows);
parallel coordinates; why trials were pruned or failed.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench.leaderboard import Leaderboard
from bench.report import figures, metrics
from bench.report.page import Page, escape
from bench.report.trial import ReportError


def study_report(board: Leaderboard, study: str, out: Path, results: Path | None = None, storage: str | None = None,
                 png: bool = True) -> tuple[list[Path], dict[str, float]]:
    """Write the study page to out; returns (written paths, seconds per stage)."""
    from bench.pareto import pareto_front
    from bench.plots import pareto_figure

    tick = time.perf_counter()
    rows = board.query(study=study, sort="accuracy")
    if not rows:
        raise ReportError(f"no trials in study '{study}' (studies: {', '.join(board.studies()) or 'none'})")
    summary = metrics.study_summary(study, rows)
    complete = [r for r in rows if r["status"] == "complete"]
    page = Page(f"bench report: study {study}")
    page.section("summary", "Summary")
    page.table([summary], fmt={"trial time (sum) h": ".2f", "wall time h": ".2f", "best val acc": ".3f", "its test acc": ".3f"})
    page.text("wall time: first trial's start to the last trial's end; trial time: the sum of every trial's own duration")

    page.section("history", "Optimisation history")
    page.figure("history", figures.history_figure(rows))

    page.section("pareto", "Pareto front: validation accuracy vs parameters")
    if complete:
        page.figure("pareto", pareto_figure(complete, "val_accuracy"))
        page.table([{"trial": r["trial_number"], "val acc": r["val_accuracy"], "test acc": r["test_accuracy"],
                     "params": r["n_params"], "ratio": r["ratio"]} for r in pareto_front(complete, "val_accuracy")],
                   fmt={"val acc": ".3f", "test acc": ".3f", "ratio": ".2f"})

    page.section("ratio", "Accuracy-to-parameter ratio ranking", "the paper's ratio: validation accuracy x 1e5 / parameters")
    ranked = metrics.ratio_ranking(rows)
    page.table([{"rank": i + 1, "trial": r["trial_number"], "ratio": r["ratio"], "val acc": r["val_accuracy"],
                 "test acc": r["test_accuracy"], "params": r["n_params"]} for i, r in enumerate(ranked)],
               fmt={"ratio": ".2f", "val acc": ".3f", "test acc": ".3f"})
    if ranked:
        page.figure("ratio", figures.ratio_figure(ranked))
    timings = {"rows": time.perf_counter() - tick}

    tick = time.perf_counter()
    imp, source = metrics.param_importances(rows, metrics.load_optuna_study(study, storage, results))
    timings["importances"] = time.perf_counter() - tick
    page.section("importance", "Parameter importances", f"fANOVA (optuna.importance) of validation accuracy, on {escape(source)}")
    page.figure_or_text("importance", figures.importance_figure(imp) if imp else None,
                        "not available: needs at least two complete trials whose params and accuracies vary")

    page.section("parallel", "Parallel coordinates")
    varying = list(imp) or sorted({k for r in complete for k in r["params"]})
    page.figure_or_text("parallel", figures.parallel_figure(metrics.parallel_dimensions(rows, varying)) if len(complete) >= 2
                        else None, "not available: fewer than two complete trials")

    page.section("pruned-failed", "Pruned and failed trials")
    page.text(f"{summary['pruned']} pruned, {summary['failed']} failed of {len(rows)} trials")
    at = metrics.pruned_epochs(rows)
    if at:
        page.table([{"pruned after epoch": e, "trials": n} for e, n in at.items()])
    page.table([{"failure reason": k, "trials": n} for k, n in metrics.failure_reasons(rows)])
    tick = time.perf_counter()
    written = page.write(out, png=png)
    timings["write"] = time.perf_counter() - tick
    return written, timings
