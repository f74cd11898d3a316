"""Where a run is pushed and by which process: `HubSettings` (the token in memory only), `take_hub_settings`
(moves the hub keys out of TrainingArguments before a Trainer can save them), `is_main_process` (only
the main process writes the card and pushes), `check_push` (what a push at the end of training needs, checked
before training), and the checks the push makes of its branch and token (`revision_problem`, `token_problem`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from hf_dpo.errors import quoted

if TYPE_CHECKING:  # a type only: importing transformers here would pull torch into `import hf_dpo.hub.push`
    from transformers import TrainingArguments


@dataclass
class HubSettings:
    """Where and how a run is pushed; `token` stays in memory (repr hides it)."""

    repo_id: str
    private: bool = False
    revision: str | None = None
    strategy: str = "every_save"
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"HubSettings(repo_id={self.repo_id!r}, private={self.private}, revision={self.revision!r}, "
            f"strategy={self.strategy!r}, token={'***' if self.token else None})"
        )


def take_hub_settings(args: TrainingArguments) -> HubSettings | None:
    """Move the hub keys out of TrainingArguments (any: hf_dpo's DPOConfig is one, and every key read here is
    TrainingArguments') before a Trainer sees them.

    Sets `args.hub_token = None` (training_args.bin pickles the object, token included) and
    `args.push_to_hub = False` (hf_dpo pushes itself: HubCheckpointCallback + push_run). Returns the
    settings when the recipe asked for a push, else None.
    """
    token = args.hub_token or os.environ.get("HF_TOKEN")
    args.hub_token = None
    if not args.push_to_hub:
        return None
    args.push_to_hub = False
    repo_id = args.hub_model_id or Path(args.output_dir).name
    strategy = (
        args.hub_strategy
    )  # TrainingArguments makes it a HubStrategy (a str Enum); str() would name the class
    return HubSettings(
        repo_id=repo_id,
        private=bool(args.hub_private_repo),
        revision=args.hub_revision,
        strategy=strategy.value if isinstance(strategy, Enum) else strategy,
        token=token,
    )


def is_main_process() -> bool:
    """Whether this process writes the card and pushes: rank 0 of a launch, or a plain process."""
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch set RANK on every process
        return False
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # accelerate not initialised in a plain process: fall back to the launcher's env
        return int(os.environ.get("RANK", "0")) == 0


# What git (and so the Hub) refuses in a branch name (git check-ref-format): a space or control character, any of
# ~ ^ : ? * [ \, '..', '@{' or '//', a part starting with '.', a name starting with '/' or '-', ending with '/', '.'
# or '.lock', or '@' alone.
_NOT_IN_A_BRANCH = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|(^|/)\.|^[/-]|/$|\.$|\.lock$|^@$")


def revision_problem(revision: str | None) -> str | None:
    """Why the Hub would refuse `revision` as the branch a push commits to, or None (None: main)."""
    if revision is None:
        return None
    if not revision.strip():
        return "is empty: give a branch name, or leave it out to push to main"
    if _NOT_IN_A_BRANCH.search(revision):
        return (
            f"{quoted(revision)} is no branch name git accepts (no spaces, no ~ ^ : ? * [ \\, no '..', not "
            "starting with '-' or '.'): give one such as 'dpo-run-1'"
        )
    return None


def token_problem(token: str | None) -> str | None:
    """Why a Hub token cannot be one (it is never shown), or None. Tokens hold no whitespace: a blank one, or one
    with a line break pasted along, would be sent as it is and refused by the Hub as unauthorized."""
    if token is not None and token != "" and any(c.isspace() for c in token):
        return "holds whitespace (a blank value, or a line break pasted with it?): give the token alone"
    return None


def check_push(args) -> None:
    """A recipe that pushes needs, before training starts rather than at the push after it ends: a valid repo
    id and branch, a token that can be one, and huggingface_hub allowed on the network."""
    if not args.push_to_hub:
        return
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_dpo.config import (
        RecipeError,  # the recipe's classes (transformers) only where a recipe is checked
    )

    repo_id = args.hub_model_id or Path(args.output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise RecipeError(f"key 'hub_model_id': '{repo_id}' is not a valid Hub repo id ({err}).") from None
    if problem := revision_problem(args.hub_revision):
        raise RecipeError(f"key 'hub_revision' {problem}.")
    token = args.hub_token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise RecipeError(
            "push_to_hub is on but there is no Hub token: set HF_TOKEN (or run `hf auth login`), or set "
            "push_to_hub: false and push later with `hf-dpo push`."
        )
    if problem := token_problem(token):
        where = "key 'hub_token'" if args.hub_token else "the Hub token (HF_TOKEN or `hf auth login`'s)"
        raise RecipeError(f"{where} {problem}.")
    if constants.HF_HUB_OFFLINE:
        raise RecipeError(
            "push_to_hub is on but HF_HUB_OFFLINE is set: huggingface_hub would make no network call, so the "
            "push after training would fail. Unset HF_HUB_OFFLINE, or set push_to_hub: false and push later "
            "with `hf-dpo push`."
        )
