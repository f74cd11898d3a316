"""The label server's HTTP surface (hf_dpo/pairs/label_server.py): foreign Host headers, Content-Length out of
range, deeply nested JSON, a decision that cannot be saved."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from hf_dpo.pairs.label_server import make_server


def _write_samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(answers=(("Paris.", "Lyon"), ("Tokyo.", "Kyoto"))) -> list[dict]:
    return [{"index": i, "prompt": f"Question {i}?", "completions": list(a)} for i, a in enumerate(answers)]


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
