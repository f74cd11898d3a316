"""One base class for every error a user can fix.

Each module raises its own subclass (`RecipeError`, `DataError`, `JudgeError`, ...) with a message that names
the file, row or key and says what to do; the CLI catches `HfDpoError` alone and prints `error: <message>`
with exit code 2. Anything else is a bug in hf_dpo and keeps its traceback. A value quoted in a message goes
through `quoted` (or `shortened`): bounded in length, and in the work it takes to show.
"""

from __future__ import annotations

import reprlib
from typing import Any


class HfDpoError(Exception):
    """An error in the user's input or environment, with a message that says how to fix it."""


# The longest a value is quoted in an error message: enough to recognise it, never the whole of a huge one.
MAX_QUOTED = 120


def _bounded_repr() -> reprlib.Repr:
    """A repr that visits a bounded number of items: a YAML alias bomb (lists of lists of the same list, billions
    of items once expanded) is shown by its first few, never walked whole."""
    bounded = reprlib.Repr()
    bounded.maxlevel = 3
    bounded.maxlist = bounded.maxtuple = bounded.maxset = bounded.maxfrozenset = bounded.maxdict = 8
    bounded.maxstring = bounded.maxother = MAX_QUOTED
    bounded.maxlong = 40
    return bounded


_REPR = _bounded_repr()


def quoted(value: Any, limit: int = MAX_QUOTED) -> str:
    """`repr(value)` for an error message, at most `limit` characters ('...' where it was cut), on one line.

    Every message that shows a value the user gave goes through here: a megabyte string, a deeply nested list or
    an integer of thousands of digits costs no more to show than a word."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300-digit str limit
        text = (
            f"<a {value.bit_length()}-bit number>" if isinstance(value, int) else f"<{type(value).__name__}>"
        )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shortened(text: Any, limit: int = 80) -> str:
    """`text` as it reads (no quotes) on one line, at most `limit` characters; a value that is no string is
    `quoted`."""
    text = text if isinstance(text, str) else quoted(text, limit)
    text = text[: limit + 1].replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
