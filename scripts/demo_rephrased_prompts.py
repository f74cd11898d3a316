"""The demo's held-out questions asked in wordings no demo prompt uses, to score a demo adapter again.

    python scripts/demo_rephrased_prompts.py runs/rephrased.txt
    hf-dpo eval runs/demo --test-prompts-file runs/rephrased.txt --output-dir runs/demo_rephrased \
        --max-new-tokens 256

Every held-out country is asked in all three rephrasings below, every held-out sum in one of them (drawn with a
fixed seed), so the file asks the same questions as recipes/data/demo/prompts_test.txt (the demo judge's
`question_of` keys) in as many prompts. None of these wordings is among the six capital and the four arithmetic
phrasings that the demo's train and held-out prompts use.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hf_dpo.pairs.demo_task import arithmetic_of, demo_prompts, prompt_country, question_of

CAPITAL_REPHRASINGS = (
    "Which city serves as the capital of {country}?",
    "I'd like to know the capital of {country}.",
    "{country}: what is its capital city?",
)
ARITHMETIC_REPHRASINGS = {
    "+": ("What's {a} plus {b}?", "Find {a} + {b}.", "Work out {a} plus {b}."),
    "-": ("What's {a} minus {b}?", "Find {a} - {b}.", "Work out {a} minus {b}."),
    "*": ("What's {a} times {b}?", "Find {a} * {b}.", "Work out {a} times {b}."),
}


def rephrased_prompts(seed: int = 7) -> list[str]:
    """The held-out questions, in the order they first appear in the held-out prompts, rephrased."""
    rng = random.Random(seed)
    prompts, asked = [], set()
    for prompt in demo_prompts("test"):
        question = question_of(prompt)
        if question in asked:
            continue
        asked.add(question)
        country = prompt_country(prompt)
        if country:
            prompts += [p.format(country=country) for p in CAPITAL_REPHRASINGS]
        else:
            op, a, b = arithmetic_of(prompt)
            prompts.append(rng.choice(ARITHMETIC_REPHRASINGS[op]).format(a=a, b=b))
    rng.shuffle(prompts)  # mix the two kinds, as the held-out file does
    return prompts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/demo_rephrased_prompts.py OUT_FILE")
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(p + "\n" for p in rephrased_prompts()), encoding="utf-8")
    print(f"wrote {out} ({len(rephrased_prompts())} prompts)")
