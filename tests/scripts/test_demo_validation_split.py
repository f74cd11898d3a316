"""scripts/demo_validation_split.py: the validation split the demo recipe was chosen on."""

import importlib.util
import json
from pathlib import Path

from hf_dpo.pairs.demo_task import demo_prompts, question_of

ROOT = Path(__file__).resolve().parents[2]


def _split_module():
    spec = importlib.util.spec_from_file_location(
        "demo_validation_split", ROOT / "scripts" / "demo_validation_split.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_holds_whole_questions_from_train_prompts_only(tmp_path):
    split = _split_module()
    counts = split.write_split(tmp_path)
    validation = (tmp_path / "prompts_val.txt").read_text(encoding="utf-8").splitlines()
    train_prompts = (ROOT / "recipes/data/demo/prompts_train.txt").read_text(encoding="utf-8").splitlines()
    test_prompts = set((ROOT / "recipes/data/demo/prompts_test.txt").read_text(encoding="utf-8").splitlines())
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    held_out = [
        json.loads(line) for line in (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()
    ]

    pool = demo_prompts("train")
    assert set(validation) <= set(pool) and not set(validation) & test_prompts
    assert len(validation) == len(test_prompts)
    # validation prompts are the pool's validation questions, in order; none of their pairs is trained on
    validation_questions = {question_of(p) for p in validation}
    assert validation == [p for p in pool if split.is_validation(p)][: len(validation)]
    assert {question_of(p) for p in train_prompts if split.is_validation(p)} <= validation_questions
    assert not {question_of(r["prompt"]) for r in train} & validation_questions
    assert {question_of(r["prompt"]) for r in held_out} <= validation_questions
    committed = (ROOT / "recipes/data/demo/train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(train) + len(held_out) == len(committed)
    assert counts == {
        "train prompts": len(train_prompts),
        "validation prompts": len(validation),
        "train pairs": len(train),
        "validation pairs": len(held_out),
    }
    assert 0.1 < sum(map(split.is_validation, train_prompts)) / len(train_prompts) < 0.3
