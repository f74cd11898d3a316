"""Labelled and sampled work is never lost or corrupted: an audit of hf_dpo/pairs/ for data loss, corruption and
tracebacks after tests/test_hostile_input.py's. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.label_store import LabelStore, decisions_path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _samples(path: Path, n: int = 3) -> Path:
    rows = [{"index": i, "prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(n)]
    return _write_jsonl(path, rows)


# ---------------------------------------------------------------- the decision log holds whole lines only


def test_a_log_whose_last_line_lost_its_newline_keeps_both_decisions(tmp_path):
    """The log's last newline gone (the person deleted a cut-off last line in an editor that saves without a
    final newline): before, the next decision was glued onto that line, and the next start refused the log
    ('not valid JSON') with both decisions in one unreadable line."""
    samples = _samples(tmp_path / "s.jsonl")
    LabelStore(samples).decide(0, "left")
    log = decisions_path(tmp_path / "s.pairs.jsonl")
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    LabelStore(samples).decide(1, "right")
    again = LabelStore(samples)
    assert again.state()["done"] == 2
    assert [d["choice"] for d in again.decisions.values()] == ["left", "right"]


def test_a_decision_that_could_not_be_saved_is_not_in_the_log(tmp_path, monkeypatch):
    """The disk failing at the fsync (full, I/O error): the page said 'not saved, press the key again', but the line
    stayed in the log; pressed again, the log held the decision twice, and after a restart one undo left it in
    place (and a half-written line would have had the next decision glued onto it)."""
    import errno
    import os

    from hf_dpo.pairs import label_store

    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    log = decisions_path(store.out)
    before = log.read_bytes()

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(label_store.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        store.decide(1, "left")
    assert log.read_bytes() == before  # "not saved" is true
    monkeypatch.setattr(label_store.os, "fsync", real_fsync)
    store.decide(1, "right")  # pressed again, with the other key
    again = LabelStore(samples)
    assert [d["choice"] for d in again.decisions.values()] == ["left", "right"]
    again.undo()
    assert again.state()["done"] == 1 and again.state()["current"]["index"] == 1
