"""plotly rendering of leaderboard rows. Data first (pareto.py), drawing here; HTML always, PNG when chromium is there.

write_pngs is bench's one PNG writer: `bench plot`, `bench lr-find`, `bench report` and `bench compare` all go through it."""
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


def hover_text(row: dict[str, Any]) -> str:
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
        marker=dict(color="rgba(120,120,120,0.55)", size=8), hovertext=[hover_text(r) for r in others], hoverinfo="text",
    ))
    fig.add_trace(go.Scatter(
        x=[r["n_params"] for r in front], y=[r[metric] for r in front], mode="lines+markers", name="Pareto front",
        line=dict(shape="hv", color="crimson"), marker=dict(size=11, color="crimson"),
        hovertext=[hover_text(r) for r in front], hoverinfo="text",
    ))
    fig.update_layout(
        title=title or f"{metric.replace('_', ' ')} vs parameters ({len(points)} trials, {len(front)} on the front)",
        xaxis=dict(title="parameters (log scale)", type="log"), yaxis=dict(title=metric.replace("_", " ")),
        template="plotly_white", hoverlabel=dict(align="left"),
    )
    return fig


def lr_find_figure(found: dict[str, Any], objective: str):
    """Smoothed training loss against learning rate (keras_train.lr_find's output), the suggested LR marked."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=found["lr"], y=found["loss"], mode="lines", name="smoothed loss"))
    fig.add_vline(x=found["suggested_lr"], line_dash="dash", annotation_text=f"suggested {found['suggested_lr']:.2g}")
    fig.update_layout(xaxis=dict(type="log", title="learning rate"), yaxis_title="training loss (smoothed)",
                      title=f"LR range test: {objective}", template="plotly_white")
    return fig


def write_figure(fig, path_html: Path, png: bool = True) -> list[Path]:
    """Write the HTML (self-contained), and a PNG beside it when chromium is installed."""
    path_html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path_html, include_plotlyjs=True)
    written = [path_html]
    if png:
        written += write_pngs([(fig, path_html.with_suffix(".png"))])
    return written


def write_pngs(figures: list[tuple[Any, Path]]) -> list[Path]:
    """Each (figure, path) as a PNG through kaleido, at the figure's own width and height (else 1100 x 650), in one
    browser session; returns the paths written, [] when chromium is not installed.

    MathJax off: bench's figures hold no LaTeX, and kaleido's page would load it from a CDN on every render; offline,
    that page never defines kaleido's own script ("kaleido_scopes is not defined") and no PNG is made."""
    browser = chromium()
    if not browser or not figures:
        return []
    os.environ.setdefault("BROWSER_PATH", browser)  # kaleido 1.x drives this browser
    import kaleido

    paths = [Path(path) for _, path in figures]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    specs = [{"fig": fig.to_dict(), "path": path,
              "opts": {"format": "png", "width": fig.layout.width or 1100, "height": fig.layout.height or 650}}
             for (fig, _), path in zip(figures, paths)]
    kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False}, cancel_on_error=True)
    return paths


def front_json(rows: list[dict[str, Any]], metric: str = "val_accuracy") -> str:
    keep = ("study", "trial_number", "n_params", "val_accuracy", "test_accuracy", "ratio", "params")
    return json.dumps([{k: r.get(k) for k in keep} for r in pareto_front(rows, metric)], indent=2, default=str)
