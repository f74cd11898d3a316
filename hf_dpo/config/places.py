"""Checks of the recipe keys that name places on this machine: a local path that must exist, a directory that
must take files."""

from __future__ import annotations

import os
from pathlib import Path

from hf_dpo.config.errors import RecipeError
from hf_dpo.files import why_not_writable


def check_local_path(value: str | None, key: str) -> None:
    """A value that is clearly a local path (starts with / ./ ../ ~) must exist; Hub ids are left to the loader."""
    if not value or not value.startswith(("/", "./", "../", "~")):
        return
    if not Path(value).expanduser().exists():
        raise RecipeError(f"key '{key}': {value} does not exist. Give an existing directory or a Hub id.")


def check_writable_dir(directory: str | os.PathLike, what: str) -> Path:
    """Prove `directory` takes a file, leaving the disk as it was (`hf_dpo.files.why_not_writable`). RecipeError
    naming `what` otherwise. Returns the path, `~` expanded."""
    problem = why_not_writable(directory)
    if problem is not None:
        raise RecipeError(
            f"{what} {directory} cannot be written to ({problem}). Choose a writable directory."
        )
    return Path(directory).expanduser()
