"""plotly rendering of leaderboard rows. Data first (pareto.py), drawing here; HTML always, PNG when chromium is there."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.pareto import pareto_front

CHROMIUM_PATHS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    for name in CHROMIUM_PATHS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _hover(row: dict[str, Any]) -> str:
    params = "<br>".join(f"{k}={v}" for k, v in sorted((row.get("params") or {}).items()))
    acc = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"<b>{row['study']} #{row['trial_number']}</b><br>val acc {acc(row.get('val_accuracy'))}, "
            f"test acc {acc(row.get('test_accuracy'))}<br>params {row['n_params']:,}<br>{params}")


def pareto_figure(rows: list[dict[str, Any]], metric: str = "val_accuracy", title: str = ""):
    import plotly.graph_objects as go

    points = [r for r in rows if r.get(metric) is not None and r.get("n_params")]
    front = pareto_front(points, metric)
    on_front = {id(r) for r in front}
    others = [r for r in points if id(r) not in on_front]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[r["n_params"] for r in others], y=[r[metric] for r in others], mode="markers", name="trials",
        marker=dict(color="rgba(120,120,120,0.55)", size=8), hovertext=[_hover(r) for r in others], hoverinfo="text",
    ))
    fig.add_trace(go.Scatter(
        x=[r["n_params"] for r in front], y=[r[metric] for r in front], mode="lines+markers", name="Pareto front",
        line=dict(shape="hv", color="crimson"), marker=dict(size=11, color="crimson"),
        hovertext=[_hover(r) for r in front], hoverinfo="text",
    ))
    fig.update_layout(
        title=title or f"{metric.replace('_', ' ')} vs parameters ({len(points)} trials, {len(front)} on the front)",
        xaxis=dict(title="parameters (log scale)", type="log"), yaxis=dict(title=metric.replace("_", " ")),
        template="plotly_white", hoverlabel=dict(align="left"),
    )
    return fig


def write_figure(fig, path_html: Path, png: bool = True) -> list[Path]:
    """Write the HTML (self-contained), and a PNG beside it through kaleido when chromium is installed."""
    path_html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path_html, include_plotlyjs=True)
    written = [path_html]
    if png:
        written += write_png(fig, path_html.with_suffix(".png"))
    return written


def write_png(fig, path_png: Path, width: int = 1100, height: int = 650) -> list[Path]:
    """The figure as PNG through kaleido, when chromium is installed; returns [path] or [].

    MathJax off: bench's figures hold no LaTeX, and kaleido's page would load it from a CDN on every render; offline,
    that page never defines kaleido's own script ("kaleido_scopes is not defined") and no PNG is made."""
    browser = chromium()
    if not browser:
        return []
    os.environ.setdefault("BROWSER_PATH", browser)  # kaleido 1.x drives this browser
    import kaleido

    png = kaleido.calc_fig_sync(fig.to_dict(), opts=dict(format="png", width=width, height=height),
                                kopts={"mathjax": False})
    path_png.parent.mkdir(parents=True, exist_ok=True)
    path_png.write_bytes(png)
    return [path_png]


def front_json(rows: list[dict[str, Any]], metric: str = "val_accuracy") -> str:
    keep = ("study", "trial_number", "n_params", "val_accuracy", "test_accuracy", "ratio", "params")
    return json.dumps([{k: r.get(k) for k in keep} for r in pareto_front(rows, metric)], indent=2, default=str)
