"""`hf-dpo label`'s files: --out that is an existing pairs file, the samples file, a directory, of another format or
not writable; resuming into its own pairs file; a second server on the same --out; samples with bad index types,
not UTF-8 or a directory; a port out of range; pairs files written atomically. Each wrong one ends in one
`error:` line before the server starts, leaving no log or lock behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_store import LabelStore, decisions_path


def _label_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["label", *map(str, argv), "--port", "0"])
    return rc, capsys.readouterr().err


def test_label_out_that_is_an_existing_pairs_file_is_refused_not_replaced(
    write_jsonl, write_samples, tmp_path, capsys, monkeypatch
):
    """`hf-dpo label S --out train.jsonl` on a judge's (or anyone's) pairs file: before, the server started and
    the first click rewrote it with the one hand-labelled pair; its 100 rows were gone."""
    import socketserver

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    samples = write_samples(tmp_path / "s.jsonl", n=2)
    pairs = write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"P{i}", "chosen": "c", "rejected": "r", "score_chosen": 1.0} for i in range(100)],
    )
    before = pairs.read_bytes()
    rc = cli.main(["label", str(samples), "--out", str(pairs), "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.jsonl already exists" in err and "100 rows would be lost" in err
    assert "Traceback" not in err and pairs.read_bytes() == before


def test_label_resumes_into_its_own_pairs_file(write_samples, tmp_path):
    """The guard above leaves resuming alone: OUT written by labelling, with its log beside it, reopens."""

    samples = write_samples(tmp_path / "s.jsonl", n=2)
    store = LabelStore(samples)
    store.decide(0, "left")
    again = LabelStore(samples)
    assert again.state()["done"] == 1 and len(again.pairs()) == 1
    # ... but not when its log is gone: the pairs file is then the only copy of those labels.
    again.log.unlink()
    with pytest.raises(Exception, match="no decision log"):
        LabelStore(samples)


def test_label_out_equal_to_the_samples_file_is_refused(sample_rows, write_jsonl, tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
    before = samples.read_bytes()
    rc, err = _label_cli(capsys, samples, "--out", samples)
    assert rc == 2 and "error:" in err and "overwrite the samples" in err and "Traceback" not in err
    rc, err = _label_cli(capsys, samples, "--out", tmp_path / "." / "s.jsonl")
    assert rc == 2 and "overwrite the samples" in err
    assert samples.read_bytes() == before


@pytest.mark.parametrize("bad_index", ['"0"', "1.5", "true", "-1", "[0]"])
def test_label_samples_with_bad_or_mixed_index_types_are_named(sample_rows, tmp_path, capsys, bad_index):
    text = (
        json.dumps(sample_rows()[0])
        + "\n"
        + json.dumps(sample_rows()[1]).replace('"index": 1', f'"index": {bad_index}')
    )
    (tmp_path / "s.jsonl").write_text(text + "\n")
    rc, err = _label_cli(capsys, tmp_path / "s.jsonl")
    assert rc == 2 and "s.jsonl, line 2: 'index' must be a whole number" in err and "Traceback" not in err


def test_label_samples_that_are_not_utf8_are_named(sample_rows, tmp_path, capsys):
    (tmp_path / "s.jsonl").write_bytes(
        json.dumps(sample_rows()[0]).encode() + b'\n{"index": 1, "prompt": "caf\xe9"}\n'
    )
    rc, err = _label_cli(capsys, tmp_path / "s.jsonl")
    assert rc == 2 and "s.jsonl, line 2: not UTF-8" in err


def test_label_port_out_of_range_is_named(sample_rows, write_jsonl, tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
    rc = cli.main(["label", str(samples), "--port", "99999"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: cannot serve on 127.0.0.1:99999" in err and "Traceback" not in err


def test_label_out_that_is_a_directory_is_named(sample_rows, write_jsonl, tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", sample_rows())
    (tmp_path / "outdir").mkdir()
    rc, err = _label_cli(capsys, samples, "--out", tmp_path / "outdir")
    assert rc == 2 and "is a directory" in err and "Traceback" not in err


def test_an_out_that_cannot_be_written_is_named_before_the_server_starts(
    write_samples, tmp_path, capsys, monkeypatch
):
    """`hf-dpo label S --out notes.txt/pairs.jsonl` (the parent a file; a read-only disk alike): before, the server
    started and printed 'every decision is already saved', and the first click failed on the page."""
    import socketserver

    from hf_dpo import cli

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    samples = write_samples(tmp_path / "s.jsonl")
    (tmp_path / "notes.txt").write_text("my notes\n")
    rc = cli.main(
        ["label", str(samples), "--out", str(tmp_path / "notes.txt" / "pairs.jsonl"), "--port", "0"]
    )
    captured = capsys.readouterr()
    assert rc == 2 and "cannot be written there" in captured.err and "notes.txt is a file" in captured.err
    assert "Open http" not in captured.out and "Traceback" not in captured.err
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_a_second_server_on_the_same_out_is_refused(write_samples, tmp_path):
    """Two `hf-dpo label` servers on one OUT (a second terminal, another --port): before, both ran, each rewrote
    OUT from its own decisions only (the other's pairs vanished from it) and both appended to one log."""
    from hf_dpo.pairs.label_server import make_server

    samples = write_samples(tmp_path / "s.jsonl")
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


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.parquet", "pairs"])
def test_an_out_of_another_format_is_refused(write_samples, tmp_path, name):
    """`--out pairs.csv` (or .parquet, or no suffix): before, labelling wrote JSON lines under that name, which
    `hf-dpo train` reads by its suffix: as CSV the first pair became the header, the rest columns of JSON shards."""
    samples = write_samples(tmp_path / "s.jsonl")
    with pytest.raises(
        SamplingError, match=rf"--out .*{name}: labelling writes JSON lines.*Name it pairs\.jsonl"
    ):
        LabelStore(samples, tmp_path / name)
    assert LabelStore(samples, tmp_path / "pairs.json").out.name == "pairs.json"


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


def test_a_samples_path_that_is_a_directory_says_so(write_samples, tmp_path):
    """`hf-dpo label runs/demo_gen` (the run dir, not the file in it): before, 'Samples file runs/demo_gen does not
    exist; run hf-dpo sample first', which it does, and sampling again was no fix."""
    run = tmp_path / "run"
    run.mkdir()
    write_samples(run / "samples_train.jsonl")
    with pytest.raises(
        SamplingError, match=r"run is a directory; give the samples file in it \(samples_train\.jsonl\)"
    ):
        LabelStore(run)


def test_a_refused_server_start_leaves_no_log_and_no_lock(write_samples, tmp_path):
    """The server's hold on the log (above) was taken before the samples were read: a start refused after it (a
    broken samples line) left an empty decision log behind and, in a long-lived process, the log locked."""
    from hf_dpo.pairs.label_server import make_server

    samples = write_samples(tmp_path / "s.jsonl")
    good = samples.read_text()
    samples.write_text(good + "{broken\n")
    with pytest.raises(SamplingError, match=r"s\.jsonl, line 4: not valid JSON"):
        make_server(samples, host="127.0.0.1", port=0)
    assert not decisions_path(tmp_path / "s.pairs.jsonl").exists()
    samples.write_text(good)
    make_server(samples, host="127.0.0.1", port=0).server_close()  # the log is free
