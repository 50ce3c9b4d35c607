"""The data step of `bench report`: plain numbers and records from predictions and leaderboard rows, no plotly, no HTML.

The classification metrics are tested against scikit-learn (tests/test_report.py); the study's records feed both the
page's tables and the figures (bench.report.figures).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# --- one trial's predictions ---


def binary_roc(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(fpr, tpr, auc) of a binary problem, thresholds at every distinct score; ties handled as one step."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


def roc_ovr(y_true: np.ndarray, proba: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC of every class: (fpr, tpr, auc); a class absent from y_true gets auc NaN."""
    out = []
    for c in range(proba.shape[1]):
        pos = np.asarray(y_true) == c
        if pos.all() or not pos.any():
            out.append((np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")))
        else:
            out.append(binary_roc(pos, proba[:, c]))
    return out


def confusion(y_true: np.ndarray, pred: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, row-normalised): rows are true classes, columns predicted."""
    counts = np.zeros((n, n), np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(pred)), 1)
    norm = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    return counts, norm


def per_class(y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """One record per class: precision, recall, F1 and support."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=np.arange(len(classes)), zero_division=0)
    return [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)]


def pick_examples(y_true: np.ndarray, proba: np.ndarray) -> list[tuple[int, int, bool]]:
    """Per class: its most confident correct test image and its most confident mistake, as (index, class, correct)."""
    pred = proba.argmax(axis=1)
    picks = []
    for c in range(proba.shape[1]):
        right = np.flatnonzero((y_true == c) & (pred == c))
        wrong = np.flatnonzero((y_true == c) & (pred != c))
        if len(right):
            picks.append((int(right[np.argmax(proba[right, c])]), c, True))
        if len(wrong):
            picks.append((int(wrong[np.argmax(proba[wrong, pred[wrong]])]), c, False))
    return picks


def activation_record(stats: dict[str, dict[str, Any]], batch: int, epoch: int) -> dict[str, Any]:
    """Statistics measured once on a saved model (bench.artifacts.activation_stats), in the shape of the record
    written during training (bench.artifacts.activation_callback): one epoch, histograms of the trained net only."""
    return {"batch": batch, "epochs": [epoch],
            "layers": {n: {k: [s[k]] for k in ("mean", "std", "zero_fraction")} for n, s in stats.items()},
            "hist_last": {n: s["hist"] for n, s in stats.items()}}


def activation_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer: the fraction of zeros at initialisation and trained, the trained mean and standard deviation."""
    return [{"layer": n, "zeros at init": s["zero_fraction"][0], "zeros trained": s["zero_fraction"][-1],
             "mean trained": s["mean"][-1], "std trained": s["std"][-1]} for n, s in record["layers"].items()]


# --- leaderboard rows ---


def history_of(row: dict[str, Any]) -> dict[str, list[float]]:
    """Per-epoch curves as lists, as every row holds them since bench.recorder (older pruned/failed rows hold a list of
    per-epoch dicts, read here too)."""
    h = (row.get("extras") or {}).get("history") or {}
    if isinstance(h, list):
        keys = sorted({k for e in h for k in e if k != "epoch"})
        return {k: [e.get(k) for e in h] for k in keys}
    return {k: list(v) for k, v in h.items() if isinstance(v, list)}


def last_val_accuracy(row: dict[str, Any]) -> float | None:
    """The validation accuracy of the row's last epoch (what a pruned trial reached), None without a curve."""
    h = history_of(row).get("val_accuracy") or []
    return h[-1] if h else None


def best_so_far(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(trial numbers, best validation accuracy up to each) over the complete rows, in trial order."""
    done = sorted((r for r in rows if r["status"] == "complete" and r.get("val_accuracy") is not None),
                  key=lambda r: r["trial_number"])
    best, xs, ys = -1.0, [], []
    for r in done:
        best = max(best, r["val_accuracy"])
        xs.append(r["trial_number"])
        ys.append(best)
    return xs, ys


def study_summary(study: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One record: counts per status, summed trial time and wall time (hours), the best trial on validation.
    rows: the study's rows sorted by validation accuracy (Leaderboard.query's default)."""
    counts = Counter(r["status"] for r in rows)
    durations = [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows if r.get("finished_at") and r.get("started_at")]
    span = (max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)).total_seconds() if durations else 0.0
    best = next((r for r in rows if r["status"] == "complete"), None)
    return {"study": study, "objective": rows[0]["objective"], "trials": len(rows), "complete": counts["complete"],
            "pruned": counts["pruned"], "failed": counts["failed"], "trial time (sum) h": sum(durations) / 3600,
            "wall time h": span / 3600, "best val acc": best and best["val_accuracy"],
            "its test acc": best and best["test_accuracy"], "best trial": best and best["trial_number"]}


def ratio_ranking(rows: list[dict[str, Any]], top: int = 15) -> list[dict[str, Any]]:
    """The complete rows with the highest accuracy-to-parameter ratio, best first."""
    return sorted((r for r in rows if r["status"] == "complete" and r.get("ratio") is not None), key=lambda r: -r["ratio"])[:top]


def pruned_epochs(rows: list[dict[str, Any]]) -> dict[int, int]:
    """{epoch: trials pruned after it}. The epoch is the row's `epochs` column, the epochs it trained (bench.recorder
    stores it as data), else, for rows written before, the number in its reason ("pruned after epoch N")."""
    at: Counter[int] = Counter()
    for r in rows:
        if r["status"] != "pruned":
            continue
        epoch = r.get("epochs")
        if epoch is None and (m := re.search(r"epoch (\d+)", r.get("failure_reason") or "")):
            epoch = m.group(1)
        if epoch is not None:
            at[int(epoch)] += 1
    return dict(sorted(at.items()))


def failure_reasons(rows: list[dict[str, Any]], top: int = 15) -> list[tuple[str, int]]:
    """The most common reasons of the failed rows (first 160 characters) with their counts."""
    return Counter((r.get("failure_reason") or "")[:160] for r in rows if r["status"] == "failed").most_common(top)


# --- parameter importances ---


def load_optuna_study(study: str, storage: str | None, results: Path | None):
    """The Optuna study from --storage, else RESULTS/optuna.journal; None if it is not there."""
    import optuna

    from bench.backends.optuna import is_database_url, journal_storage
    from bench.leaderboard import CONNECTION_ERRORS, DatabaseUnreachable, driver_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        storage = journal_storage(Path(results or "results"), create=False)
        if storage is None:
            return None
    elif is_database_url(storage):  # the installed driver, and a database that is down as one line (bench.leaderboard)
        url = driver_url(storage)
        try:
            storage = optuna.storages.RDBStorage(url)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnreachable(url, e) from None
    try:
        return optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return None


def study_from_rows(rows: list[dict[str, Any]]):
    """An in-memory Optuna study holding the complete rows (distributions inferred from the values seen)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = [r for r in rows if r["status"] == "complete" and r.get("val_accuracy") is not None]
    dists = {}
    for name in sorted({k for r in done for k in r["params"]}):
        values = [r["params"].get(name) for r in done]
        if any(v is None for v in values) or len({json.dumps(v, default=str) for v in values}) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if all(isinstance(v, int) for v in values):
                dists[name] = optuna.distributions.IntDistribution(min(values), max(values))
            else:
                dists[name] = optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
        else:
            choices = sorted({v if isinstance(v, (bool, int, float, str)) else str(v) for v in values}, key=str)
            dists[name] = optuna.distributions.CategoricalDistribution(choices)
    study = optuna.create_study(direction="maximize")
    for r in done:
        p = {n: (r["params"][n] if isinstance(r["params"][n], (bool, int, float, str)) else str(r["params"][n])) for n in dists}
        p = {n: float(v) if isinstance(dists[n], optuna.distributions.FloatDistribution) else v for n, v in p.items()}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=r["val_accuracy"]))
    return study


def param_importances(rows: list[dict[str, Any]], study=None) -> tuple[dict[str, float], str]:
    """fANOVA importances of the params for validation accuracy, and where they were computed from: `study` (the
    Optuna study in its storage) when it has two complete trials, else a study rebuilt from the leaderboard rows."""
    import optuna

    source = "the Optuna study in its storage"
    complete = [t for t in (study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if study else [])]
    if len(complete) < 2:
        study, source = study_from_rows(rows), "a study rebuilt from the leaderboard rows"
        complete = study.trials
    if len(complete) < 2:
        return {}, source
    multi = len(study.directions) > 1
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=(lambda t: t.values[0]) if multi else None)
    except (ValueError, RuntimeError) as e:
        return {}, f"{source} (not computable: {e})"
    return dict(imp), source


def parallel_dimensions(rows: list[dict[str, Any]], order: list[str], most: int = 10) -> list[dict[str, Any]]:
    """Axes of a parallel-coordinates plot over the complete rows: up to `most` params (in `order`) that every one of
    them holds, categorical ones as indices with their labels, then validation accuracy."""
    done = [r for r in rows if r["status"] == "complete" and r.get("val_accuracy") is not None]
    names = [n for n in order if all(n in r["params"] for r in done)][:most]
    dims = []
    for n in names:
        values = [r["params"][n] for r in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dims.append(dict(label=n, values=values))
        else:
            cats = sorted({str(v) for v in values})
            dims.append(dict(label=n, values=[cats.index(str(v)) for v in values], tickvals=list(range(len(cats))), ticktext=cats))
    dims.append(dict(label="val accuracy", values=[r["val_accuracy"] for r in done]))
    return dims
