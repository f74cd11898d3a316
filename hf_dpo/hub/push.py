"""The model card and the push to the Hub: one commit with adapter, card, report, plots, recipe, tokenizer.

    hf-dpo push runs/demo --repo-id me/smollm2-dpo        # or push_run("runs/demo", "me/smollm2-dpo")

Rules this module keeps:
- Local files first: README.md (the card) is written into the run dir before any network call, so a
  failed push loses nothing and `hf-dpo push` retries it (the error prints that exact command).
- Only the main process pushes (RANK / PartialState); the others return None.
- Transient failures (5xx, 429, 408, connection reset, timeouts) are retried with exponential backoff;
  auth (401/403) and not-found errors are not. One retry budget: each Hub call (create repo, create
  branch, the commit with its uploads) gets `attempts` tries (default 4: waits 2, 4, 8 s), and
  huggingface_hub's own inner retries are off for those calls, so a dead server fails in ~15 s, not minutes.
- A README.md edited by hand is never overwritten: the card is regenerated only while README.md is the one
  hf_dpo wrote (its sha256 is kept in `.hf_dpo_card.sha256`) or PEFT's placeholder.
- What leaves the machine names no local path: `adapter_config.json` names the base model's Hub id, and
  absolute paths of this machine in the pushed text files (recipe, card, report) become names relative to
  the run dir or the base name of the model / data directory (`public_files`).
- The token lives in memory only: it is never written to a file, a log line, the card or an error message.
  `take_hub_settings` moves it out of TrainingArguments before the Trainer can save them.

The card comes from hf_dpo.hub.card (model_cards/adapter_card.md through huggingface_hub's ModelCard).

Why one file of ~670 lines: each rule above is a section of it (files, card, public text, retries, the commit,
checkpoint pushes), and every section serves the one `push_run`; the card's rendering already lives apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hf_dpo.errors import HfDpoError
from hf_dpo.hub.card import write_card, write_eval_results

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
REPORT_FILES = ("eval_report.json", "eval_report.md", "evaluate_results.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
CARD_RECORD = ".hf_dpo_card.sha256"  # sha256 of the README.md hf_dpo last wrote into the run dir
# PEFT's save_pretrained writes a placeholder card; it is replaced like one of ours.
PEFT_CARD_MARKERS = ("<!-- Provide a quick summary of what the model is/does. -->", "- PEFT ")
# Text files whose absolute local paths are rewritten on the way out (tokenizer.json / vocab stay byte-exact).
SCRUBBED_SUFFIXES = (".md", ".yaml", ".yml")
SCRUBBED_JSON = (
    "adapter_config.json",
    "eval_report.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class PushError(HfDpoError, RuntimeError):
    """A push failed; `kind` is auth | not_found | network | server | invalid, `retry_command` retries it."""

    def __init__(self, message: str, kind: str, retry_command: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_command = retry_command


# ----------------------------------------------------------------------------------------------------------
# Token handling


@dataclass
class HubSettings:
    """Where and how a run is pushed; `token` stays in memory (repr hides it)."""

    repo_id: str
    private: bool = False
    revision: str | None = None
    strategy: str = "every_save"
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"HubSettings(repo_id={self.repo_id!r}, private={self.private}, revision={self.revision!r}, "
            f"strategy={self.strategy!r}, token={'***' if self.token else None})"
        )


def take_hub_settings(args) -> HubSettings | None:
    """Move the hub keys out of TrainingArguments before a Trainer sees them.

    Sets `args.hub_token = None` (training_args.bin pickles the object, token included) and
    `args.push_to_hub = False` (hf_dpo pushes itself: HubCheckpointCallback + push_run). Returns the
    settings when the recipe asked for a push, else None.
    """
    token = getattr(args, "hub_token", None) or os.environ.get("HF_TOKEN")
    args.hub_token = None
    if not getattr(args, "push_to_hub", False):
        return None
    args.push_to_hub = False
    repo_id = args.hub_model_id or Path(args.output_dir).name
    strategy = getattr(args, "hub_strategy", "every_save")
    return HubSettings(
        repo_id=repo_id,
        private=bool(args.hub_private_repo),
        revision=getattr(args, "hub_revision", None),
        strategy=str(getattr(strategy, "value", strategy)),
        token=token,
    )


def scrub_token(text: str, token: str | None) -> str:
    """`text` with every occurrence of `token` replaced by ***."""
    return text.replace(token, "***") if token else text


def _is_main_process() -> bool:
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch set RANK on every process
        return False
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # accelerate not initialised in a plain process: fall back to the launcher's env
        return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------------------------------------
# Push


def files_to_push(run_dir: str | Path) -> list[Path]:
    """The files of one push, relative to run_dir: adapter, card, report, plots, recipe, tokenizer."""
    run_dir = Path(run_dir)
    missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
    if missing:
        raise PushError(
            f"{run_dir} has no {', '.join(missing)}: push a finished `hf-dpo train` run (its output_dir).",
            "invalid",
        )
    names = [*ADAPTER_FILES, "README.md", *REPORT_FILES, "recipe.yaml", *TOKENIZER_FILES]
    found = [Path(n) for n in names if (run_dir / n).is_file()]
    found += sorted(p.relative_to(run_dir) for p in (run_dir / "plots").glob("*.png"))
    found += sorted(p.relative_to(run_dir) for p in (run_dir / ".eval_results").glob("*.yaml"))
    return found


# ----------------------------------------------------------------------------------------------------------
# The run dir: its run_info.json, its card, and what of it may leave the machine


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """run_info.json of a finished run, checked: PushError naming the file when missing, corrupt or incomplete."""
    import json

    path = run_dir / "run_info.json"
    fix = f"Re-run `hf-dpo train` into {run_dir}, or restore run_info.json from a copy."
    if not path.is_file():
        raise PushError(f"{path} is missing: is {run_dir} a finished `hf-dpo train` run? {fix}", "invalid")
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PushError(f"{path} is not valid JSON ({err}): the file is damaged. {fix}", "invalid") from None
    if not isinstance(info, dict):
        raise PushError(f"{path} must hold a JSON object, not {type(info).__name__}. {fix}", "invalid")
    base = info.get("base_model")
    if not isinstance(base, str) or not base.strip():
        raise PushError(f"{path} has no 'base_model' (the base model's Hub id or path). {fix}", "invalid")
    return info


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def card_was_edited(run_dir: Path) -> bool:
    """Whether README.md is someone's own text: neither the card hf_dpo last wrote nor PEFT's placeholder."""
    readme = run_dir / "README.md"
    if not readme.is_file():
        return False
    data = readme.read_bytes()
    record = run_dir / CARD_RECORD
    if record.is_file() and record.read_text().strip() == _sha256(data):
        return False
    text = data.decode("utf-8", errors="replace")
    return not all(marker in text for marker in PEFT_CARD_MARKERS)


@contextlib.contextmanager
def card_kept(run_dir: str | Path):
    """Around `save_model`: PEFT's save_pretrained writes its placeholder README.md, or updates an existing one's
    metadata (with a local base path). A hand-edited card comes back byte for byte; hf_dpo's own card (or none)
    is removed, so `refresh_card` writes a fresh one for the new adapter."""
    if not _is_main_process():  # only the main process saves (and writes the card)
        yield
        return
    readme = Path(run_dir) / "README.md"
    edited = card_was_edited(Path(run_dir))
    saved = readme.read_bytes() if edited else None
    try:
        yield
    finally:
        if saved is not None:
            readme.write_bytes(saved)
        elif readme.is_file():
            readme.unlink()


def refresh_card(run_dir: str | Path, repo_id: str | None = None, license: str | None = None) -> Path:
    """(Re)write README.md from the run's files unless it was edited by hand; returns its path.

    A hand-edited card is kept (and pushed) as it is, with a warning; delete it to get a fresh one."""
    run_dir = Path(run_dir)
    readme = run_dir / "README.md"
    if card_was_edited(run_dir):
        logger.warning(
            "%s was edited by hand: keeping it as it is (not regenerated). Delete it to get a fresh card.",
            readme,
        )
        return readme
    try:
        path = write_card(run_dir, repo_id, license)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise PushError(
            f"{run_dir / 'run_info.json'} or {run_dir / 'eval_report.json'} lacks what the model card needs "
            f"({type(err).__name__}: {err}). Re-run `hf-dpo eval {run_dir}`, or `hf-dpo train` into it.",
            "invalid",
        ) from None
    (run_dir / CARD_RECORD).write_text(_sha256(path.read_bytes()) + "\n")
    return path


def _local_roots(run_dir: Path, info: dict[str, Any]) -> list[tuple[str, str]]:
    """(absolute local prefix, public replacement), longest first: the run dir, the model and data dirs, then
    places any path of this machine lives under (home, temp, cwd, caches)."""
    import sys
    import tempfile

    def absolute(p) -> str | None:
        try:
            return str(Path(p).expanduser().resolve()) if p and str(p).startswith(("/", "~", ".")) else None
        except (OSError, RuntimeError, ValueError):
            return None

    base = str(info.get("base_model") or "")
    hub_base = base if _is_hub_id(base) else None
    pairs: list[tuple[str, str]] = []
    for path in {run_dir.resolve().as_posix(), str(run_dir.absolute())}:
        pairs.append((path, "."))
    model = info.get("model_name_or_path") or base
    for path in {absolute(model), absolute(base)} - {None}:
        pairs.append((path, hub_base or Path(path).name))
    dataset = info.get("dataset")
    if absolute(dataset):
        pairs.append((absolute(dataset), Path(absolute(dataset)).name))
    cache = os.environ.get("HF_DPO_CACHE") or str(Path.home() / ".cache" / "hf_dpo")
    for root in (
        cache,
        os.environ.get("HF_HOME"),
        tempfile.gettempdir(),
        os.getcwd(),
        str(Path.home()),
        sys.prefix,
    ):
        if absolute(root) and absolute(root) != "/":
            pairs.append((absolute(root), ""))
    return sorted(set(pairs), key=lambda kv: -len(kv[0]))


def scrub_local_paths(text: str, roots: list[tuple[str, str]]) -> str:
    """Absolute paths under `roots` -> their public names: `run/x` -> `x`, `<model dir>/f` -> `<hub id>/f`,
    anything else of this machine -> its last component."""
    import re

    def public(match: re.Match) -> str:
        path = match.group(0)
        for prefix, name in roots:
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix) :].lstrip("/")
                if name == ".":
                    return rest or "."
                if name:
                    return f"{name}/{rest}" if rest else name
                return Path(path).name or path
        return path

    return re.sub(r"(?<![\w.:/~-])/[^\s\"'`|()<>\[\]{},;*]+", public, text)


def _is_hub_id(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", name or "")) and not os.path.exists(
        name
    )


def public_files(run_dir: str | Path, paths: list[Path] | None = None) -> dict[str, Path | bytes]:
    """What one push sends: {path in repo: local file, or the bytes to send instead}.

    adapter_config.json names the base model's Hub id (not a local cache path); the recipe, card, report and
    the other small text files carry no absolute path of this machine. Binary and tokenizer files go byte-exact."""
    import json

    run_dir = Path(run_dir)
    paths = files_to_push(run_dir) if paths is None else paths
    info = read_run_info(run_dir)
    roots = _local_roots(run_dir, info)
    base = str(info["base_model"])
    out: dict[str, Path | bytes] = {}
    for rel in paths:
        local = run_dir / rel
        name = rel.as_posix()
        if rel.name == "adapter_config.json":
            config = json.loads(local.read_text(encoding="utf-8"))
            named = config.get("base_model_name_or_path")
            if _is_hub_id(base):
                config["base_model_name_or_path"] = base
            elif named:
                config["base_model_name_or_path"] = Path(str(named)).name
                logger.warning(
                    "The base model %s has no Hub id: the pushed adapter_config.json names it '%s'; loaders need "
                    "the base under that name.",
                    named,
                    config["base_model_name_or_path"],
                )
            text = scrub_local_paths(json.dumps(config, indent=2, sort_keys=True) + "\n", roots)
            out[name] = text.encode("utf-8")
        elif rel.suffix in SCRUBBED_SUFFIXES or rel.name in SCRUBBED_JSON:
            original = local.read_bytes()
            text = scrub_local_paths(original.decode("utf-8", errors="surrogateescape"), roots)
            data = text.encode("utf-8", errors="surrogateescape")
            out[name] = local if data == original else data
        else:
            out[name] = local
    return out


def _classify(err: BaseException) -> tuple[str, str]:
    """(kind, reason) of a failed Hub call; kind 'server'/'network' are worth retrying."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return "auth", f"HTTP {status}: the token is missing, invalid or lacks write access to this repo"
    if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)) or status == 404:
        return "not_found", f"HTTP {status}: repository or revision not found"
    if status in TRANSIENT_STATUS:
        return "server", f"HTTP {status} from the Hub (transient)"
    if isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return "network", f"network error ({type(err).__name__})"
    if isinstance(err, HfHubHTTPError):
        return "http", f"HTTP {status}"
    if isinstance(err, RuntimeError) and err.__cause__ is not None:  # LFS upload errors wrap the real cause
        return _classify(err.__cause__)
    return "other", type(err).__name__


