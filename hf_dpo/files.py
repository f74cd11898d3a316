"""Reading and writing the project's files: one JSONL reader, one atomic write, one writability check.

rows = read_jsonl("pairs.jsonl", error=DataError)       # [(line number, row dict), ...]
with atomic_path("eval_report.json") as tmp: tmp.write_text(...)   # readers never see half a file
why_not_writable("runs/demo")                           # None, or why no file can be made there
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from hf_dpo.errors import HfDpoError

_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


def read_jsonl(
    path: str | os.PathLike,
    error: type[HfDpoError] = HfDpoError,
    hint: str = "Fix or delete that line.",
    *,
    size: int | None = None,
) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line of a JSONL file (of its first `size` bytes, when given).

    A line that is not UTF-8, not JSON or not a JSON object raises `error` naming the file and line, with `hint`.
    """
    rows = []
    with open(path, "rb") as fh:
        lines = fh if size is None else io.BytesIO(fh.read(size))
        for lineno, raw in enumerate(lines, start=1):
            if lineno == 1:  # a byte-order mark, as Windows editors write one, is not part of the row
                raw = raw.removeprefix(_BOM)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(
                    f"{path}, line {lineno}: not UTF-8 text (byte {err.start}: {raw[err.start : err.start + 1]!r}). "
                    f"Save the file as UTF-8. {hint}"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}, line {lineno}: not valid JSON ({err.msg}). {hint}") from None
            except RecursionError:
                raise error(f"{path}, line {lineno}: JSON nested too deeply to read. {hint}") from None
            if not isinstance(row, dict):
                raise error(
                    f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}. {hint}"
                )
            rows.append((lineno, row))
    return rows


def read_utf8_text(path: str | os.PathLike, error: type[HfDpoError] = HfDpoError) -> str:
    """The whole file as text, less a leading byte-order mark (Windows editors write one); `error` naming the
    file, line and byte when it is not UTF-8."""
    raw = Path(path).read_bytes()
    start = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        byte = err.start + start  # counted in the file, mark included
        line = raw.count(b"\n", 0, byte) + 1
        raise error(f"{path}, line {line}: not UTF-8 text (byte {byte}). Save the file as UTF-8.") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block ends without an error (removed otherwise),
    so a crash never leaves half a file and a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # On disk before the rename: else a crash soon after can leave the new name with no data (a filesystem
        # may write the rename first), and the old file, the one good copy, is gone.
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def why_not_writable(directory: str | os.PathLike) -> str | None:
    """Why no file can be made in `directory` ("Permission denied: /data/run"), or None when one can.

    Proven, not guessed from permission bits: the directory is created and a temporary file made in it. The disk
    is left as it was: the file and every directory made for the check are removed again (whoever writes there
    later creates them), so a recipe that fails a later check leaves no stray, empty run dir behind.
    """
    path = Path(directory)
    made: list[Path] = []
    try:
        path = path.expanduser()  # `~nosuchuser/...` raises RuntimeError
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is a file, not a directory")
        # Deepest first, the order to remove them in; '.' and '..' name directories that exist anyway.
        made = [p for p in (path, *path.parents) if p.name not in ("", ".", "..") and not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hf_dpo-write-check-"):
            pass
    except (OSError, ValueError, RuntimeError) as err:  # ValueError: a NUL byte in the path
        if isinstance(err, OSError) and err.strerror:
            return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
        return str(err)
    finally:
        for made_dir in made:
            if not made_dir.is_dir():  # mkdir failed below it: nothing to remove here
                continue
            try:
                made_dir.rmdir()  # only ever empty: rmdir refuses a directory someone has written into since
            except OSError:
                break
    return None


def open_locked_for_append(path: str | os.PathLike):
    """`path` opened for appending and locked for this process (released when closed, or when the process dies),
    or None when another process holds it. Without fcntl (Windows) there is no advisory lock: the file comes back
    unlocked, and one writer per file is then the person's to keep."""
    held = open(path, "ab")
    try:
        import fcntl
    except ImportError:
        return held
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held.close()
        return None
    return held
