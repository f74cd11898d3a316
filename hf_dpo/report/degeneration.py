"""Degenerate answers: loops and repeated n-grams, the failure DPO tends to cause when it pushes a small model
too far (e.g. "21 minus 16 is 21. 21 minus 16 is 21. ..." or one made-up word repeated to the end).

    is_looping("21 minus 16 is 21. " * 5)      # True
    repeated_ngram_share("a b c d a b c d")      # 0.2: 1 of the 5 word 4-grams repeats an earlier one

Pure functions of text; the report applies them to the judged answers of both policy and reference.
"""

from __future__ import annotations

import re

NGRAM = 4  # word n-grams for the repetition share
LOOP_NGRAM_REPEATS = 3  # a word 4-gram seen this often in one answer is a loop
LOOP_UNIT_REPEATS = 4  # ... and so is a span of >= 3 characters repeated back to back this often
_BACK_TO_BACK = re.compile(r"(.{3,}?)\1{" + str(LOOP_UNIT_REPEATS - 1) + ",}", re.DOTALL)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """Share of the answer's word n-grams that repeat an earlier one (0: none; near 1: one phrase over and over)."""
    grams = _ngrams(_words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_looping(text: str) -> bool:
    """Whether the answer loops: one word 4-gram 3+ times, or a span of 3+ characters 4+ times back to back
    (catches "LadishadLadishadLadishad..." that has no spaces to split on)."""
    grams = _ngrams(_words(text), NGRAM)
    counts: dict[tuple[str, ...], int] = {}
    for g in grams:
        counts[g] = counts.get(g, 0) + 1
        if counts[g] >= LOOP_NGRAM_REPEATS:
            return True
    return _BACK_TO_BACK.search(text) is not None
