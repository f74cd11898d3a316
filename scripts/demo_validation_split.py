"""A validation split carved from the demo's *train* prompts, for choosing the demo recipe without its test set.

    python scripts/demo_validation_split.py runs/demo_val_data
    hf-dpo train recipes/demo.yaml --dataset_name runs/demo_val_data \
        --test_prompts_file runs/demo_val_data/prompts_val.txt --eval_num_generations 92 \
        --output_dir runs/demo_val [--learning_rate 5.0e-4 ...]

One question in five (by item: a country, or an arithmetic operation on two numbers, all its phrasings
together) goes to validation. Its prompts, drawn from the demo task's whole train pool (so validation is as large
as the held-out set: as many prompts as recipes/data/demo/prompts_test.txt has lines, in the pool's order), form
prompts_val.txt, and its committed pairs test.jsonl (held-out pairs); the pairs of every other train prompt form
train.jsonl. The demo's held-out prompts are counted, never read into either side.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from hf_dpo.pairs.demo_task import demo_prompts, question_of

DEMO_DATA = Path(__file__).resolve().parent.parent / "recipes" / "data" / "demo"
VALIDATION_PERCENT = 20


def is_validation(prompt: str) -> bool:
    bucket = int(hashlib.sha256(f"val:{question_of(prompt)}".encode()).hexdigest(), 16) % 100
    return bucket < VALIDATION_PERCENT


def write_split(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    prompts = DEMO_DATA.joinpath("prompts_train.txt").read_text(encoding="utf-8").splitlines()
    held_out_size = len(DEMO_DATA.joinpath("prompts_test.txt").read_text(encoding="utf-8").splitlines())
    validation_prompts = [p for p in demo_prompts("train") if is_validation(p)][:held_out_size]
    pairs = [
        json.loads(line)
        for line in DEMO_DATA.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    train = [p for p in pairs if not is_validation(p["prompt"])]
    held_out = [p for p in pairs if is_validation(p["prompt"])]
    out.joinpath("prompts_val.txt").write_text("\n".join(validation_prompts) + "\n", encoding="utf-8")
    for name, rows in (("train.jsonl", train), ("test.jsonl", held_out)):
        out.joinpath(name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    return {
        "train prompts": len(prompts),
        "validation prompts": len(validation_prompts),
        "train pairs": len(train),
        "validation pairs": len(held_out),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/demo_validation_split.py OUT_DIR")
    print(write_split(Path(sys.argv[1])))
