"""The label server's HTTP surface (hf_dpo/pairs/label_server.py): foreign Host headers, Content-Length out of
range, deeply nested JSON, a decision that cannot be saved, the state read under the lock decisions are written
under, stale tabs that label or undo, and a server stopped before any decision."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from hf_dpo.pairs.label_server import make_server
from hf_dpo.pairs.label_store import LabelStore, decisions_path


@pytest.fixture
def server(sample_rows, write_jsonl, tmp_path):
    srv = make_server(write_jsonl(tmp_path / "s.jsonl", sample_rows()), host="127.0.0.1", port=0)
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


def test_the_state_is_read_under_the_lock_decisions_are_written_under(write_samples, tmp_path):
    """Two tabs: one GETs /api/state while the other POSTs a decision. Before, state() iterated the decisions
    without the lock decide() holds, so a decision added meanwhile could raise 'dictionary changed size during
    iteration' in the GET (a traceback in the terminal, an error on the page)."""
    import threading

    store = LabelStore(write_samples(tmp_path / "s.jsonl"))
    done = threading.Event()
    with store.lock:  # a decision being written
        reader = threading.Thread(target=lambda: (store.state(), done.set()), daemon=True)
        reader.start()
        assert not done.wait(0.3)  # the state waits for it
    assert done.wait(5)
    store.decide(0, "left")  # decide() still answers with the state under the same (reentrant) lock


def test_a_stale_tab_labelling_a_pair_another_way_is_told_not_ignored(write_samples, tmp_path):
    """Two tabs on one server: tab A labels a pair 'left'; tab B, still showing it, presses 'right'. Before, B's
    click was ignored without a word (B's page moved on, its person sure the pair was 'right'). Now B is told, and
    nothing is logged; the same choice again (a double submit) is still ignored quietly."""
    import threading
    import urllib.error
    import urllib.request

    from hf_dpo.pairs.label_server import make_server

    srv = make_server(write_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
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


def test_a_server_stopped_before_any_decision_leaves_no_file(write_samples, tmp_path):
    """Holding the log (above) makes it empty at the start; without a decision it goes again at the stop."""
    from hf_dpo.pairs.label_server import make_server

    samples = write_samples(tmp_path / "s.jsonl")
    make_server(samples, host="127.0.0.1", port=0).server_close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_undo_in_a_stale_tab_takes_back_nothing_it_did_not_show(write_samples, tmp_path):
    """Two tabs: A labels a pair; B, loaded before, presses u. Before, B's undo took back A's decision, one B's
    person never saw. The page now sends the last decision it showed ("last" of its state); another one is refused
    with a 400 saying to reload. A bare {} still undoes the last decision (the API as it was)."""
    import threading
    import urllib.error
    import urllib.request

    from hf_dpo.pairs.label_page import SCRIPT
    from hf_dpo.pairs.label_server import make_server

    srv = make_server(write_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
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
