"""Labelled and sampled work is never lost or corrupted: an audit of hf_dpo/pairs/ for data loss, corruption and
tracebacks after tests/test_hostile_input.py's. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError
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


# ---------------------------------------------------------------- resuming sampling never rewrites a file it refuses


def _recipe(tmp_path: Path, **over):
    from hf_dpo.config import load_recipe

    values = {
        "model_name_or_path": str(tmp_path / "no-model"),  # never loaded: every check here comes before
        "quantization": "none",
        "num_samples_per_prompt": 2,
        "max_new_tokens": 4,
        "output_dir": str(tmp_path / "run"),
        **over,
    }
    args = [x for k, v in values.items() for x in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]
    return load_recipe(None, args)


def _sample_rows(recipe, prompts: list[str]) -> list[dict]:
    from hf_dpo.pairs.sampling import _settings

    settings = _settings(recipe.model, recipe.sampling)
    return [
        {
            "index": i,
            "prompt": p,
            "completions": ["x", "y"],
            "finished": [True, True],
            "settings": dict(settings),
        }
        for i, p in enumerate(prompts)
    ]


def test_a_refused_samples_file_keeps_its_cut_off_last_line(tmp_path):
    """A run killed mid-line, resumed with a changed recipe: before, the cut-off last line was dropped from the file
    and then the file refused (made with other settings); a file that is no samples file at all (samples_file
    pointing at notes, 'hello\\nworld') lost its last line the same way. Nothing is touched before it is known to
    be this run's."""
    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\nThree?\n")
    recipe = _recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?", "Three?"])
    samples = tmp_path / "samples.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in rows[:2]) + json.dumps(rows[2])[:30]
    samples.write_text(text)
    with pytest.raises(SamplingError, match="other sampling settings"):
        sample(_recipe(tmp_path, sampling_temperature=0.3), prompts_file, samples, progress=False)
    assert samples.read_text() == text
    notes = tmp_path / "notes.jsonl"
    notes.write_text("hello\nworld")
    with pytest.raises(SamplingError, match=r"notes\.jsonl, line 1: not valid JSON"):
        sample(recipe, prompts_file, notes, progress=False)
    assert notes.read_text() == "hello\nworld"


def test_a_samples_file_of_this_run_is_still_repaired_in_place(tmp_path):
    """The repair itself, once the file is known to be this run's: a cut-off last line dropped, a missing last
    newline added (the rest of the file as it was)."""
    from hf_dpo.pairs.sampling import _done_indices, _settings

    recipe = _recipe(tmp_path)
    settings = _settings(recipe.model, recipe.sampling)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:20])
    assert _done_indices(samples, ["One?", "Two?"], settings) == {0}
    assert samples.read_text() == json.dumps(rows[0]) + "\n"
    samples.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]))
    assert _done_indices(samples, ["One?", "Two?"], settings) == {0, 1}
    assert samples.read_text() == json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n"


# ---------------------------------------------------------------- prompts files


def test_a_txt_prompt_with_a_unicode_line_separator_stays_one_prompt(tmp_path):
    """U+2028 (pasted from a web page), NEL or a form feed inside a prompt: before, str.splitlines() cut the prompt
    there, and two half prompts were sampled with no word said. Lines end at \\n, \\r\\n or \\r only."""
    from hf_dpo.pairs.formats import read_prompts

    path = tmp_path / "prompts.txt"
    path.write_bytes("Explain this:\u2028x = 1\r\nPage one\x0cpage two\rNext\x85line\n\n".encode())
    assert read_prompts(path) == ["Explain this:\u2028x = 1", "Page one\x0cpage two", "Next\x85line"]


def test_resuming_with_another_system_prompt_is_refused_not_mixed(tmp_path):
    """system_prompt (or apply_chat_template, model_revision) changed between an interrupted run and its resume:
    before, the samples file was resumed, and half its prompts were answered under one system prompt and half
    under the other, while the dataset card named the new one for all. Rows written before these settings were
    recorded are resumed with their defaults."""
    from hf_dpo.pairs.sampling import _done_indices, _settings, sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\nThree?\n")
    recipe = _recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    _write_jsonl(samples, rows)
    before = samples.read_bytes()
    for over, key in [
        ({"system_prompt": "Answer in French."}, "system_prompt"),
        ({"apply_chat_template": False}, "apply_chat_template"),
        ({"model_revision": "v2"}, "revision"),
    ]:
        with pytest.raises(
            SamplingError, match=rf"line 1: made with other sampling settings than now \({key} "
        ):
            sample(_recipe(tmp_path, **over), prompts_file, samples, progress=False)
    assert samples.read_bytes() == before
    # A file from before these keys: its rows have none of them, and resume as made with the defaults.
    for row in rows:
        for key in ("revision", "system_prompt", "apply_chat_template"):
            del row["settings"][key]
    _write_jsonl(samples, rows)
    settings = _settings(recipe.model, recipe.sampling, recipe.data)
    assert _done_indices(samples, ["One?", "Two?", "Three?"], settings) == {0, 1}


