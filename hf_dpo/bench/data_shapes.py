"""The bench's data sets: the demo pairs, and generated sets of other shapes (made by code, seeded, no download).

Prefix sharing computes each prompt once per pair instead of twice, so its gain grows with the prompt's share
of the tokens; the sets span that share:

    demo          recipes/data/demo/train.jsonl: short arithmetic prompts, short answers
    long_prompt   a report of 7-12 facts, then a question; a few-word answer        (prompt-heavy)
    long_answer   a one-line request; answers of 6-11 sentences                     (completion-heavy)
    multi_turn    2-4 earlier user/assistant turns as the prompt; a 1-3 sentence reply

Every row is conversational (`prompt` a list of messages, `chosen`/`rejected` one assistant message), the
form both trainers read alike.
"""

from __future__ import annotations

import random
from pathlib import Path

from hf_dpo.bench.lines import BenchError
from hf_dpo.errors import quoted

DEMO_DATA = Path("recipes/data/demo/train.jsonl")
DATA_SETS = ("demo", "long_prompt", "long_answer", "multi_turn")

PLACES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Quebec", "Tbilisi", "Porto", "Dakar", "Perth"]
THINGS = [
    "bakery",
    "library",
    "ferry",
    "orchard",
    "workshop",
    "clinic",
    "market",
    "brewery",
    "school",
    "farm",
]
UNITS = ["crates", "visitors", "loaves", "tickets", "books", "barrels", "parcels", "lessons"]
MONTHS = ["January", "March", "April", "June", "August", "October", "November", "December"]
VERBS = ["sold", "received", "counted", "shipped", "lost", "recorded"]
ADJECTIVES = ["old", "busy", "small", "new", "quiet", "famous", "rural", "riverside"]
TOPICS = ["tides", "bread", "bridges", "bees", "maps", "clocks", "rivers", "tea", "glass", "sails"]
CLAUSES = [
    "which matters more than most people expect",
    "as the records from the last decade show",
    "although the details vary from place to place",
    "and the effect is easy to see on a clear day",
    "because the materials change with the seasons",
    "so the local guides explain it with a simple drawing",
    "while older accounts describe it rather differently",
    "and the numbers have been stable for years",
]


def _fact(rng: random.Random) -> tuple[str, str, str, str, int]:
    adj, thing, place = rng.choice(ADJECTIVES), rng.choice(THINGS), rng.choice(PLACES)
    verb, unit, month, n = rng.choice(VERBS), rng.choice(UNITS), rng.choice(MONTHS), rng.randint(12, 980)
    return f"The {adj} {thing} in {place} {verb} {n} {unit} in {month}.", thing, place, verb, n


def _sentence(rng: random.Random, topic: str) -> str:
    subject = rng.choice(
        [f"The study of {topic}", f"Most {topic}", f"Local {topic}", f"The history of {topic}"]
    )
    verb = rng.choice(["depends on", "changes with", "is shaped by", "reflects", "follows"])
    obj = rng.choice(["the climate", "trade routes", "old customs", "the calendar", "craft skills"])
    return f"{subject} {verb} {obj}, {rng.choice(CLAUSES)}."


