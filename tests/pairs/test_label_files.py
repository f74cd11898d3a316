"""`hf-dpo label`'s files: --out that is an existing pairs file, the samples file or a directory, resuming into its
own pairs file, samples with bad index types or not UTF-8, a port out of range. Each wrong one ends in one
`error:` line before the server starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.pairs.label_store import LabelStore


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _samples(path: Path) -> Path:
    rows = [{"index": i, "prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(2)]
    return _write_jsonl(path, rows)


def _write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(answers=(("Paris.", "Lyon"), ("Tokyo.", "Kyoto"))) -> list[dict]:
    return [{"index": i, "prompt": f"Question {i}?", "completions": list(a)} for i, a in enumerate(answers)]


def _label_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["label", *map(str, argv), "--port", "0"])
    return rc, capsys.readouterr().err


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

    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    again = LabelStore(samples)
    assert again.state()["done"] == 1 and len(again.pairs()) == 1
    # ... but not when its log is gone: the pairs file is then the only copy of those labels.
    again.log.unlink()
    with pytest.raises(Exception, match="no decision log"):
        LabelStore(samples)


def test_label_out_equal_to_the_samples_file_is_refused(tmp_path, capsys):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    before = samples.read_bytes()
    rc, err = _label_cli(capsys, samples, "--out", samples)
    assert rc == 2 and "error:" in err and "overwrite the samples" in err and "Traceback" not in err
    rc, err = _label_cli(capsys, samples, "--out", tmp_path / "." / "s.jsonl")
    assert rc == 2 and "overwrite the samples" in err
    assert samples.read_bytes() == before


@pytest.mark.parametrize("bad_index", ['"0"', "1.5", "true", "-1", "[0]"])
def test_label_samples_with_bad_or_mixed_index_types_are_named(tmp_path, capsys, bad_index):
    text = (
        json.dumps(_rows()[0]) + "\n" + json.dumps(_rows()[1]).replace('"index": 1', f'"index": {bad_index}')
    )
    (tmp_path / "s.jsonl").write_text(text + "\n")
    rc, err = _label_cli(capsys, tmp_path / "s.jsonl")
    assert rc == 2 and "s.jsonl, line 2: 'index' must be a whole number" in err and "Traceback" not in err


def test_label_samples_that_are_not_utf8_are_named(tmp_path, capsys):
    (tmp_path / "s.jsonl").write_bytes(
        json.dumps(_rows()[0]).encode() + b'\n{"index": 1, "prompt": "caf\xe9"}\n'
    )
    rc, err = _label_cli(capsys, tmp_path / "s.jsonl")
    assert rc == 2 and "s.jsonl, line 2: not UTF-8" in err


def test_label_port_out_of_range_is_named(tmp_path, capsys):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    rc = cli.main(["label", str(samples), "--port", "99999"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: cannot serve on 127.0.0.1:99999" in err and "Traceback" not in err


def test_label_out_that_is_a_directory_is_named(tmp_path, capsys):
    samples = _write_samples(tmp_path / "s.jsonl", _rows())
    (tmp_path / "outdir").mkdir()
    rc, err = _label_cli(capsys, samples, "--out", tmp_path / "outdir")
    assert rc == 2 and "is a directory" in err and "Traceback" not in err
