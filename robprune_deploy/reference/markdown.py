"""Markdown tables whose cells cannot break the table (a ``|`` or a newline in a description)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_CODE = re.compile(r"(`[^`]*`)")


def _plain(text: str) -> str:
    # `<model>` would be read as an HTML tag and vanish; a bare | would end the cell.
    text = text.replace("\\|", "\x00").replace("|", "\\|").replace("\x00", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def cell(text: str) -> str:
    """``text`` as one table cell: lines joined, and outside code spans pipes and angle brackets escaped
    (a pipe inside a code span is escaped too: a table row ends at any unescaped ``|``)."""
    parts = _CODE.split(" ".join(str(text).split()))
    return "".join(part.replace("|", "\\|") if part.startswith("`") else _plain(part) for part in parts)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A pipe table; ``align`` holds one ``l`` or ``r`` per column (default: all left)."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def slug(heading: str) -> str:
    """The id MkDocs (Python-Markdown's table of contents) gives a heading with this text."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)