# While > 0, huggingface_hub's http_backoff tries once. Process-wide, not per thread: the LFS uploads of one
# commit run in huggingface_hub's own worker threads.
_INNER_RETRIES_OFF = [0]
_INNER_RETRIES_LOCK = threading.Lock()


def _single_retry_budget() -> None:
    """Make huggingface_hub's `http_backoff` (LFS batch/upload/verify, commit, pagination) try once whenever
    `with_retries` is calling, so `attempts` is the whole budget: no 4 x 6 = 24 uploads of one file."""
    import importlib

    for name in ("huggingface_hub.lfs", "huggingface_hub._commit_api", "huggingface_hub.hf_api"):
        module = importlib.import_module(name)
        inner = getattr(module, "http_backoff", None)
        if inner is None or getattr(inner, "_hf_dpo_single_budget", False):
            continue

        def once(*args, _inner=inner, **kwargs):
            if _INNER_RETRIES_OFF[0] > 0:
                kwargs["max_retries"] = 0
            return _inner(*args, **kwargs)

        once._hf_dpo_single_budget = True
        module.http_backoff = once


def with_retries(fn, *, what: str, attempts: int = 4, backoff_s: float = 2.0, token: str | None = None):
    """Call fn(); retry transient failures with delays backoff_s * 2**i. Other failures raise at once.

    This is the only retry loop: huggingface_hub's inner retries are off while fn runs."""
    _single_retry_budget()
    for attempt in range(1, attempts + 1):
        try:
            with _INNER_RETRIES_LOCK:
                _INNER_RETRIES_OFF[0] += 1
            try:
                return fn()
            finally:
                with _INNER_RETRIES_LOCK:
                    _INNER_RETRIES_OFF[0] -= 1
        except Exception as err:
            kind, reason = _classify(err)
            if kind not in ("server", "network") or attempt == attempts:
                raise
            delay = backoff_s * 2 ** (attempt - 1)
            logger.warning(
                "%s failed (%s); retry %d/%d in %.1f s",
                what,
                scrub_token(reason, token),
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)


