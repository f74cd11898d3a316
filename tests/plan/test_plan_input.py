"""`hf-dpo plan` on inputs it cannot use: a local config.json it cannot read, a model without a tokenizer, memory
sizes that are no size, a model name too long for a path. Each ends in one `error:` line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_dpo import cli


@pytest.fixture
def plan(write_jsonl, arithmetic_pairs):
    """plan(tmp_path, capsys, recipe) -> (exit code, stderr) of `hf-dpo plan RECIPE --device cpu` in-process."""

    def run(tmp_path: Path, capsys, recipe: str) -> tuple[int, str]:
        write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
        path = tmp_path / "r.yaml"
        path.write_text(f"dataset_name: {tmp_path / 'data'}\noutput_dir: {tmp_path / 'run'}\n{recipe}")
        rc = cli.main(["plan", str(path), "--device", "cpu"])
        return rc, capsys.readouterr().err

    return run


@pytest.mark.parametrize("config", ["{bad", "[1, 2]", b"\xff\xfe{}"])
def test_plan_names_a_local_config_json_it_cannot_read(plan, one_error, tmp_path, capsys, config):
    # Before: a JSONDecodeError (or AttributeError, UnicodeDecodeError) traceback from hf_dpo/plan/arch.py.
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    rc, err = plan(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2
    assert re.search(r"model/config.json.*(not valid JSON|not a JSON object|not UTF-8)", one_error(err))


def test_plan_names_a_local_model_without_a_tokenizer(plan, one_error, tmp_path, capsys):
    # Before: "ValueError: Couldn't instantiate the backend tokenizer" traceback, from measuring the data's rows.
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    config |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
    (model / "config.json").write_text(json.dumps(config))
    rc, err = plan(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2 and re.search(r"key 'model_name_or_path': .*tokenizer", one_error(err))


@pytest.mark.parametrize("text", ["0", "0GB", "1.2.3GB", "."])
def test_plan_memory_sizes_that_are_no_size_are_named(text):
    """Before: '1.2.3GB' and '.' raised ValueError from float(); '0' planned against 0 bytes ('does not fit')."""
    from hf_dpo.plan.arch import PlanError
    from hf_dpo.plan.fit import parse_size

    with pytest.raises(PlanError, match=f"memory size '{text}'"):
        parse_size(text)


def test_plan_a_model_name_too_long_for_a_path_is_named(monkeypatch):
    """Before: OSError 'File name too long' from pathlib while looking for a local config.json."""
    from hf_dpo.plan.arch import PlanError, load_arch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("hf_dpo.plan.arch._hub_reachable", lambda: False)
    with pytest.raises(PlanError, match="No architecture for 'aaaa"):
        load_arch("a" * 300)
