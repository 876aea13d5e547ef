"""A small document model: blocks (headings, paragraphs, tables, figures, included Markdown)
built once and rendered twice, to Markdown (images by relative path) and to a self-contained
HTML page (inline CSS, images as base64 data URIs, nothing loaded from outside).

`cae.report` builds the blocks from a results folder; this module only renders them.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import markdown as md_lib

NOT_RUN = "not run yet"  # a Missing block saying this is highlighted: a pipeline part still to run


# ----------------------------------------------------------------------------- blocks
@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    """Plain text (escaped in HTML); `code` spans in backticks are kept as code."""

    text: str


@dataclass
class Fragment:
    """Markdown written by another step (a conclusion, shortcomings.md), included as is."""

    text: str
    source: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Figure:
    path: Path  # absolute, for embedding
    rel: str  # relative to the report folder, for Markdown
    caption: str


@dataclass
class Missing:
    text: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Fragment | Table | Figure | Missing | Code


# ----------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_numeric(table: Table, column: int) -> bool:
    """Whether a column is right-aligned (`numeric` may be shorter than the headers: then not)."""
    return column < len(table.numeric) and table.numeric[column]


def _table_markdown(table: Table) -> str:
    """A pipe table with its caption in italics above it; numeric columns right-aligned."""
    lines = [f"*{table.caption}*", ""] if table.caption else []
    align = ["---:" if _is_numeric(table, i) else "---" for i in range(len(table.headers))]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join(align) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    """Markdown with images referenced by relative path."""
    out: list[str] = []
    n_fig = 0
    for blk in blocks:
        if isinstance(blk, Heading):
            out.append(f"{'#' * blk.level} {blk.text}")
        elif isinstance(blk, Para):
            out.append(blk.text)
        elif isinstance(blk, Fragment):
            out.append(blk.text)
        elif isinstance(blk, Missing):
            out.append(f"> **{blk.text}**" if NOT_RUN in blk.text else f"> {blk.text}")
        elif isinstance(blk, Code):
            out.append(f"```\n{blk.text}\n```")
        elif isinstance(blk, Table):
            out.append(_table_markdown(blk))
        elif isinstance(blk, Figure):
            n_fig += 1
            out.append(f"![Figure {n_fig}]({blk.rel})\n\n*Figure {n_fig}: {blk.caption}*")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML
CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); background:#fff;
  font:16px/1.55 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 2rem; margin: 0 0 .5rem; }
h2 { font-size: 1.45rem; margin-top: 2.6rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.15rem; margin-top: 1.8rem; }
h4, h5, h6 { font-size: 1rem; margin-top: 1.3rem; }
p { margin: .7rem 0; }
code { font: .88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
  padding: .1em .35em; border-radius: 4px; }
pre { background: var(--soft); padding: .9rem 1rem; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1.2rem;
  margin: 1.2rem 0; }
nav.toc ul { margin: .3rem 0; padding-left: 0; list-style: none; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .9rem; min-width: 40%; }
caption { caption-side: top; text-align: left; color: var(--muted); font-style: italic; padding: 0 0 .4rem; }
th, td { border: 1px solid var(--line); padding: .35rem .65rem; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
td:first-child { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1.4rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .45rem; }
.missing { border-left: 4px solid #d4a72c; background: #fff8c5; padding: .55rem .9rem; border-radius: 4px;
  margin: .8rem 0; }
.fragment { border-left: 4px solid var(--line); padding: .1rem 1rem; margin: 1rem 0; }
.fragment .source { color: var(--muted); font-size: .8rem; margin: .3rem 0; }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; border-top: 1px solid var(--line);
  padding-top: .8rem; }
"""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def _inline(text: str) -> str:
    """Escape plain text for HTML, turning `code` spans into <code>."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def data_uri(path: Path) -> str:
    """The file as a base64 data URI (the HTML report loads nothing from outside itself)."""
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _fragment_html(text: str) -> str:
    body = md_lib.markdown(text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    # a fragment must not load anything from outside: drop remote images, embed local ones
    return re.sub(r'<img[^>]*src="(?!data:)[^"]*"[^>]*>', "", body)


def _table_html(table: Table) -> str:
    """A table in a scrolling wrapper, caption on top; numeric columns get the 'num' class."""
    def cls(i: int) -> str:
        return ' class="num"' if _is_numeric(table, i) else ""

    head = "".join(f"<th{cls(i)}>{_inline(h)}</th>" for i, h in enumerate(table.headers))
    rows = "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in table.rows)
    cap = f"<caption>{_inline(table.caption)}</caption>" if table.caption else ""
    return (f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def to_html(blocks: list[Block], fallback_title: str = "Report", footer: str = "") -> str:
    """A self-contained HTML page: inline CSS, images as data URIs, no external resources."""
    body: list[str] = []
    n_fig = 0
    title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), fallback_title)
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    for blk in blocks:
        if isinstance(blk, Heading):
            anchor = f' id="{html.escape(blk.anchor)}"' if blk.anchor else ""
            body.append(f"<h{blk.level}{anchor}>{_inline(blk.text)}</h{blk.level}>")
            if blk.level == 1 and toc:
                items = "".join(f'<li><a href="#{html.escape(h.anchor)}">{_inline(h.text)}</a></li>' for h in toc)
                body.append(f'<nav class="toc"><strong>Contents</strong><ul>{items}</ul></nav>')
        elif isinstance(blk, Para):
            body.append(f"<p>{_inline(blk.text)}</p>")
        elif isinstance(blk, Fragment):
            body.append(f'<div class="fragment"><p class="source">from {html.escape(blk.source)}</p>'
                        f"{_fragment_html(blk.text)}</div>")
        elif isinstance(blk, Missing):
            body.append(f'<p class="missing">{_inline(blk.text)}</p>')
        elif isinstance(blk, Code):
            body.append(f"<pre><code>{html.escape(blk.text)}</code></pre>")
        elif isinstance(blk, Table):
            body.append(_table_html(blk))
        elif isinstance(blk, Figure):
            n_fig += 1
            body.append(f'<figure><img src="{data_uri(blk.path)}" alt="Figure {n_fig}: {html.escape(blk.caption)}">'
                        f"<figcaption><strong>Figure {n_fig}.</strong> {_inline(blk.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body)
            + f"\n<footer>{footer}</footer>\n</main>\n</body>\n</html>\n")