def retry_command(run_dir, repo_id, private=False, revision=None, commit_message=None) -> str:
    cmd = ["hf-dpo", "push", str(run_dir), "--repo-id", repo_id]
    cmd += ["--private"] if private else []
    cmd += ["--revision", revision] if revision else []
    cmd += ["--commit-message", commit_message] if commit_message else []
    return " ".join(shlex.quote(c) for c in cmd)


def _hf_api(token: str | None, endpoint: str | None):
    from huggingface_hub import HfApi, constants

    # Read at call time, not import time: HF_ENDPOINT may be set after huggingface_hub was imported.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return HfApi(endpoint=endpoint.rstrip("/"), token=token)


def _resolve_token(token: str | None) -> str | None:
    from huggingface_hub import get_token

    return token or os.environ.get("HF_TOKEN") or get_token()


def _check_no_token(paths: list[Path], run_dir: Path, token: str | None) -> None:
    if not token:
        return
    needle = token.encode()
    leaks = [str(run_dir / rel) for rel in paths if needle in (run_dir / rel).read_bytes()]
    if leaks:
        raise PushError(
            f"{', '.join(leaks)} contain(s) the Hub token; refusing to push. Remove it and retry.", "invalid"
        )


def _check_no_token_in(payload: dict[str, Path | bytes], token: str | None) -> None:
    if not token:
        return
    needle = token.encode()
    leaks = [k for k, v in payload.items() if needle in (v if isinstance(v, bytes) else v.read_bytes())]
    if leaks:
        raise PushError(f"{', '.join(leaks)} would carry the Hub token; refusing to push.", "invalid")


