"""Writes examples/tour.ipynb from examples/tour.py, the notebook's source.

    python examples/build_tour.py

tour.py is a plain Python script in the "percent" format (`# %%` starts a code cell,
`# %% [markdown]` a Markdown cell whose lines are comments), so it is reviewed and diffed as
code. The notebook is written without outputs and with fixed cell ids, so the same source always
gives the same file; tests/test_notebook.py checks the committed notebook is this script's output
and runs it on a fresh kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCE, NOTEBOOK = HERE / "tour.py", HERE / "tour.ipynb"
MARKER = "# %%"


def uncomment(line: str) -> str:
    """A Markdown line from its comment: '# text' -> 'text', '#' -> ''."""
    return "" if line == "#" else line.removeprefix("# ")


def cells_of(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each cell of a percent-format script; kind is 'code' or 'markdown'."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(MARKER):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            lines.append(uncomment(line) if kind == "markdown" else line)
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(text: str) -> nbformat.NotebookNode:
    """The notebook of a percent-format script: no outputs, cell ids by position."""
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    cells = [make[kind](source, id=f"cell-{i:02d}") for i, (kind, source) in enumerate(cells_of(text))]
    return nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


def render(text: str) -> str:
    nb = build(text)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main() -> int:
    NOTEBOOK.write_text(render(SOURCE.read_text()))
    print(f"wrote {NOTEBOOK} from {SOURCE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
