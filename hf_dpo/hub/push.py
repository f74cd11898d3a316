"""The model card and the push to the Hub: one commit with adapter, card, report, plots, recipe, tokenizer.

    hf-dpo push runs/demo --repo-id me/smollm2-dpo        # or push_run("runs/demo", "me/smollm2-dpo")

Rules this module keeps:
- Local files first: README.md (the card) is written into the run dir before any network call, so a
  failed push loses nothing and `hf-dpo push` retries it (the error prints that exact command).
- Only the main process pushes (RANK / PartialState); the others return None.
- Transient failures (5xx, 429, 408, connection reset, timeouts) are retried with exponential backoff;
  auth (401/403) and not-found errors are not.
- The token lives in memory only: it is never written to a file, a log line, the card or an error message.
  `take_hub_settings` moves it out of TrainingArguments before the Trainer can save them.

The card comes from hf_dpo.hub.card (model_cards/adapter_card.md through huggingface_hub's ModelCard).
"""

from __future__ import annotations

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
from hf_dpo.hub.card import render_card, write_card, write_eval_results  # noqa: F401 - part of the hub API

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
REPORT_FILES = ("eval_report.json", "eval_report.md")
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


def with_retries(fn, *, what: str, attempts: int = 4, backoff_s: float = 2.0, token: str | None = None):
    """Call fn(); retry transient failures with delays backoff_s * 2**i. Other failures raise at once."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
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
    write_card(run_dir, repo_id, license)  # local first
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
    token = _resolve_token(token)
    _check_no_token(paths, run_dir, token)
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
            {p.as_posix(): run_dir / p for p in paths},
            message=message,
            private=private,
            revision=revision,
            attempts=attempts,
            backoff_s=backoff_s,
            token=token,
        )
    except Exception as err:
        kind, reason = _classify(err)
        hint = {
            "auth": "Set HF_TOKEN (or --token) to a token with write access: https://huggingface.co/settings/tokens",
            "not_found": "Check --repo-id (ORG/NAME) and --revision, and that the token can write to that namespace.",
            "network": f"Could not reach {api.endpoint}; check the connection / HF_ENDPOINT.",
            "server": f"The Hub kept failing after {attempts} attempts.",
        }.get(kind, "")
        detail = scrub_token(
            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token
        )
        raise PushError(
            f"Push of {run_dir} to {repo_id} failed: {reason}. {hint}\n  ({detail})\n"
            f"Nothing was lost: every file is still in {run_dir}. Retry with:\n  {retry}",
            kind,
            retry,
        ) from None
    logger.info("Pushed %s: %s", repo_id, info.commit_url)
    return info.commit_url


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