# ---------------------------------------------------------------- where hand labels go


def test_an_out_that_cannot_be_written_is_named_before_the_server_starts(tmp_path, capsys, monkeypatch):
    """`hf-dpo label S --out notes.txt/pairs.jsonl` (the parent a file; a read-only disk alike): before, the server
    started and printed 'every decision is already saved', and the first click failed on the page."""
    import socketserver

    from hf_dpo import cli

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    samples = _samples(tmp_path / "s.jsonl")
    (tmp_path / "notes.txt").write_text("my notes\n")
    rc = cli.main(
        ["label", str(samples), "--out", str(tmp_path / "notes.txt" / "pairs.jsonl"), "--port", "0"]
    )
    captured = capsys.readouterr()
    assert rc == 2 and "cannot be written there" in captured.err and "notes.txt is a file" in captured.err
    assert "Open http" not in captured.out and "Traceback" not in captured.err
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_a_second_server_on_the_same_out_is_refused(tmp_path):
    """Two `hf-dpo label` servers on one OUT (a second terminal, another --port): before, both ran, each rewrote
    OUT from its own decisions only (the other's pairs vanished from it) and both appended to one log."""
    from hf_dpo.pairs.label_server import make_server

    samples = _samples(tmp_path / "s.jsonl")
    first = make_server(samples, host="127.0.0.1", port=0)
    try:
        with pytest.raises(
            SamplingError, match=r"s\.pairs\.decisions\.jsonl is in use: another `hf-dpo label`"
        ):
            make_server(samples, host="127.0.0.1", port=0)
        first.store.decide(0, "left")
        other = make_server(samples, tmp_path / "other.jsonl", host="127.0.0.1", port=0)  # another OUT: fine
        other.server_close()
    finally:
        first.server_close()
    again = make_server(samples, host="127.0.0.1", port=0)  # the first one stopped: resumes
    try:
        assert again.store.state()["done"] == 1
    finally:
        again.server_close()
    assert not (tmp_path / "other.jsonl").exists()  # no decision, no pairs file


def test_a_decision_cut_off_mid_write_is_dropped_with_a_note_and_the_rest_kept(tmp_path, capsys, monkeypatch):
    """The server killed while writing a decision (power loss): before, the next start refused the whole log,
    'not valid JSON. Fix or delete that line; ... (a sampling run resumes and redoes missing prompts)', a hint
    about another file. That decision was never confirmed on the page: it is dropped, said so, and its pair shown
    again; every earlier decision is kept."""
    import socketserver

    from hf_dpo import cli

    samples = _samples(tmp_path / "s.jsonl")
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


def test_a_broken_line_inside_the_log_says_what_deleting_it_means(tmp_path):
    """A decision line broken in the middle of the log (an edit): before, the hint was the samples file's, 'a sampling
    run resumes and redoes missing prompts', which says nothing of what becomes of a deleted decision."""
    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    store.decide(1, "left")
    log = decisions_path(store.out)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("{broken\n" + lines[1])
    with pytest.raises(SamplingError, match=r"decisions\.jsonl, line 1: not valid JSON") as err:
        LabelStore(samples)
    assert "its pair is then shown again" in str(err.value) and "sampling" not in str(err.value)


# ---------------------------------------------------------------- where a judge's pairs go


@pytest.mark.parametrize("key", ["samples_file", "pairs_file"])
def test_a_sampling_output_that_is_a_directory_is_named_before_sampling(tmp_path, key):
    """samples_file or pairs_file naming an existing directory: before, the checks passed, and the run ended in
    a traceback (IsADirectoryError), for pairs_file only after every prompt was sampled."""
    from hf_dpo.pairs.formats import check_output_files

    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "out").mkdir()
    recipe = _recipe(
        tmp_path,
        prompts_file=str(tmp_path / "prompts.txt"),
        judge="hf_dpo.pairs.demo_task:judge",
        **{key: str(tmp_path / "out")},
    )
    with pytest.raises(SamplingError, match=r"out, which is a directory\. Set samples_file / pairs_file"):
        check_output_files(recipe, ["train"])


