"""`hf-dpo label SAMPLES.jsonl`: label sampled completions by hand in a local web page.

The page shows a prompt and two of its completions side by side (left/right order random but fixed per
prompt); the person picks one (1 / 2 or arrow keys), marks a tie (t), skips (s) or undoes the last decision
(u). Every decision is appended to `OUT.decisions.jsonl` and fsynced before the page moves on, and the
pairs file OUT is rewritten from that log, so killing the server or closing the browser loses nothing and
reopening resumes at the first unlabeled prompt.

Safety: the page only ever puts data into the DOM with `textContent`; data comes as JSON from `/api/*`;
the Content-Security-Policy allows no inline script, so text from a model can never run as code.
Writes must be `application/json` from the page's own origin (blocks cross-site form posts).

    python -m hf_dpo.pairs.label_server runs/demo_pairs/samples_train.jsonl --port 8765
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hf_dpo.pairs.sampling import (
    SamplingError,
    pair_row,
    prompt_text,
    read_jsonl,
    read_samples,
    write_jsonl_atomic,
)

CHOICES = ("left", "right", "tie", "skip")


def default_out(samples_file: str | os.PathLike) -> Path:
    path = Path(samples_file)
    return path.with_name(f"{path.stem}.pairs.jsonl")


def decisions_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.decisions.jsonl")


def left_is_first(index: int, prompt: str) -> bool:
    """Random but stable per prompt: whether completion 0 is shown on the left."""
    return hashlib.sha256(f"{index}\0{prompt}".encode()).digest()[0] % 2 == 0


class LabelStore:
    """Samples + the append-only decision log; derives the current prompt, progress and the pairs file."""

    def __init__(self, samples_file: str | os.PathLike, out: str | os.PathLike | None = None):
        self.samples = read_samples(samples_file)
        for row in self.samples:
            if len(row["completions"]) < 2:
                raise SamplingError(
                    f"{samples_file}: prompt {row.get('index')} has {len(row['completions'])} completion(s); "
                    "labelling needs at least 2 (sample with num_samples_per_prompt >= 2)."
                )
        self.keys = [row.get("index", n) for n, row in enumerate(self.samples)]
        self.out = Path(out) if out else default_out(samples_file)
        self.log = decisions_path(self.out)
        self.lock = threading.Lock()
        self.decisions: dict[int, dict] = {}  # sample position -> decision
        self.history: list[int] = []  # positions in decision order, for undo
        if self.log.exists():
            self._replay()

    def _replay(self) -> None:
        by_key = {k: n for n, k in enumerate(self.keys)}
        for lineno, entry in read_jsonl(self.log):
            if entry.get("undo"):
                if self.history:
                    self.decisions.pop(self.history.pop(), None)
                continue
            pos = by_key.get(entry.get("index"))
            if pos is None or entry.get("choice") not in CHOICES:
                raise SamplingError(
                    f"{self.log}, line {lineno}: decision for an unknown prompt or choice ({entry}); this log "
                    "belongs to other samples. Give another --out, or move the log away."
                )
            self.decisions[pos] = entry
            self.history.append(pos)

    def view(self, pos: int) -> dict[str, Any]:
        row = self.samples[pos]
        a, b = row["completions"][0], row["completions"][1]
        left_first = left_is_first(self.keys[pos], prompt_text(row["prompt"]))
        prompt = row["prompt"]
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return {
            "index": self.keys[pos],
            "prompt": turns,
            "left": a if left_first else b,
            "right": b if left_first else a,
        }

    def state(self) -> dict[str, Any]:
        current = next((pos for pos in range(len(self.samples)) if pos not in self.decisions), None)
        counts = {c: 0 for c in CHOICES}
        for d in self.decisions.values():
            counts[d["choice"]] += 1
        return {
            "total": len(self.samples),
            "done": len(self.decisions),
            "counts": counts,
            "can_undo": bool(self.history),
            "current": None if current is None else self.view(current),
            "out": str(self.out),
        }

    def decide(self, index: Any, choice: str) -> dict[str, Any]:
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}")
        with self.lock:
            try:
                pos = self.keys.index(index)
            except ValueError:
                raise ValueError(f"unknown prompt index {index!r}") from None
            if pos not in self.decisions:  # a repeated click on an already labelled prompt is ignored
                entry = {"index": index, "choice": choice, "time": round(time.time(), 3)}
                self._append(entry)
                self.decisions[pos] = entry
                self.history.append(pos)
                self._write_pairs()
            return self.state()

    def undo(self) -> dict[str, Any]:
        with self.lock:
            if self.history:
                pos = self.history[-1]
                self._append({"undo": True, "index": self.keys[pos], "time": round(time.time(), 3)})
                self.history.pop()
                self.decisions.pop(pos, None)
                self._write_pairs()
            return self.state()

    def _append(self, entry: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def pairs(self) -> list[dict]:
        rows = []
        for pos in sorted(self.decisions):
            choice = self.decisions[pos]["choice"]
            if choice not in ("left", "right"):
                continue
            view = self.view(pos)
            chosen, rejected = (
                (view["left"], view["right"]) if choice == "left" else (view["right"], view["left"])
            )
            rows.append(
                pair_row(self.samples[pos]["prompt"], chosen, rejected, index=self.keys[pos], judge="human")
            )
        return rows

    def _write_pairs(self) -> None:
        write_jsonl_atomic(self.out, self.pairs())


class _Handler(BaseHTTPRequestHandler):
    store: LabelStore  # set on the subclass made by make_server

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

    def do_GET(self):
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

    def do_POST(self):
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "send application/json"})
        origin = self.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != self.headers.get("Host"):
            return self._json(403, {"error": "cross-origin write refused"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/api/decide":
                return self._json(200, self.store.decide(body.get("index"), body.get("choice")))
            if self.path == "/api/undo":
                return self._json(200, self.store.undo())
        except (ValueError, AttributeError) as err:
            return self._json(400, {"error": str(err)})
        self._json(404, {"error": "not found"})


def make_server(samples_file, out=None, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A ready (not yet serving) labelling server; `server.server_address` has the bound port."""
    store = LabelStore(samples_file, out)
    handler = type("LabelHandler", (_Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.store = store
    return server


def serve(samples_file, out=None, host: str = "127.0.0.1", port: int = 8765) -> None:
    try:
        server = make_server(samples_file, out, host, port)
    except OSError as err:  # the port is taken, the address is not this machine's, ...
        raise SamplingError(f"cannot serve on {host}:{port}: {err}") from None
    state = server.store.state()
    url_host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(f"Labelling {state['total']} prompts ({state['done']} done) -> {server.store.out}")
    print(f"Decisions log: {server.store.log}")
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


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hf-dpo label</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app.css"><script src="/app.js" defer></script></head>
<body>
<header><strong>hf-dpo label</strong> <span id="progress">loading...</span>
<progress id="bar" value="0" max="1"></progress></header>
<main id="main">
  <section id="prompt-box"><h2>Prompt</h2><div id="prompt"></div></section>
  <section id="pair">
    <article><h2>1 &middot; left</h2><div id="left" class="completion"></div>
      <button id="pick-left">Left is better (1)</button></article>
    <article><h2>2 &middot; right</h2><div id="right" class="completion"></div>
      <button id="pick-right">Right is better (2)</button></article>
  </section>
  <nav><button id="tie">Tie (t)</button> <button id="skip">Skip (s)</button>
    <button id="undo">Undo (u)</button></nav>
</main>
<p id="finished" hidden>All prompts are labelled. The pairs are in <code id="out"></code>.</p>
<p id="status" role="status"></p>
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 1200px; }
header { display: flex; gap: 1rem; align-items: center; }
#prompt { white-space: pre-wrap; background: #f4f4f8; padding: .75rem; border-radius: 6px; }
#pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin: 1rem 0; }
.completion { white-space: pre-wrap; border: 1px solid #ccc; border-radius: 6px; padding: .75rem; min-height: 6rem; }
.turn-role { font-weight: bold; }
button { margin-top: .5rem; padding: .4rem .8rem; }
#status { color: #a00; }
"""

# Data only ever reaches the page through textContent; no innerHTML anywhere.
SCRIPT = """
"use strict";
let state = null;
let busy = false;
const $ = (id) => document.getElementById(id);

function render(s) {
  state = s;
  $("progress").textContent = s.done + " / " + s.total + " labelled (left/right " +
    (s.counts.left + s.counts.right) + ", tie " + s.counts.tie + ", skip " + s.counts.skip + ")";
  $("bar").max = s.total; $("bar").value = s.done;
  $("undo").disabled = !s.can_undo;
  $("out").textContent = s.out;
  const cur = s.current;
  $("main").hidden = cur === null;
  $("finished").hidden = cur !== null;
  if (cur === null) return;
  const box = $("prompt");
  box.replaceChildren();
  for (const turn of cur.prompt) {
    const div = document.createElement("div");
    const role = document.createElement("span");
    role.className = "turn-role";
    role.textContent = turn.role + ": ";
    const text = document.createElement("span");
    text.textContent = turn.content;
    div.append(role, text);
    box.append(div);
  }
  $("left").textContent = cur.left;
  $("right").textContent = cur.right;
  document.body.dataset.index = String(cur.index);
}

async function call(path, body) {
  if (busy) return;
  busy = true;
  try {
    const r = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const data = await r.json();
    if (!r.ok) { $("status").textContent = "Error: " + data.error; return; }
    $("status").textContent = "";
    render(data);
  } catch (e) {
    $("status").textContent = "Not saved: the server is unreachable (" + e + "). Restart hf-dpo label.";
  } finally { busy = false; }
}

function decide(choice) {
  if (state && state.current) call("/api/decide", {index: state.current.index, choice: choice});
}

document.addEventListener("DOMContentLoaded", () => {
  $("pick-left").addEventListener("click", () => decide("left"));
  $("pick-right").addEventListener("click", () => decide("right"));
  $("tie").addEventListener("click", () => decide("tie"));
  $("skip").addEventListener("click", () => decide("skip"));
  $("undo").addEventListener("click", () => call("/api/undo", {}));
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === "1" || k === "arrowleft") decide("left");
    else if (k === "2" || k === "arrowright") decide("right");
    else if (k === "t") decide("tie");
    else if (k === "s") decide("skip");
    else if (k === "u") call("/api/undo", {});
  });
  call("/api/state");
});
"""


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
