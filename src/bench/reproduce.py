"""`bench reproduce paper`: run the paper's configurations and put our figures beside the paper's.

The paper's figures are data (paper_figures.yaml, each with its source). An experiment whose family is not registered
in bench.objective.OBJECTIVES, or whose space file does not exist, is shown as "not available": never a made-up number.
Each experiment runs as its own study (`paper-<id>-<budget>`) through the Optuna backend into the leaderboard, so a
re-run resumes and finished experiments are not trained again; our figure is the test accuracy (or parameter count)
of the trial with the best validation accuracy.

Budgets: `quick` applies each experiment's `quick` overrides (5 epochs for the CNNs, 3-fold CV for BoVW) and runs one
trial each, a few minutes on 2 CPU cores; `full` uses the YAML spaces as they are, with the experiment's `trials.full`.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.safe import csv_cell, md_cell

BUDGETS = ("quick", "full")
FIGURES = Path(__file__).with_name("paper_figures.yaml")
NOT_AVAILABLE = "not available"


@dataclass
class Line:
    id: str
    experiment: str
    paper: Any
    source: str
    ours: Any = None  # a number, or None
    note: str = ""
    metric: str = "test_accuracy"
    row: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def available(self) -> bool:
        return self.ours is not None


def load_figures(path: Path | None = None) -> dict[str, Any]:
    data = yaml.safe_load(Path(path or FIGURES).read_text())
    ids = [e["id"] for e in data["experiments"]]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path or FIGURES}: duplicate experiment ids")
    for e in data["experiments"]:
        if not e.get("source"):
            raise ValueError(f"{path or FIGURES}: experiment '{e['id']}' has no source")
    return data


def availability(exp: dict[str, Any]) -> str | None:
    """Why an experiment cannot run here (None when it can)."""
    from bench.objective import OBJECTIVES
    from bench.space import SpaceError, find_space

    if exp["objective"] not in OBJECTIVES:
        return f"{NOT_AVAILABLE}: family '{exp['objective']}' is not built"
    try:
        find_space(exp["space"])
    except SpaceError:
        return f"{NOT_AVAILABLE}: no space {exp['space']}.yaml"
    return None


def budget_space(exp: dict[str, Any], budget: str):
    """The experiment's space, with the quick budget's overrides as fixed values."""
    from bench.space import SearchSpace, load_space

    space = load_space(exp["space"])
    if budget == "full" or not exp.get("quick"):
        return space
    raw = space.model_dump(exclude_defaults=True)
    raw["params"].update(exp["quick"])
    raw["start"] = [{k: v for k, v in p.items() if k not in exp["quick"]} for p in raw.get("start", [])]
    return SearchSpace.from_dict(raw, source=f"{space.source} (quick budget)")


def run_experiment(exp: dict[str, Any], budget: str, results: Path, data_root: Path, db: str | None,
                   log: Callable[[str], None] = print) -> tuple[dict[str, Any] | None, str]:
    """Run (or resume) the experiment's study; returns (the best-by-validation complete row, a note)."""
    from bench.backends import SearchConfig, get_backend
    from bench.leaderboard import Leaderboard, db_url

    space = budget_space(exp, budget)
    trials = int((exp.get("trials") or {}).get(budget, 1))
    study = f"paper-{exp['id']}-{budget}"
    url = db_url(db, results)
    failed = sum(r["status"] == "failed" for r in Leaderboard(url).query(study=study))  # a re-run retries failed experiments
    config = SearchConfig(objective=exp["objective"], study=study, trials=trials + failed, db_url=url, results_dir=results,
                          seed=0, sampler="tpe", pruner="none", data_root=str(data_root), keep_top=1)
    log(f"{exp['id']}: study {study}, {trials} trial(s), {budget} budget")
    backend = get_backend("optuna")
    try:
        backend.run(space, config)
    except ValueError as e:  # a search stopped because every trial fails: the failed rows below say why
        log(f"{exp['id']}: {e}")
    rows = Leaderboard(url).query(study=study, sort="accuracy")
    done = [r for r in rows if r["status"] == "complete"]
    quick = ", ".join(f"{k}={v}" for k, v in (exp.get("quick") or {}).items()) if budget == "quick" else "YAML as is"
    if not done:
        reasons = "; ".join(sorted({r.get("failure_reason") or r["status"] for r in rows}))
        return None, f"no complete trial ({reasons})"
    best = done[0]
    return best, f"{budget} ({quick}); {len(done)} trial(s), best val {best['val_accuracy']:.3f}; study {study} #{best['trial_number']}"