def test_label_with_judge_never_writes_over_its_samples_or_hand_labels(tmp_path):
    """label_with_judge (the Python API; `hf-dpo sample` checks its recipe first) with pairs_file the samples file:
    before, the samples were replaced by the pairs; into hand labels (judge: human), those were replaced; into a
    directory, an IsADirectoryError traceback."""
    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    before = samples.read_bytes()
    judge = "hf_dpo.pairs.demo_task:judge"
    with pytest.raises(SamplingError, match="is the samples file"):
        label_with_judge(samples, judge, tmp_path / "." / "s.jsonl")
    assert samples.read_bytes() == before
    hand = _write_jsonl(
        tmp_path / "hand.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "judge": "human"}]
    )
    hand_before = hand.read_bytes()
    with pytest.raises(SamplingError, match=r"hand\.jsonl exists and line 1 is not a judge's pair"):
        label_with_judge(samples, judge, hand)
    assert hand.read_bytes() == hand_before
    (tmp_path / "dir").mkdir()
    with pytest.raises(SamplingError, match="is a directory"):
        label_with_judge(samples, judge, tmp_path / "dir")
    assert label_with_judge(samples, judge, tmp_path / "pairs.jsonl")["pairs"] == 1
    assert label_with_judge(samples, judge, tmp_path / "pairs.jsonl")["pairs"] == 1  # its own pairs: replaced


# ---------------------------------------------------------------- judges


class _ObjectJudge:
    """A judge object (Python API: `label_with_judge(samples, judge_object, pairs)`) returning `out`."""

    name = "obj"

    def __init__(self, out):
        self.out = out

    def score(self, prompts, completions):
        if isinstance(self.out, Exception):
            raise self.out
        return self.out


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (None, r"returned None from score\(\); it must return a list of one float per completion \(2\)"),
        (3.0, r"returned 3\.0 from score\(\)"),
        ([None, 1.0], r"returned None \(NoneType\) for prompt 7 "),
        (["abc", 1.0], r"returned 'abc' \(str\) for prompt 7 "),
        (["0.5", 1.0], r"returned '0\.5' \(str\) for prompt 7 "),
        (RuntimeError("boom"), r"raised RuntimeError: boom while scoring 2 completions"),
    ],
)
def test_a_judge_object_that_returns_no_numbers_is_a_judge_error(tmp_path, out, message):
    """A judge object whose score() raised, returned None / a float / None or strings in the list: before, a bare
    TypeError/ValueError/RuntimeError from inside float(), or a string '0.5' silently taken for a score."""
    from hf_dpo.pairs.judges import JudgeError
    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 7, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    with pytest.raises(JudgeError, match=message):
        label_with_judge(samples, _ObjectJudge(out), tmp_path / "pairs.jsonl")
    assert not (tmp_path / "pairs.jsonl").exists()


def test_a_judge_object_may_return_numpy_and_torch_scalars(tmp_path):
    import numpy as np
    import torch

    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    stats = label_with_judge(
        samples, _ObjectJudge([np.float32(2.0), torch.tensor(1.0)]), tmp_path / "p.jsonl"
    )
    assert stats["pairs"] == 1


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.parquet", "pairs"])
def test_an_out_of_another_format_is_refused(tmp_path, name):
    """`--out pairs.csv` (or .parquet, or no suffix): before, labelling wrote JSON lines under that name, which
    `hf-dpo train` reads by its suffix: as CSV the first pair became the header, the rest columns of JSON shards."""
    samples = _samples(tmp_path / "s.jsonl")
    with pytest.raises(
        SamplingError, match=rf"--out .*{name}: labelling writes JSON lines.*Name it pairs\.jsonl"
    ):
        LabelStore(samples, tmp_path / name)
    assert LabelStore(samples, tmp_path / "pairs.json").out.name == "pairs.json"


