"""`RecipeError`, the error of every recipe section and of the recipe reader, and the nearest-key hint."""

from __future__ import annotations

import difflib

from hf_dpo.errors import HfDpoError


class RecipeError(HfDpoError, ValueError):
    """A recipe or a command-line override is wrong; the message says where and what to do."""


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""
