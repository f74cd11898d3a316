"""Hostile inputs of issue 12 that went wrong before: each test failed on the code before the fix.

Labelling (decisions keyed to content, restart, K answers, --out), the label server's HTTP surface (Host,
Content-Length, nesting), sampling resume and settings, judges' scores."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_server import make_server
from hf_dpo.pairs.label_store import LabelStore, decisions_path


def _write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(answers=(("Paris.", "Lyon"), ("Tokyo.", "Kyoto"))) -> list[dict]:
    return [{"index": i, "prompt": f"Question {i}?", "completions": list(a)} for i, a in enumerate(answers)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------- item 1: decisions keyed to content


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


# ---------------------------------------------------------------- item 2: restart rebuilds the pairs


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


# ---------------------------------------------------------------- item 3: every answer, never identical ones


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


# ---------------------------------------------------------------- item 4 and mixed indices, through the CLI


def _label_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["label", *map(str, argv), "--port", "0"])
    return rc, capsys.readouterr().err


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


# ---------------------------------------------------------------- the HTTP surface


@pytest.fixture
def server(tmp_path):
    srv = make_server(_write_samples(tmp_path / "s.jsonl", _rows()), host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _request(port: int, method: str, path: str, host: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_foreign_host_headers_are_refused_dns_rebinding(server):
    srv, port = server
    for host in (f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", "127.0.0.1:1", "localhost"):
        status, _ = _request(port, "GET", "/api/state", host)
        assert status == 421, host
        body = json.dumps({"index": 0, "choice": "left"}).encode()
        headers = {"Content-Type": "application/json", "Origin": f"http://{host}"}
        status, _ = _request(port, "POST", "/api/decide", host, body, headers)
        assert status == 421, host
    assert srv.store.state()["done"] == 0
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, _ = _request(port, "GET", "/api/state", host)
        assert status == 200, host


def _raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_negative_and_oversized_content_length_are_answered_at_once(server):
    srv, port = server
    head = f"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    reply = _raw(port, (head + "Content-Length: -5\r\n\r\n").encode(), timeout=5)
    assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), reply[:80]
    reply = _raw(port, (head + "Content-Length: 999999999\r\n\r\n").encode(), timeout=5)
    assert b" 413 " in reply.split(b"\r\n", 1)[0], reply[:80]
    reply = _raw(port, (head + "Content-Length: abc\r\n\r\n").encode(), timeout=5)
    assert b" 400 " in reply.split(b"\r\n", 1)[0], reply[:80]
    # The server still answers afterwards.
    status, _ = _request(port, "GET", "/api/state", f"127.0.0.1:{port}")
    assert status == 200


def test_deeply_nested_json_is_a_400_not_a_dropped_connection(server):
    srv, port = server
    body = b"[" * 60000 + b"]" * 60000
    status, data = _request(
        port, "POST", "/api/decide", f"127.0.0.1:{port}", body, {"Content-Type": "application/json"}
    )
    assert status in (400, 413)
    body = b'{"index": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    status, data = _request(
        port, "POST", "/api/decide", f"127.0.0.1:{port}", body, {"Content-Type": "application/json"}
    )
    assert status == 400 and b"error" in data
    for payload in (
        b"[1, 2]",
        b'"x"',
        b'{"index": {"a": 1}, "choice": "left"}',
        b'{"item": 5, "choice": "left"}',
    ):
        status, _ = _request(
            port, "POST", "/api/decide", f"127.0.0.1:{port}", payload, {"Content-Type": "application/json"}
        )
        assert status == 400, payload
    assert srv.store.state()["done"] == 0


# ---------------------------------------------------------------- sampling


def test_per_row_sampler_refuses_top_p_and_temperature_out_of_range():
    from hf_dpo.pairs.row_sampler import PerRowSampler

    for top_p in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(SamplingError, match="sampling_top_p"):
            PerRowSampler([0], 1.0, top_p)
    for temperature in (-1.0, float("nan"), float("inf")):
        with pytest.raises(SamplingError, match="sampling_temperature"):
            PerRowSampler([0], temperature, 1.0)


def test_sampling_resume_drops_a_last_line_cut_inside_a_utf8_character(tmp_path, tiny_model_dir):
    from hf_dpo.config import ModelConfig, load_recipe
    from hf_dpo.pairs.sampling import load_reference, sample

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "Qu'est-ce qu'un café ☕ ?\nÉcris « bonjour ».\nNenne drei Städte.\n", encoding="utf-8"
    )
    recipe = load_recipe(
        None,
        ["--model_name_or_path", tiny_model_dir, "--quantization", "none", "--num_samples_per_prompt", "2"]
        + ["--max_new_tokens", "4", "--sampling_batch_size", "3", "--output_dir", str(tmp_path / "run")],
    )
    tiny = load_reference(ModelConfig(model_name_or_path=tiny_model_dir, quantization="none"))
    full_path = tmp_path / "full.jsonl"
    sample(recipe, prompts, full_path, tiny, progress=False)
    full = full_path.read_bytes()
    lines = full.splitlines(keepends=True)
    third = lines[2]
    cut = third.index("ä".encode()) + 1  # inside the two bytes of "ä"
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines[:2]) + third[:cut])
    stats = sample(recipe, prompts, part, tiny, progress=False)
    assert stats["resumed"] == 2 and stats["sampled_now"] == 1
    assert part.read_bytes() == full
    # Killed at any byte: the rerun drops what was cut and ends with the same file as an uninterrupted run.
    import random

    for cut in sorted(random.Random(12).sample(range(1, len(full)), 6)):
        part.write_bytes(full[:cut])
        sample(recipe, prompts, part, tiny, progress=False)
        assert part.read_bytes() == full, cut


# ---------------------------------------------------------------- judges


def test_a_judge_returning_an_int_too_large_for_a_float_is_named():
    from hf_dpo.pairs.judges import CallableJudge, JudgeError

    for value in (10**400, 10**5000, -(10**400)):
        judge = CallableJudge(lambda p, c, v=value: v, name="huge")
        with pytest.raises(JudgeError, match="Judge 'huge' returned .* for prompt 0"):
            judge.score(["p"], ["c"])


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


def test_a_decision_that_cannot_be_saved_is_a_500_the_page_shows(server, monkeypatch):
    srv, port = server

    def full_disk(entry):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(srv.store, "_append", full_disk)
    body = json.dumps({"index": 0, "choice": "left"}).encode()
    status, data = _request(
        port, "POST", "/api/decide", f"127.0.0.1:{port}", body, {"Content-Type": "application/json"}
    )
    assert status == 500 and b"not saved" in data and b"No space left" in data
    assert srv.store.state()["done"] == 0