# ---------------------------------------------------------------- replacing a file


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names the fsynced file through /proc (Linux)")
def test_an_atomic_write_is_on_disk_before_it_replaces_the_old_file(tmp_path, monkeypatch):
    """Every pairs file (hand or judge labelled) is replaced through files.atomic_path: before, the temporary file
    was renamed over the old one without an fsync, so a crash soon after could leave an empty pairs file where the
    old one was (the rename reaching the disk before the data)."""
    import os

    from hf_dpo import files

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.atomic_write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    assert [kind for kind, _ in events] == ["fsync", "replace"] and events[0][1] == events[1][1]


class _CriteriaJudge(_ObjectJudge):
    """A judge object with declared criteria whose criteria_scores() returns `out`."""

    criteria = ("correct", "concise")

    def criteria_scores(self, prompts, completions):
        return self.score(prompts, completions)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ([(1.0,), (0.0,)], r"returned \(1\.0,\) for prompt 7 .*one tuple of 2 numbers \(correct, concise\)"),
        ([(1.0, 1.0, 5.0), (0.0, 1.0, 0.0)], r"returned \(1\.0, 1\.0, 5\.0\) for prompt 7 "),
        ([1.0, 0.0], r"returned 1\.0 for prompt 7 "),
        (None, r"returned None from criteria_scores\(\)"),
        (RuntimeError("boom"), r"raised RuntimeError: boom while scoring 2 completions"),
    ],
)
def test_a_criteria_judge_object_with_the_wrong_number_of_criteria_is_a_judge_error(tmp_path, out, message):
    """A judge object whose criteria_scores() gave one value where it declares two criteria: before, an IndexError
    from the gate, a TypeError for plain floats or None, its exception bare; three values where it declares two were
    silently ranked on all three while the pairs' criteria columns showed two."""
    from hf_dpo.pairs.judges import JudgeError
    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 7, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    with pytest.raises(JudgeError, match=message):
        label_with_judge(
            samples,
            _CriteriaJudge(out),
            tmp_path / "pairs.jsonl",
            min_chosen_score=0.5,
            min_chosen_criterion="concise",
        )
    assert not (tmp_path / "pairs.jsonl").exists()


def test_the_state_is_read_under_the_lock_decisions_are_written_under(tmp_path):
    """Two tabs: one GETs /api/state while the other POSTs a decision. Before, state() iterated the decisions
    without the lock decide() holds, so a decision added meanwhile could raise 'dictionary changed size during
    iteration' in the GET (a traceback in the terminal, an error on the page)."""
    import threading

    store = LabelStore(_samples(tmp_path / "s.jsonl"))
    done = threading.Event()
    with store.lock:  # a decision being written
        reader = threading.Thread(target=lambda: (store.state(), done.set()), daemon=True)
        reader.start()
        assert not done.wait(0.3)  # the state waits for it
    assert done.wait(5)
    store.decide(0, "left")  # decide() still answers with the state under the same (reentrant) lock


@pytest.mark.parametrize("keep", [0, 1])
def test_pairs_the_log_no_longer_holds_are_not_dropped_from_out(tmp_path, keep):
    """The decision log emptied or cut short (an edit, a restore from an older copy) while OUT still holds every
    pair: before, the start (cut short) or the first click (emptied) rewrote OUT from the log, and the pairs only
    OUT held were gone."""
    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    for index in range(3):
        store.decide(index, "left")
    log, before = decisions_path(store.out), store.out.read_bytes()
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:keep]))
    with pytest.raises(SamplingError, match=rf"s\.pairs\.jsonl holds {3 - keep} pair\(s\) its decision log"):
        LabelStore(samples)
    assert store.out.read_bytes() == before


def test_a_pair_undone_just_before_a_kill_is_no_reason_to_refuse(tmp_path, monkeypatch):
    """Killed between an undo's log line and the rewrite of OUT: OUT still holds the undone pair, which the log
    made; the start rewrites OUT without it."""
    from hf_dpo.pairs import label_store

    samples = _samples(tmp_path / "s.jsonl")
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


def test_a_row_deleted_from_the_samples_is_named_with_the_way_to_keep_the_labels(tmp_path):
    """One row deleted from the samples after labelling: before, 'decision for an unknown prompt or choice ...; this
    log belongs to other samples. Label into another --out, or move the log away': the only ways offered lost every
    label. Now it names the prompt and that putting the row back keeps them all."""
    samples = _samples(tmp_path / "s.jsonl")
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


