"""YAML that people wrote: read and written back with comments, quotes and
flow style kept (ruamel.yaml round trip)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML


def round_trip() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 200
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def set_top_level(text: str, key: str, value: Any, assign: Callable[[Any, str, Any], None]) -> str:
    """`text` with its top-level `key` set to `value` (by `assign`, on the
    round-trip document), changing only that key's own lines.

    ruamel attaches a comment to whichever node precedes it, so a comment
    that introduces the next block can travel with the last entry of this
    one and land above a key that is added, or vanish with one that is
    removed.  Here only the lines from `key:` up to the first line at column
    0 that is not a comment or blank are taken from the new document; every
    line around them (comments introducing other blocks included) stays as
    it was, byte for byte.  A key the file lacks is added at its end."""
    y = round_trip()
    doc = y.load(text)
    if doc is None:
        doc = y.load("{}")
    assign(doc, key, value)
    out = io.StringIO()
    y.dump(doc, out)
    new = _key_lines(out.getvalue().splitlines(keepends=True), key)
    lines = text.splitlines(keepends=True)
    span = _key_span(lines, key)
    if span is None:
        separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + "".join(new)
    start, end = span
    # Comments indented at the end of the value are its own: the document
    # dropped them with the comments that follow the value (see
    # inventory._assign), so they are put back at its end.
    own = []
    for line in reversed(lines[start + 1:end]):
        if not line.lstrip().startswith("#"):
            break
        own.insert(0, line)
    if own and new[-len(own):] != own:
        new = new + own
    return "".join(lines[:start] + new + lines[end:])


_TOP_LEVEL = re.compile(r"^[^\s#]")


def _key_span(lines: list[str], key: str) -> tuple[int, int] | None:
    """[start, end) of `key`'s lines: its own line and everything below it
    up to the next top-level entry, less the comments and blank lines at
    column 0 just before that entry (they introduce it)."""
    head = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    start = next((i for i, line in enumerate(lines) if head.match(line)), None)
    if start is None:
        return None
    end = next((j for j in range(start + 1, len(lines)) if _TOP_LEVEL.match(lines[j])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return start, end


def _key_lines(lines: list[str], key: str) -> list[str]:
    start, end = _key_span(lines, key)
    return lines[start:end]

