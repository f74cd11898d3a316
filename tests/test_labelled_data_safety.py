"""Labelled and sampled work is never lost or corrupted: an audit of hf_dpo/pairs/ for data loss, corruption and
tracebacks after tests/test_hostile_input.py's. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

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
