"""The files hand labelling writes, OUT (the pairs) and its decision log beside it: where they are, and the checks
that they may be written before the server starts: distinct from the samples file, replaceable (OUT is rewritten
from the log at every decision, so a pairs file the log did not make would be lost), writable, and held by one
server at a time. `hf_dpo.pairs.label_store` runs them when it opens a store.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from hf_dpo.files import open_locked_for_append, why_not_writable
from hf_dpo.pairs.formats import SamplingError, read_jsonl


def default_out(samples_file: str | os.PathLike) -> Path:
    path = Path(samples_file)
    return path.with_name(f"{path.stem}.pairs.jsonl")


def decisions_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.decisions.jsonl")


def check_distinct_files(samples: Path, out: Path, log: Path) -> None:
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


def hold_log(log: Path, out: Path):
    """The decision log, open and locked for this process (released when closed, or when the process dies).

    Two servers on one OUT (a second terminal, another --port) would each rewrite OUT from their own decisions
    only, dropping the other's pairs, and interleave their undos in one log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # Without a lock (Windows) the log is still the server's: it cuts a decision cut off mid-write
    # (`LabelStore._replay`).
    held = open_locked_for_append(log)
    if held is None:
        raise SamplingError(
            f"{log} is in use: another `hf-dpo label` is labelling into {out} (another terminal or --port); two "
            f"would each rewrite {out.name} without the other's decisions. Label in the page that one serves, or "
            "stop it first (Ctrl-C), or give this one another --out."
        )
    return held


def check_out_in_log(out: Path, log: Path, pairs: list[dict]) -> None:
    """OUT is rewritten from the log: every pair OUT holds must be one the log made (`pairs`, undone ones too: a
    kill between an undo and its rewrite leaves it in OUT). A log emptied, cut short or swapped for another would
    have the next rewrite drop the pairs only OUT still holds."""
    if not out.is_file() or out.stat().st_size == 0:
        return
    try:
        rows = [row for _, row in read_jsonl(out)]
    except SamplingError:
        return  # not JSON lines: `check_out_replaceable` has refused it already
    missing = sum((Counter(map(_pair_content, rows)) - Counter(map(_pair_content, pairs))).values())
    if missing:
        raise SamplingError(
            f"--out {out} holds {missing} pair(s) its decision log {log.name} does not (the log was emptied, cut "
            f"short or replaced); labelling rewrites {out.name} from the log at the first decision and they would "
            f"be lost. Restore the log, or move {out} away first (or give a new --out)."
        )


def _pair_content(row: dict) -> str:
    return json.dumps([row.get("prompt"), row.get("chosen"), row.get("rejected")], sort_keys=True)


def check_writable(out: Path, log: Path) -> None:
    """The first click writes the log and OUT: a place they cannot be written (a read-only or full disk, a parent
    that is a file) is named before the server starts, not as an error on the page after the first decision."""
    problem = why_not_writable(out.parent)
    if problem is None and log.exists():
        try:
            open(log, "ab").close()  # appending nothing proves the log takes the next decision
        except OSError as err:
            problem = f"{err.strerror}: {log}"
    if problem:
        raise SamplingError(
            f"--out {out}: the pairs file and its decision log {log.name} cannot be written there ({problem}). "
            "Give an --out in a directory you can write to."
        )


def check_out_replaceable(out: Path, log: Path) -> None:
    """OUT is rewritten from the decision log at every decision: a pairs file the log did not make (no log beside
    it, or rows hand labelling never writes, such as a judge's pairs) would be lost at the first click, so it is
    refused before the server starts."""
    if not out.is_file() or out.stat().st_size == 0:
        return
    try:
        rows = [row for _, row in read_jsonl(out)]
    except SamplingError:
        rows = None  # not JSON lines at all: certainly not what labelling wrote
    if not log.exists():
        why = f"there is no decision log {log.name} beside it"
    elif rows is None or any(row.get("judge") != "human" for row in rows):
        why = "it holds rows hand labelling did not write"
    else:
        return
    size = f"{len(rows)} rows" if rows is not None else f"{out.stat().st_size} bytes"
    raise SamplingError(
        f"--out {out} already exists and was not written by labelling ({why}); labelling rewrites it at the first "
        f"decision and its {size} would be lost. Give a new --out, or move {out} away first."
    )
