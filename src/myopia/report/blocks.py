"""Report content as a few block types, rendered to Markdown and to self-contained HTML.

Sections produce blocks; they never format Markdown or HTML themselves, so one section renders identically in
both outputs. Inline text may use ``**bold**`` and ```code``` (the only markup the HTML renderer converts).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field


@dataclass
class Heading:
    """A section heading of a report; ``level`` is the Markdown heading depth."""

    text: str
    level: int = 2


@dataclass
class Paragraph:
    """A paragraph of Markdown text."""

    text: str


@dataclass
class Table:
    """A table: header row, body rows (strings) and an optional caption."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """A figure: a name (its file stem), PNG bytes and a caption."""

    name: str  # file stem, unique within the report
    png: bytes
    caption: str = ""


@dataclass
class Code:
    """A code block (e.g. the command that produced a result)."""

    text: str


@dataclass
class Report:
    """A report: a title and its blocks, rendered by :func:`render_markdown` and :func:`render_html`."""

    title: str
    blocks: list = field(default_factory=list)


def md_cell(text) -> str:
    """Text that is safe inside a Markdown table cell (pipes escaped, line breaks shown as ⏎)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "⏎")


def render_markdown(report: Report, figure_dir: str) -> tuple[str, dict[str, bytes]]:
    """(Markdown text, {relative path: png bytes}); figures are referenced as ``figure_dir/name.png``."""
    lines, files = [f"# {report.title}", ""], {}
    for b in report.blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            lines += [b.text, ""]
        elif isinstance(b, Table):
            if b.caption:
                lines += [b.caption, ""]
            lines.append("| " + " | ".join(md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif isinstance(b, Figure):
            path = f"{figure_dir}/{b.name}.png"
            files[path] = b.png
            lines += [f"![{b.caption or b.name}]({path})", ""]
            if b.caption:
                lines += [f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            lines += ["```", b.text.rstrip("\n"), "```", ""]
        else:
            raise TypeError(f"unknown report block {type(b).__name__}")
    return "\n".join(lines).rstrip() + "\n", files


def _inline_html(text: str) -> str:
    out = html.escape(str(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td{font-variant-numeric:tabular-nums;white-space:pre-wrap}img{max-width:100%}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}code,pre{background:#f6f6f6;border-radius:3px}pre{padding:.6em;overflow:auto}
.caption{color:#555;font-size:.9em;margin-bottom:.2em}"""


def render_html(report: Report) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>"]
    for b in report.blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            if b.caption:
                parts.append(f'<div class="caption">{_inline_html(b.caption)}</div>')
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{_inline_html(b.caption)}</figcaption>" if b.caption else ""
            parts.append(f'<figure><img alt="{html.escape(b.name)}" src="data:image/png;base64,{data}">{cap}'
                         "</figure>")
        elif isinstance(b, Code):
            parts.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        else:
            raise TypeError(f"unknown report block {type(b).__name__}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
