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

from hf_dpo.files import atomic_write_jsonl
from hf_dpo.pairs.sampling import (
    SamplingError,
    pair_row,
    prompt_text,
    read_jsonl,
    read_samples,
)

CHOICES = ("left", "right", "tie", "skip")
MAX_BODY_BYTES = 64 * 1024  # a decision is a few dozen bytes
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def default_out(samples_file: str | os.PathLike) -> Path:
    path = Path(samples_file)
    return path.with_name(f"{path.stem}.pairs.jsonl")


def decisions_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.decisions.jsonl")


def left_is_first(index: int, prompt: str) -> bool:
    """Random but stable per prompt: whether completion 0 is shown on the left."""
    return hashlib.sha256(f"{index}\0{prompt}".encode()).digest()[0] % 2 == 0


def content_key(row: dict) -> str:
    """What a decision was made on: a hash of the prompt and every completion of its samples row. A decision
    whose key differs from the current row's was made on other answers and is never replayed onto these."""
    text = json.dumps(
        {"prompt": row["prompt"], "completions": row["completions"]}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def answer_pairs(index: int, row: dict) -> list[tuple[int, int]]:
    """The (left, right) completion positions shown for one prompt, so that every distinct answer is seen.

    Identical answers (same text up to surrounding whitespace) and empty ones are shown once / never: a pair of
    them could not be trained on. The distinct answers are put in a random but stable order and shown two at a
    time ((1st, 2nd), (3rd, 4th), ...; an odd last one against the first); with two answers this is the one pair,
    left/right as `left_is_first`."""
    seen: dict[str, int] = {}
    for pos, text in enumerate(row["completions"]):
        norm = text.strip()
        if norm and norm not in seen:
            seen[norm] = pos
    distinct = list(seen.values())
    if len(distinct) < 2:
        return []
    prompt = prompt_text(row["prompt"])
    if len(distinct) == 2:
        order = distinct if left_is_first(index, prompt) else distinct[::-1]
    else:
        order = sorted(distinct, key=lambda p: hashlib.sha256(f"{index}\0{prompt}\0{p}".encode()).hexdigest())
    items = [(order[i], order[i + 1]) for i in range(0, len(order) - 1, 2)]
    if len(order) % 2:
        items.append((order[-1], order[0]))
    return items


def item_id(index: int, pair: tuple[int, int]) -> str:
    return f"{index}:{pair[0]}:{pair[1]}"


class LabelStore:
    """Samples + the append-only decision log; derives the current pair, progress and the pairs file.

    One labelling item is one (prompt, left answer, right answer); a prompt with K distinct answers gives
    ceil(K/2) items, so every answer is shown. Every logged decision carries the prompt index, the two answer
    positions and `content_key` of the samples row: a log made on other samples (regenerated, edited) is refused
    by line, never replayed onto new answers."""

    def __init__(self, samples_file: str | os.PathLike, out: str | os.PathLike | None = None):
        self.samples_file = Path(samples_file)
        self.out = Path(out) if out else default_out(samples_file)
        self.log = decisions_path(self.out)
        _check_distinct_files(self.samples_file, self.out, self.log)
        self.samples = read_samples(samples_file)
        for row in self.samples:
            if len(row["completions"]) < 2:
                raise SamplingError(
                    f"{samples_file}: prompt {row.get('index')} has {len(row['completions'])} completion(s); "
                    "labelling needs at least 2 (sample with num_samples_per_prompt >= 2)."
                )
        self.keys = [row.get("index", n) for n, row in enumerate(self.samples)]
        self.row_keys = [content_key(row) for row in self.samples]
        self.items: list[tuple[int, tuple[int, int]]] = []  # (sample position, (left, right))
        self.unlabellable = 0  # prompts whose answers are all identical or empty
        for pos, row in enumerate(self.samples):
            pairs = answer_pairs(self.keys[pos], row)
            self.unlabellable += not pairs
            self.items += [(pos, pair) for pair in pairs]
        if not self.items:
            raise SamplingError(
                f"{samples_file}: nothing to label: every prompt's answers are identical or empty. Sample again "
                "with a higher sampling_temperature or more num_samples_per_prompt."
            )
        self.item_ids = [item_id(self.keys[pos], pair) for pos, pair in self.items]
        self.by_id = {iid: n for n, iid in enumerate(self.item_ids)}
        self.lock = threading.Lock()
        self.decisions: dict[int, dict] = {}  # item number -> decision
        self.history: list[int] = []  # item numbers in decision order, for undo
        if self.log.exists():
            self._replay()
            # A kill between the logged decision and the pairs rewrite left the pairs file behind the log.
            self._write_pairs()

    def _replay(self) -> None:
        by_key = {k: n for n, k in enumerate(self.keys)}
        fix = "Label into another --out, or move the log away to start over."
        for lineno, entry in read_jsonl(self.log):
            where = f"{self.log}, line {lineno}"
            if entry.get("undo"):
                if self.history:
                    self.decisions.pop(self.history.pop(), None)
                continue
            pos = by_key.get(entry.get("index")) if _is_index(entry.get("index")) else None
            if pos is None or entry.get("choice") not in CHOICES:
                raise SamplingError(
                    f"{where}: decision for an unknown prompt or choice ({entry}); this log belongs to other "
                    f"samples. {fix}"
                )
            if entry.get("key") != self.row_keys[pos]:
                raise SamplingError(
                    f"{where}: the decision on prompt {entry.get('index')} was made on other answers than "
                    f"{self.samples_file} now holds (the samples were regenerated or edited, or the log predates "
                    f"content keys), so it cannot be applied to these. {fix}"
                )
            pair = entry.get("item")
            number = (
                self.by_id.get(item_id(self.keys[pos], tuple(pair)))
                if isinstance(pair, list) and len(pair) == 2 and all(_is_index(p) for p in pair)
                else None
            )
            if number is None:
                raise SamplingError(
                    f"{where}: answers {pair!r} are not a pair shown for prompt {entry['index']}. {fix}"
                )
            self.decisions[number] = entry
            self.history.append(number)

    def view(self, number: int) -> dict[str, Any]:
        pos, (a, b) = self.items[number]
        row = self.samples[pos]
        prompt = row["prompt"]
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        siblings = [n for n, (p, _) in enumerate(self.items) if p == pos]
        return {
            "index": self.keys[pos],
            "item": self.item_ids[number],
            "prompt": turns,
            "left": row["completions"][a],
            "right": row["completions"][b],
            "pair": siblings.index(number) + 1,
            "pairs": len(siblings),
            "answers": len(row["completions"]),
        }

    def state(self) -> dict[str, Any]:
        current = next((n for n in range(len(self.items)) if n not in self.decisions), None)
        counts = {c: 0 for c in CHOICES}
        for d in self.decisions.values():
            counts[d["choice"]] += 1
        return {
            "total": len(self.items),
            "done": len(self.decisions),
            "counts": counts,
            "can_undo": bool(self.history),
            "current": None if current is None else self.view(current),
            "unlabellable_prompts": self.unlabellable,
            "out": str(self.out),
        }

    def _find(self, index: Any, item: Any) -> int:
        if item is not None:
            if not isinstance(item, str) or item not in self.by_id:
                raise ValueError(f"unknown item {item!r}")
            return self.by_id[item]
        if not _is_index(index):
            raise ValueError(f"unknown prompt index {index!r}")
        numbers = [n for n, (pos, _) in enumerate(self.items) if self.keys[pos] == index]
        if not numbers:
            raise ValueError(f"unknown prompt index {index!r}")
        return next((n for n in numbers if n not in self.decisions), numbers[0])

    def decide(self, index: Any, choice: str, item: str | None = None) -> dict[str, Any]:
        """Record `choice` for an item (by id, or the first undecided pair of prompt `index`)."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}")
        with self.lock:
            number = self._find(index, item)
            if number not in self.decisions:  # a repeated click on an already labelled pair is ignored
                pos, pair = self.items[number]
                entry = {
                    "index": self.keys[pos],
                    "item": list(pair),
                    "key": self.row_keys[pos],
                    "choice": choice,
                    "time": round(time.time(), 3),
                }
                self._append(entry)
                self.decisions[number] = entry
                self.history.append(number)
                self._write_pairs()
            return self.state()

    def undo(self) -> dict[str, Any]:
        with self.lock:
            if self.history:
                number = self.history[-1]
                pos, pair = self.items[number]
                self._append(
                    {"undo": True, "index": self.keys[pos], "item": list(pair), "time": round(time.time(), 3)}
                )
                self.history.pop()
                self.decisions.pop(number, None)
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
        for number in sorted(self.decisions):
            choice = self.decisions[number]["choice"]
            if choice not in ("left", "right"):
                continue
            view = self.view(number)
            chosen, rejected = (
                (view["left"], view["right"]) if choice == "left" else (view["right"], view["left"])
            )
            pos = self.items[number][0]
            rows.append(
                pair_row(self.samples[pos]["prompt"], chosen, rejected, index=self.keys[pos], judge="human")
            )
        return rows

    def _write_pairs(self) -> None:
        atomic_write_jsonl(self.out, self.pairs())


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_distinct_files(samples: Path, out: Path, log: Path) -> None:
    """The pairs file and the decision log must not be the samples file (nor each other)."""

    def same(a: Path, b: Path) -> bool:
        try:
            return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
        except OSError:
            return False

    if out.is_dir():
        raise SamplingError(
            f"--out {out} is a directory; give the pairs file to write, e.g. {out / 'pairs.jsonl'}."
        )
    if same(out, samples):
        raise SamplingError(
            f"--out {out} is the samples file: labelling would overwrite the samples. Give another --out "
            f"(default: {default_out(samples)})."
        )
    if same(log, samples):
        raise SamplingError(
            f"the decision log of --out {out} would be {log}, the samples file itself. Give another --out."
        )


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
            raise ValueError(f"bad Content-Length {raw_length!r}") from None
        if length < 0:
            raise ValueError(f"bad Content-Length {raw_length!r}")
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
            if self.path == "/api/undo":
                return self._json(200, self.store.undo())
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


def make_server(samples_file, out=None, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A ready (not yet serving) labelling server; `server.server_address` has the bound port."""
    store = LabelStore(samples_file, out)
    handler = type("LabelHandler", (_Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
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
            f"{state['unlabellable_prompts']} prompt(s) left out: all their answers are identical or empty."
        )
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
  <section id="prompt-box"><h2>Prompt <small id="pairinfo"></small></h2><div id="prompt"></div></section>
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
  $("progress").textContent = s.done + " / " + s.total + " pairs labelled (left/right " +
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
  $("pairinfo").textContent = cur.pairs > 1 ?
    "(pair " + cur.pair + " of " + cur.pairs + ": every answer of this prompt is shown)" : "";
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
  if (state && state.current) {
    call("/api/decide", {index: state.current.index, item: state.current.item, choice: choice});
  }
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
