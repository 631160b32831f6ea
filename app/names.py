"""Names people see (team names, display names): normalised, refused when they hide characters, and compared by
what they look like.

Rules:
- NFKC-normalised, surrounding white space stripped, inner runs of white space folded to one space;
- refused: control characters (Cc), format characters (Cf: zero-width joiners, bidi embeddings and overrides
  such as U+202E, the byte-order mark), line and paragraph separators, private-use and unassigned code points;
- two team names clash when their confusable skeletons are equal (Unicode TS #39, section 4: NFD, every
  character replaced by its prototype from confusables.txt, NFD again), case-folded: "Hostile" with a
  Cyrillic "Н", or with a zero-width space, is the same team as "hostile".
The data file is Unicode's confusables.txt (version 13.0, app/data/confusables.txt, under Unicode's terms of
use). Imports the stdlib only.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

CONFUSABLES = Path(__file__).with_name("data") / "confusables.txt"
_REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible formatting or direction character",
                       "Zl": "a line separator", "Zp": "a paragraph separator", "Co": "a private-use character",
                       "Cn": "an unassigned code point", "Cs": "a surrogate"}  # fmt: skip
_SPACES = re.compile(r"\s+")


class InvalidNameError(ValueError):
    """The name cannot be used; the message says which character and why."""


@cache
def _prototypes() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in CONFUSABLES.read_text(encoding="utf-8-sig").splitlines():
        data = line.split("#", 1)[0]
        if ";" not in data:
            continue
        source, target, *_ = (field.strip() for field in data.split(";"))
        table[chr(int(source, 16))] = "".join(chr(int(code, 16)) for code in target.split())
    return table


def clean_name(raw: str, *, field: str = "name") -> str:
    """The normalised name; InvalidNameError naming the first character that is refused, and why."""
    name = _SPACES.sub(" ", unicodedata.normalize("NFKC", raw)).strip()
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            raise InvalidNameError(
                f"{field}: character {position + 1} is {_REFUSED_CATEGORIES[category]} "
                f"(U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}); names may not hide characters"
            )
    if not name:
        raise InvalidNameError(f"{field}: must not be empty")
    return name


def skeleton(name: str) -> str:
    """The TS #39 skeleton of `name`, case-folded: equal for names that look alike."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", name)
    mapped = "".join(prototypes.get(char, char) for char in decomposed)
    return unicodedata.normalize("NFD", mapped).casefold()
