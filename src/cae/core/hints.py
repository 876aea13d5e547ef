"""Hints for guided colorization: colours given at a few points of a photo (docs/guided.md).

One format serves the web page, `cae colorize --hints` and the API:

    {"version": 1, "radius": 2, "hints": [{"x": 412, "y": 96.5, "color": "#b02020", "radius": 3}]}

x is the column and y the row of the photo as displayed (after its camera rotation), counted in
pixels of the original photo from 0 at the top-left corner; fractions are allowed. A point is
inside the photo when 0 <= x <= width - 1 and 0 <= y <= height - 1. `color` is "#rrggbb"; only
its chrominance is used (the photo's own luma is kept). `radius` (pixels of the original, per
hint or for all at the top) spreads the colour over a disk; without one a hint covers the one
pixel of the working scale that holds the point.

Every refusal is one CaeError line naming the entry and the field, e.g.
`hints.json: hints[3].color must be a hex colour "#rrggbb", got "red"`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cae.errors import CaeError

VERSION = 1
HEX = re.compile(r"#[0-9a-fA-F]{6}")
TOP_KEYS = ("version", "hints", "radius")
HINT_KEYS = ("x", "y", "color", "radius")
SHAPE = '{"version": 1, "hints": [{"x": 10, "y": 20, "color": "#b02020"}, ...]}'


@dataclass(frozen=True)
class Hint:
    """A colour at a point of the photo as displayed: (x, y) in its pixels (column, row from the
    top-left), `color` "#rrggbb" (lower case), `radius` in its pixels (None: one working pixel)."""

    x: float
    y: float
    color: str
    radius: float | None = None

    @property
    def rgb(self) -> tuple[float, float, float]:
        """The colour as (r, g, b) in [0, 1]."""
        return tuple(int(self.color[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]

    def as_dict(self) -> dict:
        """The hint as one entry of a hints file."""
        d = {"x": self.x, "y": self.y, "color": self.color}
        return d if self.radius is None else {**d, "radius": self.radius}


def hex_color(rgb: Iterable[float]) -> str:
    """"#rrggbb" of an (r, g, b) in [0, 1] (clipped, rounded to 8 bits): what `Hint.rgb` reads back."""
    return "#" + "".join(f"{round(min(1.0, max(0.0, v)) * 255):02x}" for v in rgb)


def _shown(value: Any) -> str:
    """A value as the file wrote it, cut short (an error line stays one short line)."""
    text = json.dumps(value) if not isinstance(value, Hint) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any, where: str, minimum: float | None = None) -> float:
    """A finite JSON number (not a boolean), at least `minimum`; else a CaeError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CaeError(f"{where} must be a number of pixels, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise CaeError(f"{where} must be >= {minimum:g}, got {_shown(value)}")
    return float(value)


def _color(value: Any, where: str) -> str:
    if not isinstance(value, str) or not HEX.fullmatch(value):
        raise CaeError(f'{where} must be a hex colour "#rrggbb", got {_shown(value)}')
    return value.lower()


def _hint(entry: Any, i: int, radius: float | None) -> Hint:
    """Entry `i` of the hints list as a Hint (`radius`: the file's global one, if any)."""
    where = f"hints[{i}]"
    if isinstance(entry, Hint):
        entry = entry.as_dict()
    if not isinstance(entry, dict):
        raise CaeError(f'{where} must be an object {{"x": .., "y": .., "color": "#rrggbb"}}, got {_shown(entry)}')
    unknown = [k for k in entry if k not in HINT_KEYS]
    if unknown:
        k = unknown[0]
        named = f"{where}.{k}" if k.isidentifier() else f"{where}[{json.dumps(k)}]"  # a newline stays escaped
        raise CaeError(f"{named} is not a field of a hint; the fields are {', '.join(HINT_KEYS)}")
    for key in HINT_KEYS[:3]:
        if key not in entry:
            raise CaeError(f"{where}.{key} is missing; a hint is {{\"x\": .., \"y\": .., \"color\": \"#rrggbb\"}}")
    own = entry.get("radius")
    return Hint(_number(entry["x"], f"{where}.x", 0), _number(entry["y"], f"{where}.y", 0),
                _color(entry["color"], f"{where}.color"),
                radius if own is None else _number(own, f"{where}.radius", 0))


def parse_hints(doc: Any) -> list[Hint]:
    """The hints of a hints document (the parsed JSON: {"version": 1, "hints": [...]}), checked;
    a malformed one is a one-line CaeError naming the entry and the field."""
    if not isinstance(doc, dict):
        raise CaeError(f"a hints file is a JSON object {SHAPE}, got {_shown(doc)}")
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise CaeError(f"{unknown[0]!r} is not a key of a hints file; the keys are {', '.join(TOP_KEYS)}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        got = _shown(doc["version"]) if "version" in doc else "none"
        raise CaeError(f"version must be {VERSION} (this cae reads hints files of version {VERSION}), got {got}")
    if not isinstance(doc.get("hints"), list):
        raise CaeError(f"hints must be a list of hints, got {_shown(doc.get('hints'))}; a hints file is {SHAPE}")
    radius = None if doc.get("radius") is None else _number(doc["radius"], "radius", 0)
    return [_hint(entry, i, radius) for i, entry in enumerate(doc["hints"])]


def load_hints(path: str | Path) -> list[Hint]:
    """The hints of a hints file (`parse_hints`); any failure is one CaeError line naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return parse_hints(doc)
    except FileNotFoundError:
        raise CaeError(f"{path}: no such hints file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise CaeError(f"{path}: cannot read the hints file ({type(e).__name__}); give a JSON file {SHAPE}") from None
    except json.JSONDecodeError as e:
        raise CaeError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                       f"a hints file is {SHAPE}") from None
    except CaeError as e:
        raise CaeError(f"{path}: {e}") from None


def hints_of(value: Any) -> list[Hint]:
    """Hints given to the API in any of its forms: None (no hints), a hints file's path, a hints
    document (dict), or a list of Hint objects and/or hint dicts ({"x", "y", "color", "radius"})."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return load_hints(value)
    if isinstance(value, dict):
        return parse_hints(value)
    if isinstance(value, (list, tuple)):
        return [_hint(entry, i, None) for i, entry in enumerate(value)]
    raise CaeError(f"hints are a list of {{\"x\", \"y\", \"color\"}} dicts, a hints document or a file, "
                   f"got {type(value).__name__}")


def check_inside(hints: Iterable[Hint], width: int, height: int) -> None:
    """A CaeError naming the first hint whose point is outside a photo of width x height pixels."""
    for i, h in enumerate(hints):
        for field, value, side, name in (("x", h.x, width, "width"), ("y", h.y, height, "height")):
            if value > side - 1:
                raise CaeError(f"hints[{i}].{field} = {value:g} is outside the photo ({width}x{height} as displayed: "
                               f"{field} from 0 to {side - 1}); were the hints made for another photo?")


def hints_document(hints: Iterable[Hint], radius: float | None = None) -> dict:
    """The hints file of `hints` (what `parse_hints` reads back)."""
    doc: dict = {"version": VERSION, "hints": [h.as_dict() for h in hints]}
    return doc if radius is None else {**doc, "radius": radius}
