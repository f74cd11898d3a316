"""Where a run is pushed and by which process: `HubSettings` (the token in memory only), `take_hub_settings`
(moves the hub keys out of TrainingArguments before a Trainer can save them), `is_main_process` (only
the main process writes the card and pushes), and `check_push` (a repo id and a token, before training)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

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


def check_push(args) -> None:
    """A recipe that pushes needs a valid repo id and a token before training starts, not after it ends."""
    if not args.push_to_hub:
        return
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_dpo.config import (
        RecipeError,  # the recipe's classes (transformers) only where a recipe is checked
    )

    repo_id = args.hub_model_id or Path(args.output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise RecipeError(f"key 'hub_model_id': '{repo_id}' is not a valid Hub repo id ({err}).") from None
    if not (args.hub_token or os.environ.get("HF_TOKEN") or get_token()):
        raise RecipeError(
            "push_to_hub is on but there is no Hub token: set HF_TOKEN (or run `hf auth login`), or set "
            "push_to_hub: false and push later with `hf-dpo push`."
        )
