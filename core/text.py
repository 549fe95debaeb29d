"""Text from outside (Telegram, the shell) made storable in every database the shop runs on.

JSON from Telegram can carry what a `str` holds but no database stores: a NUL byte
(PostgreSQL refuses it in text) or a lone UTF-16 surrogate (not encodable as UTF-8).
Both become U+FFFD at the edge, so a forged update is refused or answered, never a crash
deep in a transaction. `clip` cuts text to a column's size in characters, which is
what PostgreSQL's VARCHAR counts. `whole_number` reads a number a person typed the
way the columns can hold it.
"""

from __future__ import annotations

import re

#: The largest value of a PostgreSQL INTEGER (every id, count and amount in 分).
INTEGER_MAX = 2**31 - 1
#: The largest value of a BIGINT (Telegram ids).
BIGINT_MAX = 2**63 - 1

#: NUL and any surrogate code point left alone (a valid pair is one character in a `str`).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (storable text has no half characters)."""
    return text if len(text) <= limit else text[:limit]


def whole_number(text: str, largest: int = INTEGER_MAX) -> int | None:
    """`text` as a whole number within ±`largest`, or None.

    Only ASCII digits with an optional leading `-`: `str.isdigit` also says yes to `²`,
    which `int` refuses, and a number past `largest` would fail at the database.
    """
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(largest)):
        return None
    value = int(text)
    return value if -largest <= value <= largest else None
