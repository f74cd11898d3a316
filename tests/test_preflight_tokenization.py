"""Preflight runs every row through the chat template and the tokenizer, and checks the length keys, before any
model weight loads: a row the template refuses, or a split that truncation would empty, ends in one `error:` line
naming the file, row, column or key — not a jinja traceback after the model (and the reference pass) started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.config import RecipeError, load_recipe

# A template of the kind many chat models ship: turns must go user, assistant, user, ...; no system turn.
STRICT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _save_tokenizer(smollm_dir: str, out: Path, template: str | None) -> str:
    """SmolLM2's tokenizer files alone (no weights, no config) with `template` as its chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def strict_dir(smollm_dir, tmp_path_factory) -> str:
    return _save_tokenizer(smollm_dir, tmp_path_factory.mktemp("strict-template"), STRICT_TEMPLATE)


@pytest.fixture(scope="module")
def no_template_dir(smollm_dir, tmp_path_factory) -> str:
    return _save_tokenizer(smollm_dir, tmp_path_factory.mktemp("no-template"), None)


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before every row was templated and tokenized")

    monkeypatch.setattr("hf_dpo.run.load_policy", refuse)
    monkeypatch.setattr("hf_dpo.run.build_trainer", refuse)


def _pairs(n: int) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": f"{i}?"} for i in range(n)]


def _messages(*roles: str) -> list[dict]:
    return [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]


def _write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train(tmp_path: Path, capsys, train_rows: list, *overrides: str, test_rows: list | None = None):
    """`hf-dpo train` on these rows in-process: (exit code, the one error line or None, the run dir)."""
    _write_jsonl(tmp_path / "data" / "train.jsonl", train_rows)
    _write_jsonl(tmp_path / "data" / "test.jsonl", test_rows if test_rows is not None else _pairs(2))
    run = tmp_path / "new" / "run"
    argv = [
        "train",
        "--dataset_name",
        str(tmp_path / "data"),
        "--output_dir",
        str(run),
        "--report_to",
        "none",
    ]
    rc = cli.main([*argv, *overrides])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == (1 if rc else 0), err
    return rc, (lines[0] if lines else None), run


def _recipe(tmp_path: Path, *overrides: str):
    return load_recipe(
        None,
        [
            "--dataset_name",
            str(tmp_path / "data"),
            "--output_dir",
            str(tmp_path / "run"),
            "--report_to",
            "none",
        ]
        + list(overrides),
    )


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize("prompt_length", ["64", "100"])
def test_max_prompt_length_not_below_max_length_is_refused_naming_both_keys(
    tmp_path, capsys, no_model, prompt_length
):
    rc, line, _ = train(
        tmp_path, capsys, _pairs(3), "--max_length", "64", "--max_prompt_length", prompt_length
    )
    assert rc == 2
    assert f"key 'max_prompt_length': must be below max_length (64), got {prompt_length}" in line, line
    assert "Lower max_prompt_length (e.g. 32) or raise max_length" in line


def test_max_prompt_length_just_below_max_length_is_accepted():
    assert (
        load_recipe(None, ["--max_length", "64", "--max_prompt_length", "63"]).training.max_prompt_length
        == 63
    )
    with pytest.raises(RecipeError, match="Raise max_length"):  # no max_prompt_length fits under 1
        load_recipe(None, ["--max_length", "1", "--max_prompt_length", "1"])
