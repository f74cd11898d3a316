"""`hf-dpo label SAMPLES.jsonl`: label sampled completions by hand in a local web page.

The page shows a prompt (a conversation's system prompt and earlier turns above its last user turn, each
shortened as the report shows context, the whole text a click away) and two of its completions side by side
(left/right order random but fixed per prompt); the person picks one (1 / 2 or arrow keys), marks a tie (t), skips (s) or undoes the last decision
(u). This module is the HTTP side: it serves the page (`label_page`) and passes each decision to the
`LabelStore` (`label_store`: the decision log and the pairs file derived from it, so a kill loses nothing).

Safety: the page only ever puts data into the DOM as text (`textContent`, text nodes); data comes as JSON from `/api/*`;
the Content-Security-Policy allows no inline script, so text from a model can never run as code.
Writes must be `application/json` from the page's own origin (blocks cross-site form posts), and only
requests naming a loopback host (or the bound address) with the bound port are answered (DNS rebinding).

    python -m hf_dpo.pairs.label_server runs/demo_pairs/samples_train.jsonl --port 8765
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hf_dpo.errors import quoted
from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_page import PAGE, SCRIPT, STYLE
from hf_dpo.pairs.label_store import LabelStore

MAX_BODY_BYTES = 64 * 1024  # a decision is a few dozen bytes
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class _Handler(BaseHTTPRequestHandler):
    store: LabelStore  # set on the subclass made by make_server
    host_ok = staticmethod(lambda value: False)  # set by make_server: host_checker(bound host, bound port)
    timeout = 10  # seconds a client may take to send its request (a short body never blocks a thread)

    def log_message(self, format, *args):  # quiet: the page is the interface
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        """DNS rebinding: a page on a foreign name that resolves to 127.0.0.1 sends its own name as Host. Only
        the loopback names (and the bound address) with the bound port are answered."""
        return self.host_ok(self.headers.get("Host") or "")

    def do_GET(self):
        if not self._host_ok():
            return self._json(
                421, {"error": "unknown Host: open the page at the address hf-dpo label printed"}
            )
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/app.js":
            self._send(200, SCRIPT.encode(), "text/javascript; charset=utf-8")
        elif path == "/app.css":
            self._send(200, STYLE.encode(), "text/css; charset=utf-8")
        elif path == "/api/state":
            self._json(200, self.store.state())
        else:
            self._json(404, {"error": "not found"})

    def _read_body(self) -> Any:
        """The JSON body, bounded: a Content-Length that is missing, negative, not a number or over
        MAX_BODY_BYTES, a short body, or JSON nested too deep is a ValueError (400), never a stuck thread."""
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else 0
        except ValueError:
            raise ValueError(f"bad Content-Length {quoted(raw_length)}") from None
        if length < 0:
            raise ValueError(f"bad Content-Length {quoted(raw_length)}")
        if length > MAX_BODY_BYTES:
            raise _TooLarge(f"body of {length} bytes; at most {MAX_BODY_BYTES}")
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise ValueError("the body is shorter than its Content-Length")
        try:
            body = json.loads(data or b"{}")
        except RecursionError:
            raise ValueError("JSON nested too deep") from None
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def do_POST(self):
        if not self._host_ok():
            return self._json(
                421, {"error": "unknown Host: open the page at the address hf-dpo label printed"}
            )
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "send application/json"})
        origin = self.headers.get("Origin")
        if origin and origin.split("://", 1)[-1].lower() != (self.headers.get("Host") or "").lower():
            return self._json(403, {"error": "cross-origin write refused"})
        try:
            body = self._read_body()
            if self.path == "/api/decide":
                return self._json(
                    200, self.store.decide(body.get("index"), body.get("choice"), body.get("item"))
                )
            if (
                self.path == "/api/undo"
            ):  # the page sends the "last" it showed; a bare {} undoes whatever is last
                undo = self.store.undo(body["item"]) if "item" in body else self.store.undo()
                return self._json(200, undo)
        except _TooLarge as err:
            self.close_connection = True
            return self._json(413, {"error": str(err)})
        except (ValueError, AttributeError, TypeError) as err:
            self.close_connection = True
            return self._json(400, {"error": str(err)})
        except (TimeoutError, ConnectionError):  # the client went silent or away mid-request
            self.close_connection = True
            return None
        except OSError as err:  # the decision log or pairs file could not be written
            return self._json(
                500, {"error": f"not saved: {err}. Fix the disk problem and press the key again."}
            )
        self._json(404, {"error": "not found"})


class _TooLarge(ValueError):
    pass


def host_checker(host: str, port: int):
    """A predicate on the Host header: the loopback names, plus the bound address when it is a specific one
    (`--host 192.168.1.5`) or any IP literal when bound to all interfaces; always with the bound port. A name
    other than localhost is never answered: that is what a DNS-rebinding page sends."""
    import ipaddress

    names = set(LOOPBACK_NAMES)
    wildcard = host in ("0.0.0.0", "::", "")
    if not wildcard:
        names.add(f"[{host}]" if ":" in host else host.lower())

    def ok(value: str) -> bool:
        value = value.strip().lower()
        name, sep, given_port = value.rpartition(":")
        if not sep or name.endswith(":") or (value.startswith("[") and not name.endswith("]")):
            name, given_port = value, "80"  # no port: only right when serving on port 80
        if given_port != str(port):
            return False
        if name in names:
            return True
        if wildcard:
            try:
                ipaddress.ip_address(name.strip("[]"))
                return True
            except ValueError:
                return False
        return False

    return ok


class _LabelServer(ThreadingHTTPServer):
    store: LabelStore

    def server_close(self) -> None:
        super().server_close()
        store = getattr(self, "store", None)  # none yet when the bind failed (socketserver closes then)
        if store is not None:
            store.release()  # another server may now label into this OUT


def make_server(samples_file, out=None, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A ready (not yet serving) labelling server; `server.server_address` has the bound port. It holds OUT's
    decision log until `server_close()`: a second server on the same OUT is refused."""
    store = LabelStore(samples_file, out, exclusive=True)
    handler = type("LabelHandler", (_Handler,), {"store": store})
    try:
        server = _LabelServer((host, port), handler)
    except BaseException:
        store.release()  # the port is taken: the log is free for the next try
        raise
    handler.host_ok = staticmethod(host_checker(host, server.server_address[1]))
    server.store = store
    return server


def serve(samples_file, out=None, host: str = "127.0.0.1", port: int = 8765) -> None:
    try:
        server = make_server(samples_file, out, host, port)
    except (
        OSError,
        OverflowError,
    ) as err:  # the port is taken or out of range, the address is not this machine's
        raise SamplingError(f"cannot serve on {host}:{port}: {err}") from None
    state = server.store.state()
    url_host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(
        f"Labelling {len(server.store.samples)} prompts: {state['total']} answer pairs ({state['done']} done) "
        f"-> {server.store.out}"
    )
    if state["unlabellable_prompts"]:
        print(
            f"{state['unlabellable_prompts']} prompt(s) left out: fewer than 2 distinct non-empty answers "
            "(zero or one completion, or only identical or empty ones)."
        )
    print(f"Decisions log: {server.store.log}")
    for note in server.store.notes:
        print(note)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: bound to {host}: anyone who can reach this address can label (there is no login).")
    print(
        f"Open http://{url_host}:{server.server_address[1]}/  (Ctrl-C to stop; every decision is already saved)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hf_dpo.pairs.label_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("samples")
    parser.add_argument("--out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    serve(args.samples, args.out, args.host, args.port)


if __name__ == "__main__":
    main()
