"""The state of hand labelling: the samples, the append-only decision log, and the pairs file derived from it.

Every decision is appended to `OUT.decisions.jsonl` and fsynced before the page moves on, and the pairs file OUT
is rewritten (atomically) from that log, so killing the server or closing the browser loses nothing and reopening
resumes at the first unlabeled pair. A decision carries `content_key` of the samples row it was made on: a log made
on other samples (regenerated, edited) is refused by line, never replayed onto new answers. The pairs file and the
log are never the samples file, and an OUT that this labelling did not write (another pairs file) is refused, never
replaced.

The HTTP side is `label_server`; this module knows nothing of it. Where OUT and its log are, and the checks
that they may be written (distinct from the samples, replaceable, writable, held by one server), are in
`label_files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from hf_dpo.errors import quoted
from hf_dpo.files import atomic_write_jsonl
from hf_dpo.files import read_jsonl as read_lines
from hf_dpo.pairs.formats import (
    SamplingError,
    check_finished_flags,
    finished_flags,
    pair_row,
    prompt_context,
    prompt_text,
    read_samples,
)
from hf_dpo.pairs.label_files import (
    check_distinct_files,
    check_out_in_log,
    check_out_replaceable,
    check_writable,
    decisions_path,
    default_out,
    hold_log,
)

CHOICES = ("left", "right", "tie", "skip")
_CAN_LOCK = importlib.util.find_spec("fcntl") is not None  # advisory file locks (not on Windows)


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

    def __init__(
        self,
        samples_file: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        exclusive: bool = False,
    ):
        """exclusive: hold the decision log until `release()`, refusing a second exclusive store on it (the
        server's; a LabelStore only read from needs none)."""
        self.samples_file = Path(samples_file)
        self.out = Path(out) if out else default_out(samples_file)
        self.log = decisions_path(self.out)
        check_distinct_files(self.samples_file, self.out, self.log)
        if self.out.suffix.lower() not in (".jsonl", ".json"):
            # OUT is JSON lines whatever its name: `hf-dpo train` reads a .csv or .parquet by its suffix, and
            # would take the first pair for a CSV header.
            raise SamplingError(
                f"--out {self.out}: labelling writes JSON lines, which `hf-dpo train` reads from a .jsonl file. "
                f"Name it {self.out.with_suffix('.jsonl').name}."
            )
        check_out_replaceable(self.out, self.log)
        check_writable(self.out, self.log)
        self._held = hold_log(self.log, self.out) if exclusive else None
        try:
            self._load(samples_file)
        except BaseException:
            self.release()  # a refused start leaves the log free, and no empty one behind
            raise

    def _load(self, samples_file: str | os.PathLike) -> None:
        """The samples, their labelling items, and the decisions of the log (replayed)."""
        self.samples = read_samples(samples_file)
        for row in self.samples:
            check_finished_flags(row, samples_file)
        self.keys = [row.get("index", n) for n, row in enumerate(self.samples)]
        self.row_keys = [content_key(row) for row in self.samples]
        self.items: list[tuple[int, tuple[int, int]]] = []  # (sample position, (left, right))
        # Prompts with fewer than 2 distinct non-empty answers (zero or one completion, identical or empty ones):
        # they are left out and counted, the others labelled.
        self.unlabellable = 0
        for pos, row in enumerate(self.samples):
            pairs = answer_pairs(self.keys[pos], row)
            self.unlabellable += not pairs
            self.items += [(pos, pair) for pair in pairs]
        if not self.items:
            raise SamplingError(_nothing_to_label(samples_file, self.samples))
        self.item_ids = [item_id(self.keys[pos], pair) for pos, pair in self.items]
        self.by_id = {iid: n for n, iid in enumerate(self.item_ids)}
        # Reentrant: decide() and undo() answer with state(), which takes it too (a GET from another tab reading the
        # decisions while a POST adds one would raise "dictionary changed size during iteration").
        self.lock = threading.RLock()
        self.decisions: dict[int, dict] = {}  # item number -> decision
        self.history: list[int] = []  # item numbers in decision order, for undo
        # What a person should know about the log on resuming (the server prints them).
        self.notes: list[str] = []
        replayed = self.log.is_file() and self.log.stat().st_size  # `exclusive` made an empty one
        check_out_in_log(self.out, self.log, self._replay() if replayed else [])
        if replayed:
            # A kill between the logged decision and the pairs rewrite left the pairs file behind the log.
            self._write_pairs()

    def _replay(self) -> list[dict]:
        """Apply the log; returns every pair it ever made (undone ones too)."""
        by_key = {k: n for n, k in enumerate(self.keys)}
        fix = "Label into another --out, or move the log away to start over."
        raw = self.log.read_bytes()
        whole = len(raw)  # bytes of complete lines
        if not raw.endswith(b"\n"):
            try:
                json.loads(raw[raw.rfind(b"\n") + 1 :])
            except (ValueError, RecursionError):  # a decision cut off mid-write (kill, power loss)
                whole = raw.rfind(b"\n") + 1
        logged = []  # every pair the log ever made, undone ones too: OUT may hold one (killed before its rewrite)
        hint = "Fix that line, or delete it (its pair is then shown again); the other decisions are kept."
        for lineno, entry in read_lines(self.log, SamplingError, hint, size=whole):
            where = f"{self.log}, line {lineno}"
            if entry.get("undo"):
                if self.history:
                    self.decisions.pop(self.history.pop(), None)
                continue
            pos = by_key.get(entry.get("index")) if _is_index(entry.get("index")) else None
            if pos is None and _is_index(entry.get("index")) and entry.get("choice") in CHOICES:
                # Most often one row deleted from the samples: putting it back keeps every decision.
                raise SamplingError(
                    f"{where}: a decision on prompt {entry['index']}, which {self.samples_file} no longer holds (its "
                    f"row was deleted, or this log was made on other samples). Put that row back as it was to "
                    f"continue with every decision kept. {fix}"
                )
            if pos is None or entry.get("choice") not in CHOICES:
                raise SamplingError(
                    f"{where}: decision for an unknown prompt or choice ({entry}); this log belongs to other "
                    f"samples. {fix}"
                )
            if entry.get("key") != self.row_keys[pos]:
                raise SamplingError(
                    f"{where}: the decision on prompt {entry.get('index')} was made on other answers than "
                    f"{self.samples_file} now holds (the samples were regenerated or edited, or the log predates "
                    f"content keys), so it cannot be applied to these. Put that row back as it was to continue with "
                    f"every decision kept. {fix}"
                )
            pair = entry.get("item")
            number = (
                self.by_id.get(item_id(self.keys[pos], tuple(pair)))
                if isinstance(pair, list) and len(pair) == 2 and all(_is_index(p) for p in pair)
                else None
            )
            if number is None:
                raise SamplingError(
                    f"{where}: answers {quoted(pair)} are not a pair shown for prompt {entry['index']}. {fix}"
                )
            self.decisions[number] = entry
            self.history.append(number)
            if entry["choice"] in ("left", "right"):
                logged.append(self._pair(number, entry["choice"]))
        if whole < len(raw):
            # Its fsync never returned, so the page never moved on: that pair is simply shown again. Only the
            # server holding the log cuts it (a reader might be looking at a write in progress).
            if self._held is not None:
                os.truncate(self.log, whole)
            lineno = raw.count(b"\n", 0, whole) + 1
            self.notes.append(
                f"{self.log}, line {lineno}: a decision cut off mid-write (the server "
                "stopped while saving it, before the page showed it saved) was dropped; that pair is shown again."
            )
        return logged

    def view(self, number: int) -> dict[str, Any]:
        pos, (a, b) = self.items[number]
        row = self.samples[pos]
        prompt = row["prompt"]
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        # The system prompt and earlier turns, shortened as the report shows them, each with its whole text
        # (the page shows the shortened one and opens the whole on a click); the last user turn on, whole.
        context = prompt_context(prompt)
        for short, turn in zip(context, turns):
            short["whole"] = turn.get("content", "")
        siblings = [n for n, (p, _) in enumerate(self.items) if p == pos]
        return {
            "index": self.keys[pos],
            "item": self.item_ids[number],
            "context": context,
            "prompt": turns[len(context) :],
            "left": row["completions"][a],
            "right": row["completions"][b],
            # False: cut at max_new_tokens (no end token); the page marks it, as the judge path never chooses it
            "left_finished": finished_flags(row)[a],
            "right_finished": finished_flags(row)[b],
            "pair": siblings.index(number) + 1,
            "pairs": len(siblings),
            "answers": len(row["completions"]),
        }

    def state(self) -> dict[str, Any]:
        with self.lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        current = next((n for n in range(len(self.items)) if n not in self.decisions), None)
        counts = {c: 0 for c in CHOICES}
        for d in self.decisions.values():
            counts[d["choice"]] += 1
        return {
            "total": len(self.items),
            "done": len(self.decisions),
            "counts": counts,
            "can_undo": bool(self.history),
            "last": self.item_ids[self.history[-1]] if self.history else None,  # what undo would take back
            "current": None if current is None else self.view(current),
            "unlabellable_prompts": self.unlabellable,
            "out": str(self.out),
        }

    def _find(self, index: Any, item: Any) -> int:
        if item is not None:
            if not isinstance(item, str) or item not in self.by_id:
                raise ValueError(f"unknown item {quoted(item)}")
            return self.by_id[item]
        if not _is_index(index):
            raise ValueError(f"unknown prompt index {quoted(index)}")
        numbers = [n for n, (pos, _) in enumerate(self.items) if self.keys[pos] == index]
        if not numbers:
            raise ValueError(f"unknown prompt index {quoted(index)}")
        return next((n for n in numbers if n not in self.decisions), numbers[0])

    def decide(self, index: Any, choice: str, item: str | None = None) -> dict[str, Any]:
        """Record `choice` for an item (by id, or the first undecided pair of prompt `index`)."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}")
        with self.lock:
            number = self._find(index, item)
            earlier = self.decisions.get(number, {}).get("choice")
            if item is not None and earlier not in (None, choice):
                # A page showing a pair another tab (or window) labelled since: ignoring this would lose the click
                # without a word, and the person would think the pair labelled their way.
                raise ValueError(
                    f"this pair was already labelled {quoted(earlier)} (in another tab or window?), so {quoted(choice)} was not "
                    "saved. Reload this page to continue; to change it, undo (u) in the page that labelled it."
                )
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

    def undo(self, expected: Any = ...) -> dict[str, Any]:
        """Take back the last decision. `expected`: the item the page showed as the last decision (its state's
        "last", None for none); when another tab or window decided since, nothing is undone and ValueError says so
        (else a stale page would undo a decision its person never saw)."""
        with self.lock:
            last = self.item_ids[self.history[-1]] if self.history else None
            if expected is not ... and expected != last:
                raise ValueError(
                    "the last decision is no longer the one this page showed (another tab or window labelled or "
                    "undid since), so nothing was undone. Reload this page to continue."
                )
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

    def release(self) -> None:
        """Let another server label into OUT (the lock of `exclusive`)."""
        if self._held is not None:
            # `exclusive` made it and no decision came: leave no empty log behind. Only under the lock (no other
            # server can be about to write it), and Windows has none (nor removes an open file).
            if _CAN_LOCK and self.log.is_file() and self.log.stat().st_size == 0:
                self.log.unlink()
            self._held.close()
            self._held = None

    def _append(self, entry: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry) + "\n").encode()
        with open(self.log, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                # A last line without its newline (an editor saved it so, or a write was cut off) would have
                # this decision glued onto it: one unreadable line where there were two decisions.
                if f.read(1) != b"\n":
                    line = b"\n" + line
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # The page says "not saved" and the person presses again: the log must then not hold this
                # decision (replayed after a restart as a second one) nor half of it (the next one glued on).
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise

    def pairs(self) -> list[dict]:
        return [
            self._pair(number, self.decisions[number]["choice"])
            for number in sorted(self.decisions)
            if self.decisions[number]["choice"] in ("left", "right")
        ]

    def _pair(self, number: int, choice: str) -> dict:
        """The pair row of item `number` decided `choice` ("left" or "right")."""
        view = self.view(number)
        chosen, rejected = ("left", "right") if choice == "left" else ("right", "left")
        pos = self.items[number][0]
        return pair_row(
            self.samples[pos]["prompt"],
            view[chosen],
            view[rejected],
            finished_chosen=view[f"{chosen}_finished"],
            finished_rejected=view[f"{rejected}_finished"],
            index=self.keys[pos],
            judge="human",
        )

    def _write_pairs(self) -> None:
        atomic_write_jsonl(self.out, self.pairs())


def _nothing_to_label(samples_file: str | os.PathLike, samples: list[dict]) -> str:
    """Why no prompt of the file has two answers to show, and what to do."""
    few = sum(len(row["completions"]) < 2 for row in samples)
    if few == len(samples):
        why = "every prompt has fewer than 2 completions, and labelling needs at least 2"
        fix = "Sample again with num_samples_per_prompt >= 2."
    else:
        why = "every prompt's answers are identical or empty"
        why += f" ({few} prompt(s) have fewer than 2 completions, labelling needs at least 2)" if few else ""
        fix = "Sample again with a higher sampling_temperature or more num_samples_per_prompt."
    return f"{samples_file}: nothing to label: {why}. {fix}"


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