def upload(
    api,
    repo_id: str,
    files: dict[str, Path | bytes],
    *,
    message: str,
    private: bool = False,
    revision: str | None = None,
    attempts: int = 4,
    backoff_s: float = 2.0,
    token: str | None = None,
):
    """create_repo (exist_ok) + branch if needed + one commit of `files` (path in repo -> local path or bytes)."""
    from huggingface_hub import CommitOperationAdd

    with_retries(
        lambda: api.create_repo(repo_id, private=private, exist_ok=True),
        what="create_repo",
        attempts=attempts,
        backoff_s=backoff_s,
        token=token,
    )
    if revision and revision != "main":
        with_retries(
            lambda: api.create_branch(repo_id, branch=revision, exist_ok=True),
            what="create_branch",
            attempts=attempts,
            backoff_s=backoff_s,
            token=token,
        )

    def commit():  # operations are mutated by create_commit: build them fresh for every attempt
        ops = [
            CommitOperationAdd(path_in_repo=k, path_or_fileobj=v if isinstance(v, bytes) else str(v))
            for k, v in files.items()
        ]
        return api.create_commit(repo_id, ops, commit_message=message, revision=revision)

    return with_retries(commit, what="commit", attempts=attempts, backoff_s=backoff_s, token=token)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    *,
    endpoint: str | None = None,
    license: str | None = None,
    attempts: int = 4,
    backoff_s: float = 2.0,
) -> str | None:
    """Push a finished run dir to `repo_id` in one commit; returns the commit URL (None off the main process).

    README.md (the card) is written into run_dir first. Raises PushError saying why (auth, not found,
    network, server) and with the `hf-dpo push ...` command that retries.
    """
    if not _is_main_process():
        logger.info("Not the main process: skipping the push (rank %s).", os.environ.get("RANK"))
        return None
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PushError(f"run dir {run_dir} does not exist.", "invalid")
    retry = retry_command(run_dir, repo_id, private, revision, commit_message)
    paths, payload = prepare_payload(run_dir, repo_id, license)
    token = _resolve_token(token)
    _check_no_token(paths, run_dir, token)
    _check_no_token_in(payload, token)
    message = commit_message or f"hf-dpo: DPO adapter, card and eval report from {run_dir.name}"
    api = _hf_api(token, endpoint)
    logger.info(
        "Pushing %d files from %s to %s%s",
        len(paths),
        run_dir,
        repo_id,
        f" (revision {revision})" if revision else "",
    )
    try:
        info = upload(
            api,
            repo_id,
            payload,
            message=message,
            private=private,
            revision=revision,
            attempts=attempts,
            backoff_s=backoff_s,
            token=token,
        )
    except Exception as err:
        raise push_failed(err, run_dir, repo_id, api.endpoint, attempts, token, retry) from None
    logger.info("Pushed %s: %s", repo_id, info.commit_url)
    return info.commit_url