def test_a_full_disk_while_sampling_is_named_and_the_samples_so_far_resume(tmp_path, monkeypatch):
    """The disk full after some batches: before, a bare OSError traceback from inside the sampling loop. Now a
    SamplingError naming the file and how many prompts are kept, and the next run resumes after them."""
    import errno
    import os

    from hf_dpo.pairs import sampling

    recipe = _recipe(tmp_path, sampling_batch_size=1)
    prompts = ["One?", "Two?", "Three?"]
    settings = sampling._settings(recipe.model, recipe.sampling, recipe.data)

    def rows(model, tokenizer, indices, prompts, prompt_ids, settings, cfg):  # no model: fixed answers
        return [
            {"index": i, "prompt": prompts[i], "completions": ["x", "y"], "settings": settings}
            for i in indices
        ]

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(sampling, "_sample_rows", rows)
    monkeypatch.setattr(sampling.os, "fsync", fsync)
    samples = tmp_path / "samples.jsonl"
    with pytest.raises(
        SamplingError,
        match=r"samples\.jsonl: could not write the samples \(No space left on device\)"
        r"\. The 1 prompts sampled before are kept",
    ):
        sampling._append_samples(
            samples, None, None, prompts, [[1]] * 3, [0, 1, 2], settings, recipe.sampling, False
        )
    monkeypatch.setattr(sampling.os, "fsync", real_fsync)
    assert sampling._done_indices(samples, prompts, settings) >= {0}


def test_a_second_sample_run_on_the_same_file_is_refused_and_cuts_nothing(tmp_path):
    """Two `hf-dpo sample` runs on one samples file (a second terminal): before, the second took the first run's
    line in progress for the trace of a killed run and cut it off (the rest of it then written after the cut:
    a broken line inside the file), then sampled the same prompts again (duplicates labelling refuses)."""
    import fcntl

    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\n")
    recipe = _recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    text = json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:30]  # the first run, writing its second line
    samples.write_text(text)
    with open(samples, "ab") as first_run:
        fcntl.flock(first_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(
            SamplingError, match=r"samples\.jsonl is in use: another `hf-dpo sample` is writing it"
        ):
            sample(recipe, prompts_file, samples, progress=False)
    assert samples.read_text() == text


def test_a_prompt_sampled_twice_in_the_samples_file_is_named_before_sampling_more(tmp_path):
    """A samples file holding one prompt twice (two runs before the lock above, lines copied): before, sampling
    resumed into it without a word, and only labelling refused it afterwards ('appears a second time')."""
    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\n")
    recipe = _recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = _write_jsonl(tmp_path / "samples.jsonl", [rows[0], rows[0]])
    with pytest.raises(SamplingError, match=r"samples\.jsonl, line 2: prompt index 0 appears a second time"):
        sample(recipe, prompts_file, samples, progress=False)


def test_a_pairs_file_that_cannot_be_written_is_a_named_error_and_the_old_pairs_stay(tmp_path, monkeypatch):
    """The disk full when the judge's pairs are written: before, a bare OSError traceback from files.py."""
    import errno

    from hf_dpo import files
    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    pairs = tmp_path / "pairs.jsonl"
    label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", pairs)
    before = pairs.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(
        SamplingError, match=r"pairs\.jsonl: could not write the pairs \(No space left on device\)"
    ):
        label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", pairs)
    assert pairs.read_bytes() == before


def test_recipe_paths_under_home_mean_the_home_directory(tmp_path, monkeypatch):
    """samples_file / pairs_file / prompts_file as `~/...` in a recipe (output_dir already meant the home directory):
    before, the samples and pairs went to a directory literally named '~' under the working directory (the checks
    had looked at the home directory), and the prompts file was 'does not exist'."""
    from hf_dpo.pairs.formats import default_pairs_file, default_samples_file, read_prompts

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "p.txt").write_text("One?\n")
    recipe = _recipe(tmp_path, samples_file="~/runs/s.jsonl", pairs_file="~/pairs/train.jsonl")
    assert default_samples_file(recipe) == tmp_path / "home" / "runs" / "s.jsonl"
    assert default_samples_file(recipe, "test") == tmp_path / "home" / "runs" / "s_test.jsonl"
    assert default_pairs_file(recipe, "test") == tmp_path / "home" / "pairs" / "test.jsonl"
    assert read_prompts("~/p.txt") == ["One?"]


