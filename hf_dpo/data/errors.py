"""`DataError`, the error of bad preference data, and the hint every row error ends with."""

from __future__ import annotations

from hf_dpo.errors import HfDpoError

SKIP_HINT = "Fix the row, or set `on_bad_rows: skip` in the recipe to drop such rows (they are counted)."


class DataError(HfDpoError, ValueError):
    """Bad preference data; the message names the source, row and column and says what to do."""