def prepare_payload(run_dir: Path, repo_id: str, license: str | None) -> tuple[list[Path], dict]:
    """Checks the run, writes the card and .eval_results/ locally (local first: a failed push loses nothing),
    and returns (files, {path in repo: file or bytes}) of the commit."""
    files_to_push(run_dir)  # names a missing adapter before anything is written
    read_run_info(run_dir)  # names a missing, corrupt or incomplete run_info.json
    refresh_card(run_dir, repo_id, license)  # a hand-edited README.md is kept
    write_eval_results(run_dir)  # the model-index numbers in the Hub's .eval_results/ format
    paths = files_to_push(run_dir)
    for name in REPORT_FILES:
        if not (run_dir / name).is_file():
            logger.warning(
                "%s has no %s: pushing without the report (run `hf-dpo eval %s` first).",
                run_dir,
                name,
                run_dir,
            )
    return paths, public_files(run_dir, paths)


def push_failed(
    err, run_dir: Path, repo_id: str, endpoint: str, attempts: int, token, retry: str
) -> PushError:
    """The PushError for a failed upload: why (auth, not found, network, server), what to do, and the retry
    command; the token scrubbed from every word of it."""
    kind, reason = _classify(err)
    hint = {
        "auth": "Set HF_TOKEN (or --token) to a token with write access: https://huggingface.co/settings/tokens",
        "not_found": "Check --repo-id (ORG/NAME) and --revision, and that the token can write to that namespace.",
        "network": f"Could not reach {endpoint}; check the connection / HF_ENDPOINT.",
        "server": f"The Hub kept failing after {attempts} attempts.",
    }.get(kind, "")
    detail = scrub_token(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token)
    return PushError(
        f"Push of {run_dir} to {repo_id} failed: {reason}. {hint}\n  ({detail})\n"
        f"Nothing was lost: every file is still in {run_dir}. Retry with:\n  {retry}",
        kind,
        retry,
    )


