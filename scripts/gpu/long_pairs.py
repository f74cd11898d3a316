"""Preference pairs of GPU-training length, generated (seeded, no download) from the bench's sentence makers:
a prompt of three fact reports (~500 tokens) and answers of 6-11 sentences each (100-200 tokens).

    python scripts/gpu/long_pairs.py OUT_DIR [--train 64] [--test 8] [--reports 3]

Writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl (conversational rows: prompt, chosen, rejected): the directory
layout `dataset_name` reads; `hf-dpo bench --data-sets OUT_DIR/train.jsonl` reads the training file."""

import argparse
import json
from pathlib import Path

from hf_dpo.bench.data_shapes import long_answer_pairs, long_prompt_pairs


def long_pairs(n: int, seed: int, reports_per_prompt: int = 3) -> list[dict]:
    per = reports_per_prompt
    reports = long_prompt_pairs(per * n, seed=seed)
    answers = long_answer_pairs(n, seed=seed + 1)
    rows = []
    for i, answer in enumerate(answers):
        text = "\n\n".join(r["prompt"][0]["content"] for r in reports[per * i : per * i + per])
        rows.append(
            {"prompt": [{"role": "user", "content": text}], **{k: answer[k] for k in ("chosen", "rejected")}}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument(
        "--reports",
        type=int,
        default=3,
        help="fact reports per prompt (~170 tokens each; 1 in the CPU rehearsal)",
    )
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {
        "train.jsonl": long_pairs(args.train, 0, args.reports),
        "test.jsonl": long_pairs(args.test, 1000, args.reports),
    }
    for name, rows in splits.items():
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{out}: {args.train} train, {args.test} test pairs")


if __name__ == "__main__":
    main()
