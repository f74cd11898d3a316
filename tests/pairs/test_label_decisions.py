"""The decision log of `hf-dpo label` (hf_dpo/pairs/label_store.py): decisions keyed to the content they judged,
whole lines only (a decision cut off mid-write is dropped with a note, one that could not be saved is not in the
log), a restart after a kill between the log and the pairs, pairs the log no longer holds kept, a row deleted
from the samples named, every one of K answers shown, identical answers never paired."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_store import LabelStore, decisions_path


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_decisions_on_regenerated_samples_are_refused_not_replayed(sample_rows, write_jsonl, tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
    out = tmp_path / "pairs.jsonl"
    store = LabelStore(samples, out)
    store.decide(0, "left")
    store.decide(1, "right")
    assert len(_lines(out)) == 2
    logged = _lines(decisions_path(out))
    assert all("key" in d and "item" in d for d in logged)
    # The samples are regenerated: same prompts and indices, new answers. Replaying "left"/"right" onto them
    # would write pairs nobody saw.
    write_jsonl(tmp_path / "s.jsonl", sample_rows((("Marseille", "Nice"), ("Tokyo.", "Kyoto"))))
    with pytest.raises(SamplingError, match=r"line 1: the decision on prompt 0 was made on other answers"):
        LabelStore(samples, out)
    assert len(_lines(out)) == 2  # nothing rewritten


def test_a_log_without_content_keys_is_refused(sample_rows, write_jsonl, tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
    out = tmp_path / "pairs.jsonl"
    decisions_path(out).write_text(json.dumps({"index": 0, "choice": "left", "time": 1.0}) + "\n")
    with pytest.raises(SamplingError, match="made on other answers"):
        LabelStore(samples, out)


def test_restart_after_a_kill_between_the_log_and_the_pairs_rebuilds_the_pairs(
    sample_rows, write_jsonl, tmp_path, monkeypatch
):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
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


def test_every_one_of_k_answers_is_shown_and_identical_answers_are_never_paired(write_jsonl, tmp_path):
    rows = [
        {"index": 0, "prompt": "Name a fruit.", "completions": ["apple", "pear", "plum", "fig"]},
        {"index": 1, "prompt": "Say yes.", "completions": ["yes", "yes", " yes "]},  # nothing to choose
        {"index": 2, "prompt": "Name a colour.", "completions": ["red", "red", "blue", ""]},
    ]
    store = LabelStore(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "p.jsonl")
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


def test_samples_whose_answers_are_all_identical_cannot_be_labelled(write_jsonl, tmp_path):
    rows = [{"index": 0, "prompt": "p", "completions": ["same", "same"]}]
    with pytest.raises(SamplingError, match="nothing to label"):
        LabelStore(write_jsonl(tmp_path / "s.jsonl", rows))


def test_a_log_whose_last_line_lost_its_newline_keeps_both_decisions(write_samples, tmp_path):
    """The log's last newline gone (the person deleted a cut-off last line in an editor that saves without a
    final newline): before, the next decision was glued onto that line, and the next start refused the log
    ('not valid JSON') with both decisions in one unreadable line."""
    samples = write_samples(tmp_path / "s.jsonl")
    LabelStore(samples).decide(0, "left")
    log = decisions_path(tmp_path / "s.pairs.jsonl")
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    LabelStore(samples).decide(1, "right")
    again = LabelStore(samples)
    assert again.state()["done"] == 2
    assert [d["choice"] for d in again.decisions.values()] == ["left", "right"]


def test_a_decision_that_could_not_be_saved_is_not_in_the_log(write_samples, tmp_path, monkeypatch):
    """The disk failing at the fsync (full, I/O error): the page said 'not saved, press the key again', but the line
    stayed in the log; pressed again, the log held the decision twice, and after a restart one undo left it in
    place (and a half-written line would have had the next decision glued onto it)."""
    import errno
    import os

    from hf_dpo.pairs import label_store

    samples = write_samples(tmp_path / "s.jsonl")
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


def test_a_decision_cut_off_mid_write_is_dropped_with_a_note_and_the_rest_kept(
    write_samples, tmp_path, capsys, monkeypatch
):
    """The server killed while writing a decision (power loss): before, the next start refused the whole log,
    'not valid JSON. Fix or delete that line; ... (a sampling run resumes and redoes missing prompts)', a hint
    about another file. That decision was never confirmed on the page: it is dropped, said so, and its pair shown
    again; every earlier decision is kept."""
    import socketserver

    from hf_dpo import cli

    samples = write_samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    log = decisions_path(store.out)
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"index": 1, "item": [0, 1], "ke')
    reader = LabelStore(samples)  # not the server: reads past the cut line, leaves the file to the server
    assert reader.state()["done"] == 1 and log.read_bytes().endswith(b'"ke')

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    assert cli.main(["label", str(samples), "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "(1 done)" in out and "line 2: a decision cut off mid-write" in out and "shown again" in out
    assert log.read_bytes() == whole
    again = LabelStore(samples)
    again.decide(1, "right")
    assert [d["choice"] for d in LabelStore(samples).decisions.values()] == ["left", "right"]


def test_a_broken_line_inside_the_log_says_what_deleting_it_means(write_samples, tmp_path):
    """A decision line broken in the middle of the log (an edit): before, the hint was the samples file's, 'a sampling
    run resumes and redoes missing prompts', which says nothing of what becomes of a deleted decision."""
    samples = write_samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    store.decide(1, "left")
    log = decisions_path(store.out)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("{broken\n" + lines[1])
    with pytest.raises(SamplingError, match=r"decisions\.jsonl, line 1: not valid JSON") as err:
        LabelStore(samples)
    assert "its pair is then shown again" in str(err.value) and "sampling" not in str(err.value)


