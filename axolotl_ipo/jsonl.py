"""JSON Lines as the format defines them: one value per `\\n`-terminated line.

`str.splitlines()` also splits on U+2028, U+2029, U+0085, \\x1c-\\x1e, \\x0b and \\x0c, which
`json.dumps(..., ensure_ascii=False)` leaves raw inside strings, so it breaks valid rows apart
and misnumbers the lines after them. A UTF-8 byte order mark is not part of line 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for every line of ``text`` that is not blank."""
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if line.strip():
            yield number, line


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """:func:`numbered_lines` of a UTF-8 file (undecodable bytes replaced)."""
    return numbered_lines(path.read_text(encoding="utf-8", errors="replace"))
