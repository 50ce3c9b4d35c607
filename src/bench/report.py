"""`bench report`: one self-contained HTML page per trial or per study (plotly.js inlined once), a PNG of each figure
beside it when chromium is installed.

Trial page (`trial_report`): summary; train/val curves (from the leaderboard row's history); confusion matrix (counts
and normalised by true class); per-class precision / recall / F1; one-vs-rest ROC curves with AUC; for CNNs a Grad-CAM
grid (per class one correct and one wrong test image, the heat map of the predicted class over the image); activation
statistics per layer. Predictions and the model come from the trial's artifacts (bench.artifacts, results/<study>/trial-<n>/).

Activation statistics are the ones *recorded during training* by bench.artifacts.activation_callback (a fixed batch of
up to 64 validation images, at initialisation and after every epoch: mean, std, fraction of zeros, and histograms at
initialisation and at the end) for every trial run with artifacts on. For a trial without that record but with a saved
model, they are *recomputed from the saved model at report time* on the first 64 test images (final weights only).

Study page (`study_report`): summary (counts of complete / pruned / failed, wall time); optimisation history; Pareto
front of validation accuracy against parameters (bench.pareto / bench.plots); the accuracy-to-parameter ratio ranking;
parameter importances (Optuna's fANOVA on the study loaded from its storage, else on a study rebuilt from the
leaderboard rows); parallel coordinates; why trials were pruned or failed.
"""
from __future__ import annotations

import html
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.leaderboard import Leaderboard


class ReportError(ValueError):
    """Nothing to report on (unknown trial or study); the message says what to run."""


# --- pure computations (tested against scikit-learn) ---


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


# --- the page ---


class Page:
    """Sections of HTML and plotly figures; plotly.js is inlined once in the head."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.figures: list[tuple[str, Any]] = []

    def section(self, key: str, title: str, note: str = "") -> None:
        if self.parts:
            self.parts.append("</section>")
        self.parts.append(f'<section id="{key}"><h2>{html.escape(title)}</h2>')
        if note:
            self.parts.append(f'<p class="note">{note}</p>')

    def text(self, content: str) -> None:
        self.parts.append(f"<p>{content}</p>")

    def table(self, rows: list[dict[str, Any]], fmt: dict[str, str] | None = None) -> None:
        if not rows:
            self.text("(none)")
            return
        fmt = fmt or {}
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)

        def cell(c, v):
            if v is None:
                return ""
            if isinstance(v, float) and c in fmt:
                return format(v, fmt[c])
            if isinstance(v, float):
                return f"{v:.4g}"
            if isinstance(v, int) and not isinstance(v, bool):
                return f"{v:,}" if abs(v) >= 10_000 else str(v)
            return html.escape(str(v))

        body = "".join("<tr>" + "".join(f"<td>{cell(c, r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, name: str, fig) -> None:
        import plotly.io as pio

        fig.update_layout(template="plotly_white")
        self.figures.append((name, fig))
        self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                                      config={"displaylogo": False}))

    def write(self, path: Path, png: bool = True) -> list[Path]:
        """The HTML page, and PNGs named <page>-<figure>.png beside it when chromium is installed."""
        from plotly.offline import get_plotlyjs

        from bench.plots import chromium

        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(self.parts + (["</section>"] if self.parts else []))
        toc = " | ".join(f'<a href="#{k}">{html.escape(t)}</a>'
                         for k, t in re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', body))
        page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} th{{background:#f3f3f3}} .note{{color:#555}}
section{{margin-top:2em}}</style></head>
<body><h1>{html.escape(self.title)}</h1><nav>{toc}</nav>
{body}
<p class="note">written by bench report, {time.strftime('%Y-%m-%d %H:%M')}</p></body></html>
"""
        path.write_text(page)
        written = [path]
        browser = chromium()
        if png and browser and self.figures:
            import plotly.io as pio

            os.environ.setdefault("BROWSER_PATH", browser)
            stem = path.with_suffix("")
            paths = [Path(f"{stem}-{name}.png") for name, _ in self.figures]
            figs = [fig for _, fig in self.figures]
            sizes = [(fig.layout.width or 1100, fig.layout.height or 600) for fig in figs]
            if hasattr(pio, "write_images"):  # one browser session for all figures
                pio.write_images(figs, paths, width=[w for w, _ in sizes], height=[h for _, h in sizes])
            else:
                for fig, p, (w, h) in zip(figs, paths, sizes):
                    fig.write_image(p, width=w, height=h)
            written += paths
        return written


