"""`bench compare`: which family wins on these images. Data first (compare_data: plain records), rendering second.

Per study: its best complete trial on validation (test shown beside it, never used to choose), the search's wall
time (first trial's start to last trial's end) and the paper's figure for that family (bench/paper_figures.yaml):
the experiment whose space's fixed params the configuration holds, else the family's best figure, named as such.
Across the studies: the Pareto fronts of validation accuracy against parameters and against fit seconds, over every
complete trial, each point named by its family.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from bench.pareto import pareto_front

COLUMNS = ("family", "study", "trial", "val acc", "val bal", "test acc", "test bal", "params", "ratio", "fit s",
           "search s", "paper")


def default_studies(board) -> list[str]:
    """The study holding each objective's best complete trial on validation."""
    best: dict[str, dict[str, Any]] = {}
    for r in board.query(status="complete", sort="accuracy"):
        best.setdefault(r["objective"], r)
    return [best[o]["study"] for o in sorted(best)]


def paper_figure(objective: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The paper's figure for this configuration (see the module docstring), or None when the paper has none."""
    import yaml

    from bench.reproduce import load_figures
    from bench.space import SpaceError, find_space

    figures = [e for e in load_figures()["experiments"] if e.get("objective") == objective and e.get("paper") is not None]
    for e in figures:
        try:
            fixed = (yaml.safe_load(find_space(e["space"]).read_text()) or {}).get("params", {})
        except (SpaceError, OSError, KeyError):
            continue
        scalars = {k: v for k, v in fixed.items() if not isinstance(v, dict)}
        if scalars and all(params.get(k) == v for k, v in scalars.items()):
            return {"id": e["id"], "experiment": e["experiment"], "paper": e["paper"], "matched": True}
    if not figures:
        return None
    top = max(figures, key=lambda e: max(e["paper"]) if isinstance(e["paper"], list) else e["paper"])
    return {"id": top["id"], "experiment": top["experiment"], "paper": top["paper"], "matched": False}


def compare_data(board, studies: list[str]) -> dict[str, Any]:
    """{"best": one record per study, "rows": every complete trial, "front_params", "front_time"}."""
    best, rows = [], []
    for study in studies:
        done = board.query(study=study, status="complete", sort="accuracy")
        if not done:
            raise ValueError(f"study '{study}' has no complete trial (see `bench leaderboard`)")
        every = board.query(study=study)
        starts = [r["started_at"] for r in every if r["started_at"]]
        ends = [r["finished_at"] for r in every if r["finished_at"]]
        wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
        top = done[0]
        best.append({**top, "family": top["objective"], "search_seconds": wall, "trials": len(every),
                     "paper": paper_figure(top["objective"], top["params"])})
        rows += [{**r, "family": r["objective"]} for r in done]
    return {"best": best, "rows": rows, "front_params": pareto_front(rows, "val_accuracy", "n_params"),
            "front_time": pareto_front(rows, "val_accuracy", "fit_seconds")}


def _f(v, spec=".3f") -> str:
    return "" if v is None else format(v, spec)


def paper_text(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    value = "-".join(f"{v:g}" for v in p["paper"]) if isinstance(p["paper"], list) else f"{p['paper']:g}"
    return f"{value} ({p['id']}{'' if p['matched'] else ', the family best'})"


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    return [[b["family"], b["study"], str(b["trial_number"]), _f(b["val_accuracy"]), _f(b["val_balanced_accuracy"]),
             _f(b["test_accuracy"]), _f(b["test_balanced_accuracy"]), _f(b["n_params"], ","), _f(b["ratio"], ".2f"),
             _f(b["fit_seconds"], ".1f"), _f(b["search_seconds"], ".0f"), paper_text(b["paper"])] for b in data["best"]]


def markdown_table(data: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table_rows(data)])


def figure(data: dict[str, Any]):
    """Validation accuracy against parameters and against fit seconds (log x), one colour per family, fronts drawn."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("val accuracy vs parameters", "val accuracy vs fit seconds"))
    families = sorted({r["family"] for r in data["rows"]})
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
    hover = lambda r: f"{r['family']} · {r['study']} #{r['trial_number']}<br>val {_f(r['val_accuracy'])}, test {_f(r['test_accuracy'])}<br>{_f(r['n_params'], ',')} params, {_f(r['fit_seconds'], '.1f')} s"  # noqa: E731
    for i, fam in enumerate(families):
        mine = [r for r in data["rows"] if r["family"] == fam]
        for col, cost in ((1, "n_params"), (2, "fit_seconds")):
            fig.add_trace(go.Scatter(x=[r[cost] for r in mine], y=[r["val_accuracy"] for r in mine], mode="markers",
                                     name=fam, legendgroup=fam, showlegend=col == 1, hovertext=[hover(r) for r in mine],
                                     hoverinfo="text", marker=dict(size=9, color=palette[i % len(palette)])), row=1, col=col)
    for col, (key, cost) in enumerate((("front_params", "n_params"), ("front_time", "fit_seconds")), 1):
        front = data[key]
        fig.add_trace(go.Scatter(x=[r[cost] for r in front], y=[r["val_accuracy"] for r in front], mode="lines",
                                 line=dict(shape="hv", color="crimson", dash="dot"), name="Pareto front",
                                 legendgroup="front", showlegend=col == 1, hoverinfo="skip"), row=1, col=col)
    fig.update_xaxes(type="log", title_text="parameters (log)", row=1, col=1)
    fig.update_xaxes(type="log", title_text="fit seconds (log)", row=1, col=2)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    fig.update_layout(template="plotly_white", height=520, width=1200, hoverlabel=dict(align="left"))
    return fig


def write_page(data: dict[str, Any], path: Path, png: bool = True) -> list[Path]:
    """One self-contained HTML page (table, fronts, figure) and, with chromium, a PNG of the figure beside it."""
    from bench.plots import write_pngs

    fig = figure(data)
    written = write_pngs([(fig, path.with_suffix(".png"))]) if png else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in table_rows(data))

    def front_list(key: str, cost: str) -> str:
        return "".join(f"<li>{html.escape(r['family'])} · {html.escape(r['study'])} #{r['trial_number']}: val "
                       f"{_f(r['val_accuracy'])}, {_f(r[cost], ',.1f' if cost == 'fit_seconds' else ',')} "
                       f"{'s' if cost == 'fit_seconds' else 'params'}</li>" for r in data[key])

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>bench compare</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}
td:nth-child(-n+2),th:nth-child(-n+2){{text-align:left}}</style></head><body>
<h1>Which family wins: {len(data['best'])} studies, {len(data['rows'])} complete trials</h1>
<p>Per study its best configuration on validation; test is measured, never used to choose. paper: the figure of
arXiv:2105.04895 for that configuration (or the family's best figure), which the paper measured on its test set.</p>
<table><tr>{head}</tr>{body}</table>
<h2>Pareto front: validation accuracy vs parameters</h2><ul>{front_list('front_params', 'n_params')}</ul>
<h2>Pareto front: validation accuracy vs fit seconds</h2><ul>{front_list('front_time', 'fit_seconds')}</ul>
{fig.to_html(full_html=False, include_plotlyjs=True)}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return [path, *written]
