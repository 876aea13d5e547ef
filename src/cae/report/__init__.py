"""Reports: finished result files turned into text, tables and figures (report.html, report.md)."""

from cae.report.content import SECTIONS, write_report

__all__ = ["SECTIONS", "write_report"]
