"""One base class for every error a user can fix.

Each module raises its own subclass (`RecipeError`, `DataError`, `JudgeError`, ...) with a message that names
the file, row or key and says what to do; the CLI catches `HfDpoError` alone and prints `error: <message>`
with exit code 2. Anything else is a bug in hf_dpo and keeps its traceback.
"""

from __future__ import annotations


class HfDpoError(Exception):
    """An error in the user's input or environment, with a message that says how to fix it."""