def _pair(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def long_prompt_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        facts = [_fact(rng) for _ in range(rng.randint(7, 12))]
        _, thing, place, verb, count = rng.choice(facts)
        report = " ".join(f[0] for f in facts)
        question = f"How many did the {thing} in {place} say it {verb}? Answer with the number."
        wrong = count + rng.choice([-7, -1, 1, 3, 10])
        rows.append(_pair(_user(f"Read this report.\n\n{report}\n\n{question}"), f"{count}.", f"{wrong}."))
    return rows


def long_answer_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, place = rng.choice(TOPICS), rng.choice(PLACES)
        chosen = " ".join(_sentence(rng, topic) for _ in range(rng.randint(6, 11)))
        rejected = " ".join(_sentence(rng, rng.choice(TOPICS)) for _ in range(rng.randint(6, 11)))
        rows.append(_pair(_user(f"Tell me about {topic} in {place}."), chosen, rejected))
    return rows


def multi_turn_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        messages = []
        for _turn in range(rng.randint(2, 4)):
            place = rng.choice(PLACES)
            messages.append({"role": "user", "content": f"And what about {topic} in {place}? Keep it short."})
            messages.append({"role": "assistant", "content": _sentence(rng, topic)})
        messages.append({"role": "user", "content": f"Which of these matters most for {topic}, and why?"})
        chosen = " ".join(_sentence(rng, topic) for _ in range(rng.randint(1, 3)))
        rejected = " ".join(_sentence(rng, rng.choice(TOPICS)) for _ in range(rng.randint(1, 3)))
        rows.append(_pair(messages, chosen, rejected))
    return rows


def arithmetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """The demo's shape (short arithmetic prompt, terse or chatty answer), for when recipes/data/demo/ is absent."""
    rng = random.Random(seed)
    fillers = [
        "Sure! Let me work through this carefully.",
        "Great question, I am happy to help with that.",
        "Let's think about it step by step, starting from the first number.",
        "I hope this helps, and feel free to ask if you have any other questions!",
    ]
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        verb, result = rng.choice([("Add", a + b), ("Multiply", a * b)])
        chatty = " ".join(rng.sample(fillers, rng.randint(1, len(fillers))))
        wrong = result + rng.choice([-10, -1, 1, 2, 10])
        rows.append(_pair(_user(f"{verb} {a} and {b}."), f"{result}.", f"{chatty} The result is {wrong}."))
    return rows


def read_pairs(path: str | Path, n: int) -> list[dict]:
    """The first `n` prompt/chosen/rejected rows of a .jsonl file, in conversational form."""
    from hf_dpo.files import read_jsonl

    try:
        rows = [row for _, row in read_jsonl(path, error=BenchError)]
    except OSError as err:
        raise BenchError(f"{path}: cannot be read ({err.strerror or err}).") from None
    for index, row in enumerate(rows[:n]):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise BenchError(
                f"{path}, row {index}: no {', '.join(missing)}; the bench reads prompt/chosen/rejected rows."
            )
    if len(rows) < n:
        raise BenchError(
            f"{path} has {len(rows)} pairs; the bench needs {n} (lower --steps or --batch-size)."
        )
    out = []
    for row in rows[:n]:
        prompt = row["prompt"] if isinstance(row["prompt"], list) else _user(row["prompt"])
        chosen, rejected = (
            row[k] if isinstance(row[k], list) else [{"role": "assistant", "content": row[k]}]
            for k in ("chosen", "rejected")
        )
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


GENERATORS = {
    "long_prompt": long_prompt_pairs,
    "long_answer": long_answer_pairs,
    "multi_turn": multi_turn_pairs,
}


def load_data_set(name: str, n: int, seed: int = 0, demo_path: str | Path | None = None) -> tuple[list, str]:
    """(rows, where they came from) for a data set name, or for a path to a .jsonl file."""
    if name in GENERATORS:
        return GENERATORS[name](n, seed), f"generated ({name}, seed {seed})"
    if name == "demo":
        path = Path(demo_path or DEMO_DATA)
        if path.is_file():
            return read_pairs(path, n), str(path)
        return arithmetic_pairs(n, seed), f"generated arithmetic pairs (no {path}; seed {seed})"
    try:
        is_file = Path(name).is_file()
    except (OSError, ValueError):  # a name too long for a path, a NUL byte: no file, as for any unknown name
        is_file = False
    if is_file:
        return read_pairs(name, n), name
    raise BenchError(f"unknown data set {quoted(name)}: use {', '.join(DATA_SETS)} or a .jsonl path")


def token_shares(prompt_lengths: list[int], completion_lengths: list[tuple[int, int]]) -> dict:
    """Token counts per pair as a plain implementation computes them (prompt+chosen and prompt+rejected):
    the prompt's share of those tokens is what prefix sharing saves half of."""
    prompt = 2 * sum(prompt_lengths)
    completions = sum(c + r for c, r in completion_lengths)
    total = prompt + completions
    return {
        "tokens_per_pair": total / max(len(prompt_lengths), 1),
        "prompt_share": prompt / total if total else 0.0,
        "completion_share": completions / total if total else 0.0,
    }
