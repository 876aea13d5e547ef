"""Finished `cae reproduce` reports under --runs, which the Results tab links to.

A report is `report.html` directly in --runs or one folder below it (`make reproduce` and
`make quick` write runs/reproduce/ and runs/quick/ side by side). The page names a report by
its folder name from this listing; the server never opens a path taken from a request.
"""

from __future__ import annotations

from pathlib import Path

REPORT = "report.html"
TOP = ""  # the name of the report directly in --runs


def find_reports(runs_dir: Path | None) -> dict[str, Path]:
    """Folder name (TOP for --runs itself) -> report.html, sorted by name."""
    if runs_dir is None or not runs_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    if (runs_dir / REPORT).is_file():
        found[TOP] = runs_dir / REPORT
    for sub in sorted(runs_dir.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and (sub / REPORT).is_file():
            found[sub.name] = sub / REPORT
    return found


def report_url(name: str) -> str:
    """The fixed route of a listed report (see `cae.apps.serve.app`)."""
    from urllib.parse import quote

    return "/report" if name == TOP else f"/report/{quote(name, safe='')}"
