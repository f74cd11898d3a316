"""How every `hf-dpo` parser reads a command line token that starts with '-' but is a number.

argparse takes `-1` and `-0.5` for values but `-1e-3`, `-.5e1`, `-inf`, `-1_000` for options, so
`--learning_rate -1e-3` failed with "expected one argument" and never reached the check that says what the
value may be. `numbers_read_as_values(parser)` makes the parser take every token Python's `float()` reads
as a negative number for a value (none of hf_dpo's options looks like a number).

    parser = numbers_read_as_values(argparse.ArgumentParser())
"""

from __future__ import annotations

import argparse
import re

# What float() reads after a minus sign: digits with '_' between them, a fraction, an exponent; inf, nan.
_DIGITS = r"\d(?:_?\d)*"
NEGATIVE_NUMBER = re.compile(
    rf"^-(?:(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][-+]?{_DIGITS})?|inf(?:inity)?|nan)$",
    re.IGNORECASE,
)


def numbers_read_as_values(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser`, and each subcommand parser under it, reading negative numbers in any float() form as values."""
    # argparse's own switch (a private attribute since Python 3.2, the one place it decides this)
    parser._negative_number_matcher = NEGATIVE_NUMBER
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                numbers_read_as_values(sub)
    return parser