# --- finding rows and artifacts ---


def find_row(board: Leaderboard, trial: int, study: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """A leaderboard row: trial number `trial` of `study` (of `backend`, needed only when two backends searched the
    study), or the row whose id is `trial` when no study is given."""
    if study:
        rows = [r for r in board.query(study=study) if r["trial_number"] == trial]
        if backend:
            rows = [r for r in rows if r["backend"] == backend]
        if not rows:
            of = f" of backend {backend}" if backend else ""
            raise ReportError(f"no trial {trial}{of} in study '{study}' (see `bench leaderboard --study {study}`)")
        backends = sorted({r["backend"] for r in rows})
        if len(backends) > 1:
            raise ReportError(f"study '{study}' has a trial {trial} from each of {', '.join(backends)}: "
                              f"give --backend {' or --backend '.join(backends)}")
        return rows[0]
    import sqlalchemy as sa

    from bench.leaderboard import trials

    with board.engine.connect() as conn:
        row = conn.execute(sa.select(trials).where(trials.c.id == trial)).first()
    if row is None:
        raise ReportError(f"no leaderboard row with id {trial}; give --study NAME to pick trial {trial} of a study")
    return dict(row._mapping)


def artifacts_folder(row: dict[str, Any], results: Path | None = None) -> Path | None:
    """The row's artifact folder as stored, else results/<study>/<backend>-trial-<n> (results moved or run from
    elsewhere), else the layout of older versions, results/<study>/trial-<n>. A folder whose meta.json names another
    backend is never taken for this row's."""
    from bench.artifacts import trial_dir

    stored = (row.get("extras") or {}).get("artifacts")
    candidates = [Path(stored)] if stored else []
    if results is not None:
        run_dir = Path(results) / row["study"]
        candidates += [trial_dir(run_dir, row["trial_number"], row.get("backend")), trial_dir(run_dir, row["trial_number"])]
    for c in candidates:
        if (c / "predictions.npz").exists() and _meta_backend(c) in (None, row.get("backend")):
            return c
    return None


def _meta_backend(folder: Path) -> str | None:
    try:
        return json.loads((folder / "meta.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def history_of(row: dict[str, Any]) -> dict[str, list[float]]:
    """Per-epoch curves as lists, as every row holds them since bench.recorder (older pruned/failed rows hold a list of
    per-epoch dicts, read here too)."""
    h = (row.get("extras") or {}).get("history") or {}
    if isinstance(h, list):
        keys = sorted({k for e in h for k in e if k != "epoch"})
        return {k: [e.get(k) for e in h] for k in keys}
    return {k: list(v) for k, v in h.items() if isinstance(v, list)}


def load_model(folder: Path):
    path = folder / "model.keras"
    if not path.exists():
        return None
    from bench.keras_train import keras

    return keras().models.load_model(path, compile=False)


# --- the trial page ---


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def curves_figure(hist: dict[str, list[float]]):
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


def gradcam_figure(model, images: np.ndarray, picks, pred: np.ndarray, proba: np.ndarray, classes: list[str]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from bench.gradcam import gradcam, overlay

    targets = [int(pred[i]) for i, _, _ in picks]
    heats = gradcam(model, images.astype(np.float32), targets)
    cols = 4
    rows = (len(picks) + cols - 1) // cols
    titles = [f"{classes[c]}: correct ({proba[i, c]:.2f})" if ok else f"{classes[c]} taken for {classes[pred[i]]} ({proba[i, pred[i]]:.2f})"
              for i, c, ok in picks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.06)
    for n, (img, heat) in enumerate(zip(images, heats)):
        fig.add_trace(go.Image(z=overlay(img, heat)), row=n // cols + 1, col=n % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=270 * rows + 60, width=1100, margin=dict(l=10, r=10, t=60, b=10),
                      title="Grad-CAM of the predicted class (red = most evidence)")
    return fig, heats


def px_colors() -> list[str]:
    import plotly.express as px

    return px.colors.qualitative.Plotly + px.colors.qualitative.Dark24


def activation_figures(record: dict[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = record.get("epochs") or [0]
    series = make_subplots(rows=1, cols=3, subplot_titles=("mean", "standard deviation", "fraction of zeros"))
    palette = px_colors()
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
            fig_trace = go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=h["counts"], name=label, marker_color=colour,
                               legendgroup=label, showlegend=n == 0)
            hist.add_trace(fig_trace, row=n // cols + 1, col=n % cols + 1)
    hist.update_layout(barmode="overlay", height=260 * rows + 80, width=1200, title="activation histograms")
    hist.update_yaxes(type="log")
    return series, hist


def _inside(root: str, relative: str) -> bool:
    """Whether root/relative names an image file under root, by its name (symlinks inside a data root are the user's
    own): a results folder from elsewhere can point neither out of the root nor at a file that is not an image."""
    from bench.data import IMAGE_SUFFIXES

    base = os.path.normpath(os.path.abspath(root))
    return (os.path.normpath(os.path.join(base, relative)).startswith(base + os.sep)
            and Path(relative).suffix.lower() in IMAGE_SUFFIXES)


def _decode_images(folder_root: str, paths: list[str], size: int, color: bool) -> np.ndarray:
    from bench.data import decode

    return np.stack([decode(Path(folder_root) / p, size, color) for p in paths])


def trial_report(row: dict[str, Any], out: Path, results: Path | None = None, data_root: Path | None = None,
                 split: str = "test", png: bool = True) -> tuple[list[Path], dict[str, float]]:
    """Write the trial page; returns (written paths, seconds per stage)."""
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    name = f"{row['study']} #{row['trial_number']}"
    page = Page(f"bench report: {row['objective']} {name}")
    folder = artifacts_folder(row, results)
    page.section("summary", "Summary")
    page.table([{"study": row["study"], "trial": row["trial_number"], "status": row["status"], "objective": row["objective"],
                 "val acc": row.get("val_accuracy"), "val bal": row.get("val_balanced_accuracy"),
                 "test acc": row.get("test_accuracy"), "test F1": row.get("test_macro_f1"), "params": row.get("n_params"),
                 "ratio": row.get("ratio"), "epochs": row.get("epochs"), "fit s": row.get("fit_seconds")}],
               fmt={"ratio": ".2f", "fit s": ".1f"})
    page.text(f"params: <code>{html.escape(_fmt_params(row['params']))}</code>")
    if row.get("failure_reason"):
        page.text(f"reason: {html.escape(row['failure_reason'])}")
    page.text(f"artifacts: <code>{html.escape(str(folder))}</code>" if folder else
              "no artifacts stored for this trial (run the search with artifacts on: `--keep-top K` or `--keep-models`)")

    hist = history_of(row)
    page.section("curves", "Training curves", "train (solid) and validation (dashed), per epoch")
    if hist:
        page.figure("curves", curves_figure(hist))
    else:
        page.text("no per-epoch history in this row")

    pred_file = np.load(folder / "predictions.npz") if folder else None
    classes = list(row.get("extras", {}).get("classes") or [])
    if pred_file is not None:
        classes = [str(c) for c in pred_file["classes"]]
        y, proba = pred_file[f"y_{split}"], pred_file[f"{split}_proba"].astype(np.float64)
        pred = proba.argmax(axis=1)
        counts, norm = confusion(y, pred, len(classes))
        page.section("confusion", "Confusion matrix", f"on the {split} set ({len(y)} images)")
        page.figure("confusion", confusion_figure(counts, norm, classes))
        table = per_class(y, pred, classes)
        page.section("per-class", "Per-class precision, recall and F1", f"on the {split} set")
        page.table(table, fmt={"precision": ".3f", "recall": ".3f", "f1": ".3f"})
        page.figure("per-class", per_class_figure(table))
        curves = roc_ovr(y, proba)
        page.section("roc", "ROC curves (one vs rest)", f"on the {split} set; macro AUC "
                     f"{np.nanmean([c[2] for c in curves]):.3f}")
        page.table([{"class": c, "AUC": a} for c, (_, _, a) in zip(classes, curves)], fmt={"AUC": ".4f"})
        page.figure("roc", roc_figure(curves, classes))
    else:
        for key, title in (("confusion", "Confusion matrix"), ("per-class", "Per-class precision, recall and F1"),
                           ("roc", "ROC curves (one vs rest)")):
            page.section(key, title)
            page.text("not available: no stored predictions for this trial")
    timings["metrics"] = time.perf_counter() - tick

    tick = time.perf_counter()
    model = load_model(folder) if folder else None
    meta = json.loads((folder / "meta.json").read_text()) if folder and (folder / "meta.json").exists() else {}
    params = row["params"]
    size, color = int(params.get("input_size", 64)), bool(params.get("color", True))
    page.section("gradcam", "Grad-CAM", "per class its most confident correct test image and its most confident mistake; "
                 "the heat map is the predicted class's evidence")
    images = None
    root = str(data_root) if data_root else meta.get("data_root", "")
    paths = [str(p) for p in pred_file["test_paths"]] if pred_file is not None else []
    outside = [p for p in paths if root and not _inside(root, p)]
    if outside:  # a results folder from elsewhere may name any file; only images under the data root are opened
        page.text(f"not used: predictions.npz names {len(outside)} files that are not images under the data root, e.g. "
                  f"<code>{html.escape(outside[0].encode('utf-8', 'backslashreplace').decode())}</code>")
        paths = []
    if model is None:
        page.text("not available: no saved model for this trial (only the top-k trials keep theirs, or use --keep-models)")
    elif not paths or not root or not Path(root).is_dir():
        page.text("not available: the test images are not found (give --data ROOT)")
    else:
        from bench.gradcam import last_spatial_layer

        try:
            last_spatial_layer(model)
            y_test, p_test = pred_file["y_test"], pred_file["test_proba"].astype(np.float64)
            picks = pick_examples(y_test, p_test)
            images = _decode_images(root, [paths[i] for i, _, _ in picks], size, color)
            fig, _ = gradcam_figure(model, images, picks, p_test.argmax(axis=1), p_test, classes)
            page.figure("gradcam", fig)
        except ValueError as e:
            page.text(f"not available: {html.escape(str(e))}")
    timings["gradcam"] = time.perf_counter() - tick

    tick = time.perf_counter()
    page.section("activations", "Activation statistics")
    record = None
    if folder and (folder / "activations.json").exists():
        record = json.loads((folder / "activations.json").read_text())
        page.text(f"recorded during training on a fixed batch of {html.escape(str(record.get('batch')))} validation images, at "
                  "initialisation (epoch 0) and after every epoch")
    elif model is not None and paths and root and Path(root).is_dir():
        from bench.artifacts import activation_stats

        x = _decode_images(root, paths[:64], size, color).astype(np.float32)
        stats = activation_stats(model, x)
        if stats:
            record = {"batch": len(x), "epochs": [row.get("epochs") or 0],
                      "layers": {n: {k: [s[k]] for k in ("mean", "std", "zero_fraction")} for n, s in stats.items()},
                      "hist_last": {n: s["hist"] for n, s in stats.items()}}
            page.text(f"recomputed from the saved model at report time on {len(x)} test images (final weights only)")
    if record and record.get("layers"):
        zeros = [{"layer": n, "zeros at init": s["zero_fraction"][0], "zeros trained": s["zero_fraction"][-1],
                  "mean trained": s["mean"][-1], "std trained": s["std"][-1]} for n, s in record["layers"].items()]
        page.table(zeros, fmt={"zeros at init": ".3f", "zeros trained": ".3f", "mean trained": ".3g", "std trained": ".3g"})
        series, hists = activation_figures(record)
        page.figure("activations", series)
        page.figure("activation-histograms", hists)
    else:
        page.text("not available: no activation record and no saved Keras model for this trial")
    if model is not None:
        from bench.keras_train import release_keras

        release_keras()
    timings["activations"] = time.perf_counter() - tick

    tick = time.perf_counter()
    written = page.write(out, png=png)
    timings["write"] = time.perf_counter() - tick
    return written, timings


# --- the study page ---


def load_optuna_study(study: str, storage: str | None, results: Path | None):
    """The Optuna study from --storage, else results/optuna.journal; None if it is not there."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        path = Path(results or "results") / "optuna.journal"
        if not path.exists():
            return None
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(path)))
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
    """fANOVA importances of the params for validation accuracy, and where they were computed from."""
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


def history_figure(rows: list[dict[str, Any]]):
    import plotly.graph_objects as go

    from bench.plots import _hover

    fig = go.Figure()
    for status, colour in (("complete", "#1f77b4"), ("pruned", "rgba(150,150,150,0.6)"), ("failed", "crimson")):
        pts = [r for r in rows if r["status"] == status]
        ys = [r.get("val_accuracy") if status == "complete" else _last_val(r) for r in pts]
        fig.add_trace(go.Scatter(x=[r["trial_number"] for r in pts], y=[y if y is not None else 0 for y in ys],
                                 mode="markers", name=status, marker=dict(color=colour, size=8),
                                 hovertext=[_hover({**r, "n_params": r.get("n_params") or 0}) for r in pts], hoverinfo="text"))
    done = sorted((r for r in rows if r["status"] == "complete" and r.get("val_accuracy") is not None), key=lambda r: r["trial_number"])
    best, xs, ys = -1.0, [], []
    for r in done:
        best = max(best, r["val_accuracy"])
        xs.append(r["trial_number"])
        ys.append(best)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="crimson"), name="best so far"))
    fig.update_layout(xaxis_title="trial", yaxis_title="validation accuracy (pruned: at their last epoch)", height=450,
                      title="optimisation history")
    return fig


def _last_val(row: dict[str, Any]) -> float | None:
    h = history_of(row).get("val_accuracy") or []
    return h[-1] if h else None


def parallel_figure(rows: list[dict[str, Any]], order: list[str]):
    import plotly.graph_objects as go

    done = [r for r in rows if r["status"] == "complete" and r.get("val_accuracy") is not None]
    names = [n for n in order if all(n in r["params"] for r in done)][:10]
    dims = []
    for n in names:
        values = [r["params"][n] for r in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dims.append(dict(label=n, values=values))
        else:
            cats = sorted({str(v) for v in values})
            dims.append(dict(label=n, values=[cats.index(str(v)) for v in values], tickvals=list(range(len(cats))), ticktext=cats))
    acc = [r["val_accuracy"] for r in done]
    dims.append(dict(label="val accuracy", values=acc))
    fig = go.Figure(go.Parcoords(line=dict(color=acc, colorscale="Viridis", showscale=True), dimensions=dims))
    fig.update_layout(height=500, width=1200, title="parallel coordinates of the complete trials (colour: validation accuracy)")
    return fig


def study_report(board: Leaderboard, study: str, out: Path, results: Path | None = None, storage: str | None = None,
                 png: bool = True) -> tuple[list[Path], dict[str, float]]:
    import plotly.graph_objects as go

    from bench.pareto import pareto_front
    from bench.plots import pareto_figure

    tick = time.perf_counter()
    rows = board.query(study=study, sort="accuracy")
    if not rows:
        raise ReportError(f"no trials in study '{study}' (studies: {', '.join(board.studies()) or 'none'})")
    counts = Counter(r["status"] for r in rows)
    complete = [r for r in rows if r["status"] == "complete"]
    durations = [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows if r.get("finished_at") and r.get("started_at")]
    span = (max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)).total_seconds() if durations else 0.0
    page = Page(f"bench report: study {study}")
    page.section("summary", "Summary")
    best = complete[0] if complete else None
    page.table([{"study": study, "objective": rows[0]["objective"], "trials": len(rows), "complete": counts["complete"],
                 "pruned": counts["pruned"], "failed": counts["failed"], "trial time (sum) h": sum(durations) / 3600,
                 "wall time h": span / 3600, "best val acc": best and best["val_accuracy"],
                 "its test acc": best and best["test_accuracy"], "best trial": best and best["trial_number"]}],
               fmt={"trial time (sum) h": ".2f", "wall time h": ".2f", "best val acc": ".3f", "its test acc": ".3f"})
    page.text("wall time: first trial's start to the last trial's end; trial time: the sum of every trial's own duration")

    page.section("history", "Optimisation history")
    page.figure("history", history_figure(rows))

    page.section("pareto", "Pareto front: validation accuracy vs parameters")
    if complete:
        page.figure("pareto", pareto_figure(complete, "val_accuracy"))
        front = pareto_front(complete, "val_accuracy")
        page.table([{"trial": r["trial_number"], "val acc": r["val_accuracy"], "test acc": r["test_accuracy"],
                     "params": r["n_params"], "ratio": r["ratio"]} for r in front], fmt={"val acc": ".3f", "test acc": ".3f", "ratio": ".2f"})

    page.section("ratio", "Accuracy-to-parameter ratio ranking", "the paper's ratio: validation accuracy x 1e5 / parameters")
    ranked = sorted((r for r in complete if r.get("ratio") is not None), key=lambda r: -r["ratio"])[:15]
    page.table([{"rank": i + 1, "trial": r["trial_number"], "ratio": r["ratio"], "val acc": r["val_accuracy"],
                 "test acc": r["test_accuracy"], "params": r["n_params"]} for i, r in enumerate(ranked)],
               fmt={"ratio": ".2f", "val acc": ".3f", "test acc": ".3f"})
    if ranked:
        page.figure("ratio", go.Figure(go.Bar(x=[f"#{r['trial_number']}" for r in ranked], y=[r["ratio"] for r in ranked],
                                              hovertext=[_fmt_params(r["params"]) for r in ranked])).update_layout(
            height=380, yaxis_title="ratio", title="top trials by accuracy-to-parameter ratio"))
    timings = {"rows": time.perf_counter() - tick}

    tick = time.perf_counter()
    imp, source = param_importances(rows, load_optuna_study(study, storage, results))
    timings["importances"] = time.perf_counter() - tick
    page.section("importance", "Parameter importances", f"fANOVA (optuna.importance) of validation accuracy, on {source}")
    if imp:
        names = list(imp)
        page.figure("importance", go.Figure(go.Bar(x=[imp[n] for n in names][::-1], y=names[::-1], orientation="h")).update_layout(
            height=max(300, 28 * len(names) + 120), xaxis_title="importance", title="parameter importances (fANOVA)"))
    else:
        page.text("not available: needs at least two complete trials whose params and accuracies vary")

    page.section("parallel", "Parallel coordinates")
    varying = list(imp) or sorted({k for r in complete for k in r["params"]})
    if len(complete) >= 2:
        page.figure("parallel", parallel_figure(rows, varying))
    else:
        page.text("not available: fewer than two complete trials")

    page.section("pruned-failed", "Pruned and failed trials")
    pruned = [r for r in rows if r["status"] == "pruned"]
    at = Counter(r["epochs"] for r in pruned if r.get("epochs") is not None)  # the epochs it trained, stored as data
    page.text(f"{counts['pruned']} pruned, {counts['failed']} failed of {len(rows)} trials")
    if at:
        page.table([{"pruned after epoch": e, "trials": n} for e, n in sorted(at.items())])
    reasons = Counter((r.get("failure_reason") or "")[:160] for r in rows if r["status"] == "failed")
    page.table([{"failure reason": k, "trials": n} for k, n in reasons.most_common(15)])
    tick = time.perf_counter()
    written = page.write(out, png=png)
    timings["write"] = time.perf_counter() - tick
    return written, timings
