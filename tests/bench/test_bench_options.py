"""`hf-dpo bench`'s options are checked once, before any line runs."""

from __future__ import annotations

import json

import pytest

from hf_dpo import cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quantization", "3bit"], "--quantization 3bit: choose from 4bit, 8bit, none"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
        (
            ["--warmup", "1" + "0" * 30],
            "--warmup 1000000000000000000000000000000 is over 100000000 (10^8 steps",
        ),
        (["--max-length", "100000000"], "--max-length 100000000 is over 4194304 (4M tokens"),
        (["--out", "{d}"], "is a directory"),
        (["--out", "{d}/file.txt/bench.json"], "cannot be written"),
        (["--recipe", "{d}/missing.yaml"], "missing.yaml cannot be read"),
        (["--recipe", "{d}/bad.yaml"], "bad.yaml cannot be read (ParserError"),
        (["--data-sets", "{d}/broken.jsonl"], "broken.jsonl, line 2: not valid JSON"),
        (["--data-sets", "{d}/no_prompt.jsonl"], "no_prompt.jsonl, row 0: no prompt"),
    ],
)
def test_bench_options_are_checked_before_any_line_runs(
    write_jsonl, tmp_path, monkeypatch, capsys, argv, message
):
    """Before: a bad --quantization, --steps or --out was met in each line's fresh process (a model load each) or
    after the whole bench (--out: the table was lost); a bad --recipe or data file was a Python traceback."""
    pytest.importorskip("trl")

    def refuse(*args, **kwargs):
        raise AssertionError("a bench line started before the options were checked")

    monkeypatch.setattr("hf_dpo.bench.runner.spawn", refuse)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("lora_r: [1\n")
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (tmp_path / "broken.jsonl").write_text(json.dumps(row) + "\n{not json\n")
    write_jsonl(tmp_path / "no_prompt.jsonl", [{"chosen": "a", "rejected": "b"}] * 4)
    argv = [a.format(d=tmp_path) for a in argv]
    rc = cli.main(["bench", "--quick", "--batch-size", "1", "--out", str(tmp_path / "b.json"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
