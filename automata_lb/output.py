"""What the commands print, for scripts and for people.

JSON is strict: a value Prometheus could not compute (NaN, a ratio of no
requests) or an infinity becomes null, since strict parsers (jq, Go, browsers)
refuse the bare `NaN` Python writes by default.  Tables keep every name whole
at any width, a pipe included (rich then assumes 80 columns): prose wraps,
and when even that does not fit the least useful columns are left out and
the caption says which.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(document: Any) -> str:
    # allow_nan=False: should anything non-finite slip past finite() (inside
    # an object only `default` turns into a string), fail loudly here rather
    # than print what a strict parser rejects.
    return json.dumps(finite(document), indent=2, default=str, allow_nan=False)


def emit_json(document: Any) -> None:
    sys.stdout.write(json_text(document) + "\n")


def number(value: float | None, spec: str = ".1f", scale: float = 1, suffix: str = "") -> str:
    """A figure for a table cell; '-' where there is none (or it is not finite)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * scale:{spec}}{suffix}"


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"
    # Prose (a version and a time, an error) may wrap over lines; any other
    # cell (a name, a figure) is printed on one line and never cut.
    wrap: bool = False
    # 0: always shown.  Otherwise left out, highest first, while the table
    # does not fit the console.
    drop: int = 0


def table(title: str, columns: Sequence[Column], rows: Iterable[Sequence[str]], console: Console) -> Table:
    """A table as wide as the console with every name whole; print it with show()."""
    rows = [list(r) for r in rows]
    shown = list(range(len(columns)))
    while True:
        needed = _needed(console, [columns[i] for i in shown], [[r[i] for i in shown] for r in rows])
        droppable = [i for i in shown if columns[i].drop]
        if needed <= console.width or not droppable:
            break
        shown.remove(max(droppable, key=lambda i: columns[i].drop))
    built = Table(title=title, title_justify="left")
    for i in shown:
        c = columns[i]
        # rich shrinks only the columns that wrap (there is room for the
        # others), and "fold" breaks a word too long for its cell over lines
        # where the default would cut it with an ellipsis.
        built.add_column(c.header, justify=c.justify, no_wrap=not c.wrap, overflow="fold")
    for r in rows:
        built.add_row(*(r[i] for i in shown))
    notes = []
    left_out = [c.header for i, c in enumerate(columns) if i not in shown]
    if left_out:
        notes.append(f"not shown at {console.width} columns: {', '.join(left_out)}")
    if needed > console.width:
        # Names alone are wider than the console: print them whole past its
        # edge (show() does not crop) rather than cut them.
        built.width = needed
        notes.append(f"{needed} columns wide")
    if notes:
        built.caption, built.caption_justify = "; ".join(notes) + " (--json has everything)", "left"
    return built


def _needed(console: Console, columns: Sequence[Column], rows: list[list[str]]) -> int:
    """The narrowest the table can be: a cell that does not wrap is as wide as
    its text, one that wraps as its longest word; plus a space either side of
    every cell and the borders between."""
    width = 0
    for i, c in enumerate(columns):
        cells = [Measurement.get(console, console.options.update_width(_UNLIMITED), Text.from_markup(text))
                 for text in (c.header, *(r[i] for r in rows))]
        width += max(m.minimum if c.wrap else m.maximum for m in cells) + 2
    return width + len(columns) + 1


def show(console: Console, renderable: Any) -> None:
    """Print without cropping lines at the console's width (see table())."""
    console.print(renderable, crop=False)


_UNLIMITED = 100_000