@pytest.mark.parametrize("keep", [0, 1])
def test_pairs_the_log_no_longer_holds_are_not_dropped_from_out(write_samples, tmp_path, keep):
    """The decision log emptied or cut short (an edit, a restore from an older copy) while OUT still holds every
    pair: before, the start (cut short) or the first click (emptied) rewrote OUT from the log, and the pairs only
    OUT held were gone."""
    samples = write_samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    for index in range(3):
        store.decide(index, "left")
    log, before = decisions_path(store.out), store.out.read_bytes()
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:keep]))
    with pytest.raises(SamplingError, match=rf"s\.pairs\.jsonl holds {3 - keep} pair\(s\) its decision log"):
        LabelStore(samples)
    assert store.out.read_bytes() == before


def test_a_pair_undone_just_before_a_kill_is_no_reason_to_refuse(write_samples, tmp_path, monkeypatch):
    """Killed between an undo's log line and the rewrite of OUT: OUT still holds the undone pair, which the log
    made; the start rewrites OUT without it."""
    from hf_dpo.pairs import label_store

    samples = write_samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    store.decide(1, "right")
    before = store.out.read_bytes()
    monkeypatch.setattr(label_store.LabelStore, "_write_pairs", lambda self: None)  # the kill
    store.undo()
    monkeypatch.undo()
    assert store.out.read_bytes() == before
    again = LabelStore(samples)
    assert again.state()["done"] == 1 and len(again.out.read_text().splitlines()) == 1


def test_a_row_deleted_from_the_samples_is_named_with_the_way_to_keep_the_labels(write_samples, tmp_path):
    """One row deleted from the samples after labelling: before, 'decision for an unknown prompt or choice ...; this
    log belongs to other samples. Label into another --out, or move the log away': the only ways offered lost every
    label. Now it names the prompt and that putting the row back keeps them all."""
    samples = write_samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    store.decide(1, "right")
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text(lines[0] + lines[2])
    with pytest.raises(
        SamplingError, match=r"line 2: a decision on prompt 1, which .*s\.jsonl no longer holds"
    ) as err:
        LabelStore(samples)
    assert "Put that row back as it was" in str(err.value)
    samples.write_text("".join(lines))
    assert LabelStore(samples).state()["done"] == 2


def test_without_file_locks_the_server_still_cuts_a_decision_cut_off_mid_write(
    write_samples, tmp_path, monkeypatch
):
    """Where there is no fcntl (Windows), the server held nothing, so it never cut a decision cut off mid-write:
    its next decision went on a new line after the fragment, and the start after that refused the log (a broken
    line inside it)."""
    import sys

    from hf_dpo.pairs.label_server import make_server

    samples = write_samples(tmp_path / "s.jsonl")
    LabelStore(samples).decide(0, "left")
    log = decisions_path(tmp_path / "s.pairs.jsonl")
    log.write_bytes(log.read_bytes() + b'{"index": 1, "ite')
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError
    srv = make_server(samples, host="127.0.0.1", port=0)
    try:
        srv.store.decide(1, "right")
    finally:
        srv.server_close()
    assert [d["choice"] for d in LabelStore(samples).decisions.values()] == ["left", "right"]
