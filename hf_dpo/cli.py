"""The `hf-dpo` command: wires config, modeling, data, trainer, evaluation and hub together.

    hf-dpo train RECIPE [--key value ...]    train a recipe (any recipe key can be overridden)

Each subcommand is one `cmd_*` function plus an entry in `build_parser`; the algorithms live in the
modules they call.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("hf_dpo")


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def cmd_train(args: argparse.Namespace) -> int:
    from hf_dpo.train import run_training

    run_training(args.recipe, args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-dpo", description="Direct Preference Optimization for Hugging Face models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="Train a recipe: hf-dpo train RECIPE [--key value ...]",
        description="Train a recipe. Every recipe key can be overridden as --key value; "
        "`hf-dpo keys` lists them all with their help.",
        add_help=True,
    )
    p.add_argument("recipe", nargs="?", help="Path to a YAML recipe, e.g. recipes/demo.yaml")
    p.set_defaults(func=cmd_train, takes_overrides=True)

    p = sub.add_parser("keys", help="List every recipe key with its default and help text.")
    p.set_defaults(func=cmd_keys)

    # --- subcommands added by other modules go below (one block each) ---

    return parser


def cmd_keys(args: argparse.Namespace) -> int:
    from hf_dpo.config import recipe_help_parser

    recipe_help_parser().print_help()
    return 0


NO_RECIPE = "\0no-recipe"


def _mark_missing_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`hf-dpo train --key value` (no recipe): stop argparse from taking `value` as the recipe path."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for i, token in enumerate(argv):
        if token in commands:
            takes = commands[token].get_default("takes_overrides")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if takes and nxt is not None and nxt.startswith("--") and nxt != "--help":
                return argv[: i + 1] + [NO_RECIPE] + argv[i + 1 :]
            break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Subcommands that take recipe overrides keep unknown --key value pairs for the recipe loader,
    # which checks them against every recipe key and names the nearest one on a typo.
    argv = _mark_missing_recipe(parser, argv)
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "recipe", None) == NO_RECIPE:
        args.recipe = None
    if getattr(args, "takes_overrides", False):
        args.overrides = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from hf_dpo.config import RecipeError
    from hf_dpo.data import DataError
    from hf_dpo.modeling import ModelLoadError

    try:
        return args.func(args)
    except (UserError, RecipeError, DataError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
