"""The render step of `bench report`: plotly figures from the records of bench.report.metrics.

Each function takes plain data and returns a figure (plotly imported inside, so importing this module costs nothing);
none reads a file or the leaderboard. The page (bench.report.page) places them; bench.plots writes their PNGs.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _palette() -> list[str]:
    import plotly.express as px

    return px.colors.qualitative.Plotly + px.colors.qualitative.Dark24


# --- the trial page ---


def curves_figure(hist: dict[str, list[float]]):
    """Loss and accuracy per epoch, train solid and validation dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, key in ((1, "loss"), (2, "accuracy")):
        for prefix, dash in (("", "solid"), ("val_", "dash")):
            values = hist.get(prefix + key)
            if values:
                fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                                         name=f"{'val' if prefix else 'train'} {key}", line=dict(dash=dash)), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=420, title="training curves")
    return fig


def confusion_figure(counts: np.ndarray, norm: np.ndarray, classes: list[str]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("counts", "normalised by true class (recall on the diagonal)"),
                        horizontal_spacing=0.15)
    fig.add_trace(go.Heatmap(z=counts, x=classes, y=classes, colorscale="Blues", texttemplate="%{z}", showscale=False), 1, 1)
    fig.add_trace(go.Heatmap(z=norm, x=classes, y=classes, colorscale="Blues", texttemplate="%{z:.2f}", zmin=0, zmax=1,
                             showscale=False), 1, 2)
    fig.update_yaxes(autorange="reversed", title_text="true")
    fig.update_xaxes(title_text="predicted")
    fig.update_layout(height=560, width=1200, title="confusion matrix")
    return fig


def per_class_figure(table: list[dict[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(name=m, x=[r["class"] for r in table], y=[r[m] for r in table]) for m in ("precision", "recall", "f1")])
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1]), height=420, title="per-class precision, recall and F1")
    return fig


def roc_figure(curves, classes: list[str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for (fpr, tpr, auc), name in zip(curves, classes):
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {auc:.3f})", line=dict(shape="hv")))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=560, width=900,
                      title="one-vs-rest ROC curves")
    return fig


def gradcam_figure(overlays: list[np.ndarray], picks, pred: np.ndarray, proba: np.ndarray, classes: list[str]):
    """A grid of the images with their heat maps laid over (bench.gradcam.overlay), one per pick of metrics.pick_examples."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = 4
    rows = (len(picks) + cols - 1) // cols
    titles = [f"{classes[c]}: correct ({proba[i, c]:.2f})" if ok else f"{classes[c]} taken for {classes[pred[i]]} ({proba[i, pred[i]]:.2f})"
              for i, c, ok in picks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.06)
    for n, image in enumerate(overlays):
        fig.add_trace(go.Image(z=image), row=n // cols + 1, col=n % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=270 * rows + 60, width=1100, margin=dict(l=10, r=10, t=60, b=10),
                      title="Grad-CAM of the predicted class (red = most evidence)")
    return fig


def activation_figures(record: dict[str, Any]):
    """(mean / std / zero fraction per layer against epoch, histograms at initialisation and trained) of an
    activation record (bench.artifacts' activations.json, or metrics.activation_record)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = record.get("epochs") or [0]
    series = make_subplots(rows=1, cols=3, subplot_titles=("mean", "standard deviation", "fraction of zeros"))
    palette = _palette()
    for i, (name, s) in enumerate(record["layers"].items()):
        for col, key in enumerate(("mean", "std", "zero_fraction"), 1):
            series.add_trace(go.Scatter(x=epochs, y=s[key], mode="lines+markers", name=name, legendgroup=name,
                                        line=dict(color=palette[i % len(palette)]), showlegend=col == 1), row=1, col=col)
    series.update_xaxes(title_text="epoch (0 = initialisation)")
    series.update_layout(height=430, width=1200, title="activation statistics per layer")
    layers = list(record.get("hist_last") or record.get("hist_init") or {})
    cols = 4
    rows = max(1, (len(layers) + cols - 1) // cols)
    hist = make_subplots(rows=rows, cols=cols, subplot_titles=layers)
    for n, name in enumerate(layers):
        for key, label, colour in (("hist_init", "initialisation", "rgba(120,120,120,0.6)"), ("hist_last", "trained", "rgba(31,119,180,0.7)")):
            h = (record.get(key) or {}).get(name)
            if not h:
                continue
            edges = np.asarray(h["edges"])
            hist.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=h["counts"], name=label, marker_color=colour,
                                  legendgroup=label, showlegend=n == 0), row=n // cols + 1, col=n % cols + 1)
    hist.update_layout(barmode="overlay", height=260 * rows + 80, width=1200, title="activation histograms")
    hist.update_yaxes(type="log")
    return series, hist


# --- the study page ---


def history_figure(rows: list[dict[str, Any]]):
    """Every trial's validation accuracy (pruned and failed ones at their last epoch) and the best so far."""
    import plotly.graph_objects as go

    from bench.plots import hover_text
    from bench.report.metrics import best_so_far, last_val_accuracy

    fig = go.Figure()
    for status, colour in (("complete", "#1f77b4"), ("pruned", "rgba(150,150,150,0.6)"), ("failed", "crimson")):
        pts = [r for r in rows if r["status"] == status]
        ys = [r.get("val_accuracy") if status == "complete" else last_val_accuracy(r) for r in pts]
        fig.add_trace(go.Scatter(x=[r["trial_number"] for r in pts], y=[y if y is not None else 0 for y in ys],
                                 mode="markers", name=status, marker=dict(color=colour, size=8),
                                 hovertext=[hover_text({**r, "n_params": r.get("n_params") or 0}) for r in pts], hoverinfo="text"))
    xs, ys = best_so_far(rows)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="crimson"), name="best so far"))
    fig.update_layout(xaxis_title="trial", yaxis_title="validation accuracy (pruned: at their last epoch)", height=450,
                      title="optimisation history")
    return fig


def ratio_figure(ranked: list[dict[str, Any]]):
    """Bars of the accuracy-to-parameter ratio of metrics.ratio_ranking's rows."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[f"#{r['trial_number']}" for r in ranked], y=[r["ratio"] for r in ranked],
                           hovertext=[fmt_params(r["params"]) for r in ranked]))
    return fig.update_layout(height=380, yaxis_title="ratio", title="top trials by accuracy-to-parameter ratio")


def importance_figure(importances: dict[str, float]):
    """Horizontal bars of {param: importance}, the most important at the top."""
    import plotly.graph_objects as go

    names = list(importances)[::-1]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"))
    return fig.update_layout(height=max(300, 28 * len(names) + 120), xaxis_title="importance",
                             title="parameter importances (fANOVA)")


def parallel_figure(dimensions: list[dict[str, Any]]):
    """Parallel coordinates of metrics.parallel_dimensions, coloured by its last axis (validation accuracy)."""
    import plotly.graph_objects as go

    acc = dimensions[-1]["values"]
    fig = go.Figure(go.Parcoords(line=dict(color=acc, colorscale="Viridis", showscale=True), dimensions=dimensions))
    fig.update_layout(height=500, width=1200, title="parallel coordinates of the complete trials (colour: validation accuracy)")
    return fig
