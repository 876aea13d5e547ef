"""Text for people: the one place that decides how numbers, durations and shapes are written,
and the type of the `log` callback every long-running function takes.

Use these instead of a module's own formatter, so a test MSE reads the same in the report, in
results.md and on the terminal. (Values written for machines, such as CSV cells, are not text
for people and keep their full precision.)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

# Where progress lines go: `print` by default, a list's `append` in tests, a no-op to silence.
Log = Callable[[str], None]

MISSING = "—"  # how a value that is absent (None, "", "-") is written


def first_line(error: BaseException, limit: int = 0) -> str:
    """An exception's message as one line: its first line (cut to `limit` characters when given),
    or its type's name when it has no message."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if not limit or len(text) <= limit else text[:limit - 3] + "..."


def os_error_line(error: OSError) -> str:
    """A file that could not be written or read (a full disk, a read-only folder, a path that is
    a folder) as one line naming the path and the fix: the user's to fix, not a bug."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or first_line(error)}; check the path, its permissions and the free disk space"


def number(value: Any, kind: str = "") -> str:
    """A number written by what it measures; `kind` is a column or key name such as
    'test_mse', 'psnr', 'ssim', 'pearson_p', 'train_seconds', 'ratio_to_pca'.

    Errors get the digits that tell variants apart (MSE 5 decimals, PSNR 2, SSIM 4), p-values
    3 significant digits, counts thousands separators. A numeric string (a CSV cell) is
    parsed first; any other string is returned as it is.
    """
    if value is None or value == "" or value == "-":
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if not math.isfinite(value):
        return str(value)
    return _by_kind(value, kind.lower())


def _by_kind(value: float, kind: str) -> str:
    """`number` for a finite float and a lower-case kind: the first rule that names the kind wins."""
    if "mse" in kind and "ratio" not in kind:
        return f"{value:.5f}"
    if "psnr" in kind:
        return f"{value:.2f}"
    if "ssim" in kind:
        return f"{value:.4f}"
    if kind.endswith("_p") or kind == "p":
        return f"{value:.3g}"
    if "second" in kind:
        return f"{value:.1f}"
    if "ratio" in kind or "compression" in kind or "gain" in kind or kind.endswith("_r"):
        return f"{value:.2f}"
    if "colorfulness" in kind:
        return f"{value:.1f}"
    if value == int(value) and abs(value) < 1e15:  # a count, even when it was read back as a float
        return f"{int(value):,}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def duration(seconds: float | None) -> str:
    """Wall time rounded to the second, as '45s', '1m23s' or '2h05m09s' (or '—' when unknown)."""
    if seconds is None:
        return MISSING
    total = max(0, round(float(seconds)))
    minutes, sec = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{sec:02d}s"
    return f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def shape(dims: Iterable[int]) -> str:
    """A tensor shape as '3×32×32'."""
    return "×".join(str(int(d)) for d in dims)


__all__ = ["Log", "MISSING", "duration", "number", "shape"]
