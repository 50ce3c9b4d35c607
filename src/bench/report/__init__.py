"""`bench report`: one self-contained HTML page per trial or per study (plotly.js inlined once), a PNG of each figure
beside it when chromium is installed.

Three steps, one module each, the way Optuna's visualization keeps `_get_..._info` apart from drawing:
  metrics  the data: ROC, confusion, per-class scores, study summaries, importances (numbers and records only)
  figures  the drawing: plotly figures from those records (plotly imported inside each function)
  page     the HTML: sections, escaped tables, the figures; PNGs through bench.plots.write_pngs
and the two pages that wire them: trial.py (a row and its artifacts, bench.artifacts) and study.py (a study's rows).
Rows come from bench.leaderboard only; no SQL here.
"""
from bench.report.metrics import binary_roc, confusion, history_of, per_class, pick_examples, roc_ovr
from bench.report.study import study_report
from bench.report.trial import ReportError, artifacts_folder, find_row, trial_report

__all__ = ["ReportError", "artifacts_folder", "binary_roc", "confusion", "find_row", "history_of", "per_class",
           "pick_examples", "roc_ovr", "study_report", "trial_report"]