def _value(v: Any, metric: str) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "–".join(_value(x, metric) for x in v)
    if metric == "n_params" or (isinstance(v, int) and v > 100):
        return f"{int(v):,}"
    return f"{v:.3f}"


def difference(paper: Any, ours: Any, metric: str) -> str:
    """ours - paper; against a range, the distance outside it (0 inside); ranges against ranges end by end."""
    if paper is None or ours is None:
        return ""
    if isinstance(ours, (list, tuple)) and isinstance(paper, (list, tuple)):
        return " / ".join(difference(p, o, metric) for p, o in zip(paper, ours))
    if isinstance(paper, (list, tuple)):
        lo, hi = paper
        d = 0.0 if lo <= ours <= hi else (ours - lo if ours < lo else ours - hi)
        return "within" if d == 0 else _signed(d, metric)
    return _signed(ours - paper, metric)


def _signed(d: float, metric: str) -> str:
    return f"{int(d):+,}" if metric == "n_params" else f"{d:+.3f}"


def build_lines(figures: dict[str, Any], budget: str, run: Callable[[dict[str, Any]], tuple[dict | None, str]] | None) -> list[Line]:
    """Every experiment as a line; `run` trains one (None: plan only, nothing is run)."""
    lines: dict[str, Line] = {}
    for exp in figures["experiments"]:
        kind = exp.get("kind", "run")
        line = Line(exp["id"], exp["experiment"], exp.get("paper"), exp["source"], metric=exp.get("metric", "test_accuracy"))
        if kind == "run":
            why = availability(exp)
            if why:
                line.note = why
            elif run is None:
                line.note = "not run"
            else:
                try:
                    row, line.note = run(exp)
                except Exception as e:  # one broken experiment never hides the others
                    row, line.note = None, f"failed: {type(e).__name__}: {e}"
                if row is not None:
                    line.row, line.ours = row, row.get(line.metric)
        lines[line.id] = line
    for exp in figures["experiments"]:
        line = lines[exp["id"]]
        if exp.get("kind") == "same_as":
            src = lines[exp["same_as"]]
            line.ours = src.row.get(line.metric) if src.row else None
            line.note = f"same run as {src.id}" if src.row else src.note
        elif exp.get("kind") == "range":
            accs = [x.ours for x in lines.values() if x.available and x.metric == "test_accuracy" and x.id != line.id]
            line.ours = [min(accs), max(accs)] if accs else None
            line.note = f"min–max of our {len(accs)} test accuracies above and below" if accs else f"{NOT_AVAILABLE}: nothing ran"
    return list(lines.values())


COLUMNS = ("experiment", "paper", "ours", "difference", "source", "note")


def table_rows(lines: list[Line]) -> list[dict[str, str]]:
    return [{"experiment": x.experiment, "paper": _value(x.paper, x.metric) or "(no figure)",
             "ours": _value(x.ours, x.metric) if x.available else NOT_AVAILABLE,
             "difference": difference(x.paper, x.ours, x.metric) if x.available else "",
             "source": x.source, "note": x.note} for x in lines]


def markdown(rows: list[dict[str, str]], title: str) -> str:
    out = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(md_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(out) + "\n"


def to_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def reproduce_paper(budget: str, results: Path, data_root: Path, db: str | None, out_dir: Path, only: list[str] | None = None,
                    figures_path: Path | None = None, log: Callable[[str], None] = print) -> tuple[str, list[Path]]:
    """Run the experiments (all, or `only` those ids) and write reproduce-<budget>.md / .csv; returns (markdown, paths)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    figures = load_figures(figures_path)
    if only:
        unknown = set(only) - {e["id"] for e in figures["experiments"]}
        if unknown:
            raise ValueError(f"unknown experiment ids {sorted(unknown)}")
        keep = set(only) | {e["same_as"] for e in figures["experiments"] if e["id"] in only and e.get("same_as")}
        figures = {**figures, "experiments": [e for e in figures["experiments"] if e["id"] in keep or e.get("kind") == "range"]}
    lines = build_lines(figures, budget, lambda exp: run_experiment(exp, budget, results, data_root, db, log))
    rows = table_rows(lines)
    title = f"{figures['paper']}: ours vs the paper ({budget} budget" + (f"; {figures.get('quick_note')})" if budget == "quick" else ")")
    text = markdown(rows, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, cs = out_dir / f"reproduce-{budget}.md", out_dir / f"reproduce-{budget}.csv"
    md.write_text(text)
    cs.write_text(to_csv(rows))
    return text, [md, cs]