def test_a_stale_tab_labelling_a_pair_another_way_is_told_not_ignored(tmp_path):
    """Two tabs on one server: tab A labels a pair 'left'; tab B, still showing it, presses 'right'. Before, B's
    click was ignored without a word (B's page moved on, its person sure the pair was 'right'). Now B is told, and
    nothing is logged; the same choice again (a double submit) is still ignored quietly."""
    import threading
    import urllib.error
    import urllib.request

    from hf_dpo.pairs.label_server import make_server

    srv = make_server(_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def post(body):
        req = urllib.request.Request(base + "/api/decide", data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    try:
        shown = srv.store.state()["current"]  # what both tabs show
        post({"index": shown["index"], "item": shown["item"], "choice": "left"})  # tab A
        with pytest.raises(urllib.error.HTTPError) as err:  # tab B
            post({"index": shown["index"], "item": shown["item"], "choice": "right"})
        assert err.value.code == 400
        assert (
            "already labelled 'left' (in another tab or window?), so 'right' was not saved"
            in err.value.read().decode()
        )
        assert post({"index": shown["index"], "item": shown["item"], "choice": "left"})["done"] == 1
        assert len(decisions_path(srv.store.out).read_text().splitlines()) == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_server_stopped_before_any_decision_leaves_no_file(tmp_path):
    """Holding the log (above) makes it empty at the start; without a decision it goes again at the stop."""
    from hf_dpo.pairs.label_server import make_server

    samples = _samples(tmp_path / "s.jsonl")
    make_server(samples, host="127.0.0.1", port=0).server_close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_undo_in_a_stale_tab_takes_back_nothing_it_did_not_show(tmp_path):
    """Two tabs: A labels a pair; B, loaded before, presses u. Before, B's undo took back A's decision, one B's
    person never saw. The page now sends the last decision it showed ("last" of its state); another one is refused
    with a 400 saying to reload. A bare {} still undoes the last decision (the API as it was)."""
    import threading
    import urllib.error
    import urllib.request

    from hf_dpo.pairs.label_page import SCRIPT
    from hf_dpo.pairs.label_server import make_server

    srv = make_server(_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def post(path, body):
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    try:
        tab_b = srv.store.state()  # loaded before any decision: last is None
        shown = tab_b["current"]
        tab_a = post("/api/decide", {"index": shown["index"], "item": shown["item"], "choice": "left"})
        assert tab_a["last"] == shown["item"]
        with pytest.raises(urllib.error.HTTPError) as err:
            post("/api/undo", {"item": tab_b["last"]})
        assert err.value.code == 400 and "nothing was undone. Reload this page" in err.value.read().decode()
        assert srv.store.state()["done"] == 1
        assert post("/api/undo", {"item": tab_a["last"]})["done"] == 0
        post("/api/decide", {"index": shown["index"], "item": shown["item"], "choice": "right"})
        assert post("/api/undo", {})["done"] == 0
    finally:
        srv.shutdown()
        srv.server_close()
    assert 'call("/api/undo", {item: state.last})' in SCRIPT


def test_a_dataset_card_write_that_fails_leaves_the_previous_card(tmp_path, monkeypatch):
    """The card was written with DatasetCard.save(), which empties README.md first: a failure (or a kill) midway
    left a README without the hf-dpo mark, and the next `hf-dpo sample` refused it as someone else's card; the
    failure itself was a bare OSError traceback."""
    import errno

    from hf_dpo import files
    from hf_dpo.pairs.dataset_card import write_dataset_card
    from hf_dpo.pairs.labelling import label_with_judge

    samples = _write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    stats = label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "pairs" / "train.jsonl")
    report = {"splits": {"train": stats | {"resumed": 1, "sampled_now": 0, "seconds": 0.0}}, "notes": []}
    recipe = _recipe(tmp_path, judge="hf_dpo.pairs.demo_task:judge")
    card = write_dataset_card(tmp_path / "pairs", recipe, report)
    before = card.read_bytes()
    assert b"hf-dpo" in before

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(SamplingError, match=r"README\.md: could not write the dataset card \(No space left"):
        write_dataset_card(tmp_path / "pairs", recipe, report | {"notes": ["a new note"]})
    assert card.read_bytes() == before


def test_a_samples_path_that_is_a_directory_says_so(tmp_path):
    """`hf-dpo label runs/demo_gen` (the run dir, not the file in it): before, 'Samples file runs/demo_gen does not
    exist; run hf-dpo sample first', which it does, and sampling again was no fix."""
    run = tmp_path / "run"
    run.mkdir()
    _samples(run / "samples_train.jsonl")
    with pytest.raises(
        SamplingError, match=r"run is a directory; give the samples file in it \(samples_train\.jsonl\)"
    ):
        LabelStore(run)


def test_a_train_samples_file_of_other_settings_is_named_before_the_held_out_split_is_sampled(
    tmp_path, monkeypatch
):
    """run_sampling samples the held-out split first; a train samples file made with other settings was named only
    when its turn came, after the model had loaded and the held-out prompts had been sampled (minutes)."""
    from hf_dpo.pairs import sampling
    from hf_dpo.pairs.formats import default_samples_file

    (tmp_path / "train.txt").write_text("One?\nTwo?\n")
    (tmp_path / "test.txt").write_text("Three?\n")
    recipe = _recipe(
        tmp_path, prompts_file=str(tmp_path / "train.txt"), test_prompts_file=str(tmp_path / "test.txt")
    )
    old = _sample_rows(_recipe(tmp_path, sampling_temperature=0.3), ["One?", "Two?"])
    train_samples = default_samples_file(recipe, "train")
    train_samples.parent.mkdir(parents=True)
    _write_jsonl(train_samples, old)

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded before the train samples file was checked")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    with pytest.raises(
        SamplingError, match=r"samples_train\.jsonl, line 1: made with other sampling settings"
    ):
        sampling.run_sampling(recipe, progress=False)


def test_sample_into_a_directory_is_a_named_error(tmp_path):
    """sample() (the Python API, without the preflight) with samples_file an existing directory: before, an
    IsADirectoryError traceback from reading it."""
    from hf_dpo.pairs.sampling import sample

    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "out").mkdir()
    with pytest.raises(SamplingError, match=r"samples file .*out cannot be written \(Is a directory\)"):
        sample(_recipe(tmp_path), tmp_path / "prompts.txt", tmp_path / "out", progress=False)