# ----------------------------------------------------------------------------------------------------------
# Intermediate checkpoints


class HubCheckpointCallback(TrainerCallback):
    """On each save, push the checkpoint's adapter to `checkpoints/step-N/` in a background thread.

    Files are read into memory at save time, so the Trainer may rotate the checkpoint away while the upload
    runs. One upload at a time, in order; training never waits except at the end, where pending pushes are
    awaited. A failed checkpoint push is logged (token scrubbed), never raised: the final push_run matters.
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        endpoint: str | None = None,
        attempts: int = 4,
        backoff_s: float = 2.0,
        path_template: str = "checkpoints/step-{step}",
    ):
        self.settings = settings
        self.endpoint = endpoint
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.path_template = path_template
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-dpo-push")
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self.results: list[dict[str, Any]] = []  # {"step", "commit_url" | "error"}

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        files = {}
        for name in ADAPTER_FILES:
            if (ckpt / name).is_file():
                files[f"{self.path_template.format(step=state.global_step)}/{name}"] = (
                    ckpt / name
                ).read_bytes()
        if not files:
            logger.warning("Checkpoint %s has no adapter files; not pushing it.", ckpt)
            return
        self._futures.append(self._executor.submit(self._push, state.global_step, files))

    def _push(self, step: int, files: dict[str, bytes]) -> None:
        s = self.settings
        try:
            api = _hf_api(s.token, self.endpoint)
            info = upload(
                api,
                s.repo_id,
                files,
                message=f"hf-dpo: checkpoint at step {step}",
                private=s.private,
                revision=s.revision,
                attempts=self.attempts,
                backoff_s=self.backoff_s,
                token=s.token,
            )
            result = {"step": step, "commit_url": info.commit_url}
            logger.info("Pushed checkpoint step %d to %s", step, s.repo_id)
        except Exception as err:
            kind, reason = _classify(err)
            result = {"step": step, "error": scrub_token(f"{reason}: {err}", s.token)}
            logger.warning(
                "Pushing checkpoint step %d to %s failed (%s); training goes on.",
                step,
                s.repo_id,
                scrub_token(reason, s.token),
            )
        with self._lock:
            self.results.append(result)

    def wait(self) -> list[dict[str, Any]]:
        for f in self._futures:
            f.result()
        self._futures.clear()
        return self.results

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()
        self._executor.shutdown(wait=True)
