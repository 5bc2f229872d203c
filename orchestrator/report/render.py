"""Write a report (a list of sections) as self-contained HTML, Markdown + PNGs, and CSVs.

The HTML embeds every figure as a base64 PNG and its CSS inline: it makes no external
request. Markdown links the PNG files written beside it.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Section", "Table", "FigureFile", "write_report", "number_text"]


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    csv: str = ""  # file name of the CSV copy ("" = none)
    display: pd.DataFrame | None = None  # shorter frame shown in HTML/Markdown (CSV keeps all)

    @property
    def shown(self) -> pd.DataFrame:
        return self.frame if self.display is None else self.display


@dataclass
class FigureFile:
    caption: str
    name: str  # file stem, e.g. main_effects
    png: bytes


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # paragraphs
    notes: list[str] = field(default_factory=list)  # what could not be estimated, caveats
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #1f77b4;padding-bottom:.2em}h2{margin-top:1.8em;color:#1f4e79}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#eef3f8}
td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:600;padding:.3em 0}
.note{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.4em .8em;margin:.5em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.wide{overflow-x:auto}
"""


def write_report(out_dir: Path, title: str, subtitle: str, sections: list[Section]) -> list[Path]:
    """Write report.html, report.md, the PNGs and CSVs into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for section in sections:
        for table in section.tables:
            if table.csv:
                path = out_dir / table.csv
                table.frame.to_csv(path, index=False)
                written.append(path)
        for fig in section.figures:
            path = out_dir / f"{fig.name}.png"
            path.write_bytes(fig.png)
            written.append(path)
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(title, subtitle, sections), encoding="utf-8")
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(title, subtitle, sections), encoding="utf-8")
    return [html_path, md_path, *written]


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>",
        "<nav><ol>"
        + "".join(
            f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)
        )
        + "</ol></nav>",
    ]
    for i, section in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        parts += [f"<p>{html.escape(p)}</p>" for p in section.text]
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
        for table in section.tables:
            caption = html.escape(table.title) + (
                f" <small>({html.escape(table.csv)})</small>" if table.csv else ""
            )
            body = _format(table.shown).to_html(index=False, escape=True, border=0, na_rep="")
            parts.append(f'<div class="wide">{_with_caption(body, caption)}</div>')
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", subtitle, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for p in section.text:
            lines += [p, ""]
        for n in section.notes:
            lines += [f"> **Note:** {n}", ""]
        for table in section.tables:
            suffix = f" ([{table.csv}]({table.csv}))" if table.csv else ""
            lines += [f"**{table.title}**{suffix}", "", _markdown_table(_format(table.shown)), ""]
        for fig in section.figures:
            lines += [f"![{fig.caption}]({fig.name}.png)", "", f"*{fig.caption}*", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------
def _with_caption(table_html: str, caption: str) -> str:
    head, sep, rest = table_html.partition(">")
    return f"{head}{sep}<caption>{caption}</caption>{rest}"


def _format(frame: pd.DataFrame) -> pd.DataFrame:
    """Readable strings: 4 significant decimals for floats, blank for NaN."""
    out = frame.copy()
    for column in out.columns:
        out[column] = out[column].map(_cell).astype(object)
    return out


def number_text(value: object) -> str:
    """A cell as the tables show it (4 decimals, scientific when tiny or huge, "" for NaN)."""
    return _cell(value)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{value:.0f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(empty)_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = [
        "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])
