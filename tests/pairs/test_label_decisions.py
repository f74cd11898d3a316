"""The decision log of `hf-dpo label` (hf_dpo/pairs/label_store.py): decisions keyed to the content they judged, a
restart after a kill between the log and the pairs, every one of K answers shown, identical answers never paired."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_store import LabelStore, decisions_path


def _write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(answers=(("Paris.", "Lyon"), ("Tokyo.", "Kyoto"))) -> list[dict]:
    return [{"index": i, "prompt": f"Question {i}?", "completions": list(a)} for i, a in enumerate(answers)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_decisions_on_regenerated_samples_are_refused_not_replayed(tmp_path):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    out = tmp_path / "pairs.jsonl"
    store = LabelStore(samples, out)
    store.decide(0, "left")
    store.decide(1, "right")
    assert len(_lines(out)) == 2
    logged = _lines(decisions_path(out))
    assert all("key" in d and "item" in d for d in logged)
    # The samples are regenerated: same prompts and indices, new answers. Replaying "left"/"right" onto them
    # would write pairs nobody saw.
    _write_samples(tmp_path / "s.jsonl", _rows((("Marseille", "Nice"), ("Tokyo.", "Kyoto"))))
    with pytest.raises(SamplingError, match=r"line 1: the decision on prompt 0 was made on other answers"):
        LabelStore(samples, out)
    assert len(_lines(out)) == 2  # nothing rewritten


def test_a_log_without_content_keys_is_refused(tmp_path):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    out = tmp_path / "pairs.jsonl"
    decisions_path(out).write_text(json.dumps({"index": 0, "choice": "left", "time": 1.0}) + "\n")
    with pytest.raises(SamplingError, match="made on other answers"):
        LabelStore(samples, out)


def test_restart_after_a_kill_between_the_log_and_the_pairs_rebuilds_the_pairs(tmp_path, monkeypatch):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    out = tmp_path / "pairs.jsonl"
    store = LabelStore(samples, out)
    store.decide(0, "left")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the fsynced log line, before the pairs rewrite

    monkeypatch.setattr(store, "_write_pairs", killed)
    with pytest.raises(KeyboardInterrupt):
        store.decide(1, "right")  # the last prompt: no later decision would ever rewrite the pairs
    assert len(_lines(out)) == 1
    monkeypatch.undo()
    again = LabelStore(samples, out)
    assert again.state()["current"] is None
    assert [p["index"] for p in _lines(out)] == [0, 1]


def test_every_one_of_k_answers_is_shown_and_identical_answers_are_never_paired(tmp_path):
    rows = [
        {"index": 0, "prompt": "Name a fruit.", "completions": ["apple", "pear", "plum", "fig"]},
        {"index": 1, "prompt": "Say yes.", "completions": ["yes", "yes", " yes "]},  # nothing to choose
        {"index": 2, "prompt": "Name a colour.", "completions": ["red", "red", "blue", ""]},
    ]
    store = LabelStore(_write_samples(tmp_path / "s.jsonl", rows), tmp_path / "p.jsonl")
    state = store.state()
    assert state["unlabellable_prompts"] == 1
    shown: dict[int, set] = {}
    while state["current"] is not None:
        cur = state["current"]
        assert cur["left"].strip() and cur["right"].strip() and cur["left"].strip() != cur["right"].strip()
        shown.setdefault(cur["index"], set()).update([cur["left"], cur["right"]])
        state = store.decide(cur["index"], "left", cur["item"])
    assert shown[0] == {"apple", "pear", "plum", "fig"}  # all K, not the first two
    assert shown[2] == {"red", "blue"} and 1 not in shown
    for pair in _lines(tmp_path / "p.jsonl"):
        assert pair["chosen"] != pair["rejected"]


def test_samples_whose_answers_are_all_identical_cannot_be_labelled(tmp_path):
    rows = [{"index": 0, "prompt": "p", "completions": ["same", "same"]}]
    with pytest.raises(SamplingError, match="nothing to label"):
        LabelStore(_write_samples(tmp_path / "s.jsonl", rows))