def test_sample_under_a_file_is_named_before_the_model_loads(tmp_path, monkeypatch):
    """sample() with samples_file under a path that is a file (notes.txt/samples.jsonl): before, the model loaded,
    the prompts were encoded, and then mkdir raised a bare NotADirectoryError."""
    from hf_dpo.pairs import sampling

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(SamplingError, match=r"samples file .*notes\.txt/samples\.jsonl cannot be made"):
        sampling.sample(_recipe(tmp_path), tmp_path / "prompts.txt", tmp_path / "notes.txt" / "samples.jsonl")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_run_sampling_says_the_samples_file_is_in_use_before_the_model_loads(tmp_path, monkeypatch):
    """The lock above was first taken in sample(), which run_sampling calls after loading the model."""
    import fcntl

    from hf_dpo.pairs import sampling
    from hf_dpo.pairs.formats import default_samples_file

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    (tmp_path / "train.txt").write_text("One?\nTwo?\n")
    recipe = _recipe(tmp_path, prompts_file=str(tmp_path / "train.txt"))
    samples = default_samples_file(recipe)
    samples.parent.mkdir(parents=True)
    _write_jsonl(samples, _sample_rows(recipe, ["One?"]))
    with open(samples, "ab") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SamplingError, match=r"samples_train\.jsonl is in use"):
            sampling.run_sampling(recipe, progress=False)


def test_a_refused_server_start_leaves_no_log_and_no_lock(tmp_path):
    """The server's hold on the log (above) was taken before the samples were read: a start refused after it (a
    broken samples line) left an empty decision log behind and, in a long-lived process, the log locked."""
    from hf_dpo.pairs.label_server import make_server

    samples = _samples(tmp_path / "s.jsonl")
    good = samples.read_text()
    samples.write_text(good + "{broken\n")
    with pytest.raises(SamplingError, match=r"s\.jsonl, line 4: not valid JSON"):
        make_server(samples, host="127.0.0.1", port=0)
    assert not decisions_path(tmp_path / "s.pairs.jsonl").exists()
    samples.write_text(good)
    make_server(samples, host="127.0.0.1", port=0).server_close()  # the log is free


def test_without_file_locks_the_server_still_cuts_a_decision_cut_off_mid_write(tmp_path, monkeypatch):
    """Where there is no fcntl (Windows), the server held nothing, so it never cut a decision cut off mid-write:
    its next decision went on a new line after the fragment, and the start after that refused the log (a broken
    line inside it)."""
    import sys

    from hf_dpo.pairs.label_server import make_server

    samples = _samples(tmp_path / "s.jsonl")
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
