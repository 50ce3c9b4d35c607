"""The page step of `bench report`: sections, tables and figures assembled into one self-contained HTML file.

Every text that comes from a name, a file or the leaderboard is escaped here (tests/test_hostile_input.py): a section
title and a table cell always; a `text` is HTML the caller wrote, so the caller escapes what it puts in (`escape`).
"""
from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Any

escape = html.escape


class Page:
    """Sections of HTML and plotly figures; plotly.js is inlined once in the head."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.figures: list[tuple[str, Any]] = []

    def section(self, key: str, title: str, note: str = "") -> None:
        """Start a section (closing the one before); note: caller-written HTML shown under the title."""
        if self.parts:
            self.parts.append("</section>")
        self.parts.append(f'<section id="{key}"><h2>{escape(title)}</h2>')
        if note:
            self.parts.append(f'<p class="note">{note}</p>')

    def text(self, content: str) -> None:
        """A paragraph of caller-written HTML."""
        self.parts.append(f"<p>{content}</p>")

    def table(self, rows: list[dict[str, Any]], fmt: dict[str, str] | None = None) -> None:
        """A table of records (columns: the first record's keys); fmt: a format spec per float column."""
        if not rows:
            self.text("(none)")
            return
        fmt = fmt or {}
        cols = list(rows[0])
        head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)

        def cell(c, v):
            if v is None:
                return ""
            if isinstance(v, float) and c in fmt:
                return format(v, fmt[c])
            if isinstance(v, float):
                return f"{v:.4g}"
            if isinstance(v, int) and not isinstance(v, bool):
                return f"{v:,}" if abs(v) >= 10_000 else str(v)
            return escape(str(v))

        body = "".join("<tr>" + "".join(f"<td>{cell(c, r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, name: str, fig) -> None:
        """A plotly figure in the page, and as <page>-<name>.png when the page is written with PNGs."""
        import plotly.io as pio

        fig.update_layout(template="plotly_white")
        self.figures.append((name, fig))
        self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                                      config={"displaylogo": False}))

    def figure_or_text(self, name: str, fig, missing: str) -> None:
        """The figure, or the paragraph `missing` (caller-written HTML) where there is no figure (None)."""
        if fig is None:
            self.text(missing)
        else:
            self.figure(name, fig)

    def write(self, path: Path, png: bool = True) -> list[Path]:
        """The HTML page, and PNGs named <page>-<figure>.png beside it when chromium is installed; returns the paths."""
        from plotly.offline import get_plotlyjs

        from bench.plots import write_pngs

        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(self.parts + (["</section>"] if self.parts else []))
        toc = " | ".join(f'<a href="#{k}">{t}</a>'  # t is the escaped title as it stands in the body
                         for k, t in re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', body))
        page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{escape(self.title)}</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} th{{background:#f3f3f3}} .note{{color:#555}}
section{{margin-top:2em}}</style></head>
<body><h1>{escape(self.title)}</h1><nav>{toc}</nav>
{body}
<p class="note">written by bench report, {time.strftime('%Y-%m-%d %H:%M')}</p></body></html>
"""
        path.write_text(page)
        stem = path.with_suffix("")
        return [path] + (write_pngs([(fig, Path(f"{stem}-{name}.png")) for name, fig in self.figures]) if png else [])
