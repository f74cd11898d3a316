"""Hostile inputs found by an audit after issue 12's (tests/test_hardening.py): each test failed before its fix.

Labelling into an existing pairs file, sampling outputs that would replace other files, preference data that was
silently cut short or crashed the tokenizer, prompts files with a byte-order mark or foreign roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _samples(path: Path) -> Path:
    rows = [{"index": i, "prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(2)]
    return _write_jsonl(path, rows)


# ---------------------------------------------------------------- hand labelling never replaces other pairs


def test_label_out_that_is_an_existing_pairs_file_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    """`hf-dpo label S --out train.jsonl` on a judge's (or anyone's) pairs file: before, the server started and
    the first click rewrote it with the one hand-labelled pair; its 100 rows were gone."""
    import socketserver

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    samples = _samples(tmp_path / "s.jsonl")
    pairs = _write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"P{i}", "chosen": "c", "rejected": "r", "score_chosen": 1.0} for i in range(100)],
    )
    before = pairs.read_bytes()
    rc = cli.main(["label", str(samples), "--out", str(pairs), "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.jsonl already exists" in err and "100 rows would be lost" in err
    assert "Traceback" not in err and pairs.read_bytes() == before


def test_label_resumes_into_its_own_pairs_file(tmp_path):
    """The guard above leaves resuming alone: OUT written by labelling, with its log beside it, reopens."""
    from hf_dpo.pairs.label_store import LabelStore

    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    again = LabelStore(samples)
    assert again.state()["done"] == 1 and len(again.pairs()) == 1
    # ... but not when its log is gone: the pairs file is then the only copy of those labels.
    again.log.unlink()
    with pytest.raises(Exception, match="no decision log"):
        LabelStore(samples)
