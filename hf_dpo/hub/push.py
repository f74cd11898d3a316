"""The push to the Hub: one commit with adapter (or a full fine-tune's model), card, report, plots, recipe,
tokenizer.

    hf-dpo push runs/demo --repo-id me/smollm2-dpo        # or push_run("runs/demo", "me/smollm2-dpo")

Rules a push keeps, and the module that keeps each:
- Local files first: README.md (the card) is written into the run dir before any network call, so a
  failed push loses nothing and `hf-dpo push` retries it (the error prints that exact command). (here)
- Only the main process pushes (RANK / PartialState); the others return None. (`settings`)
- A push that cannot succeed (no token, HF_HUB_OFFLINE) is refused before any network call; transient
  failures are retried with exponential backoff under one retry budget; auth, not-found and other HTTP errors,
  and an endpoint that refuses the connection, are not. (here, `retries`)
- A README.md edited by hand is never overwritten: the card is regenerated only while README.md is the one
  hf_dpo wrote (its sha256 is kept in `.hf_dpo_card.sha256`) or PEFT's placeholder. (`run_card`)
- What leaves the machine names no local path: `adapter_config.json` names the base model's Hub id, and
  absolute paths of this machine in the pushed text files become public names. (`public_files`)
- The token lives in memory only: it is never written to a file, a log line, the card or an error message,
  and a push whose files hold it is refused. `take_hub_settings` moves it out of TrainingArguments before the
  Trainer can save them. (`settings`, `errors`, here)

The card is rendered by `card`; checkpoints pushed during training are `checkpoints.HubCheckpointCallback`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

from hf_dpo.errors import quoted, shortened
from hf_dpo.hub.card import write_eval_results
from hf_dpo.hub.errors import PushError, scrub_token
from hf_dpo.hub.public_files import (
    REPORT_FILES,
    files_named_by_report,
    files_to_push,
    is_full_model_dir,
    public_files,
    read_run_info,
)
from hf_dpo.hub.retries import classify, http_failure, with_retries
from hf_dpo.hub.run_card import refresh_card
from hf_dpo.hub.settings import is_main_process, revision_problem, token_problem

logger = logging.getLogger(__name__)


def retry_command(run_dir, repo_id, private=False, revision=None, commit_message=None) -> str:
    cmd = ["hf-dpo", "push", str(run_dir), "--repo-id", repo_id]
    cmd += ["--private"] if private else []
    cmd += ["--revision", revision] if revision else []
    cmd += ["--commit-message", commit_message] if commit_message else []
    return " ".join(shlex.quote(c) for c in cmd)


def hf_api(token: str | None, endpoint: str | None):
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
    if private:  # create_repo(exist_ok=True) leaves an existing repo's visibility as it is
        shown = with_retries(
            lambda: api.repo_info(repo_id),
            what="repo_info",
            attempts=attempts,
            backoff_s=backoff_s,
            token=token,
        )
        if not shown.private:
            raise PushError(
                f"--private was asked, but {repo_id} already exists and is public: pushing would publish the "
                "run. Make the repo private in its settings on the Hub, or give another --repo-id, and push again.",
                "invalid",
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

    README.md (the card) is written into run_dir first. Raises PushError saying why (no token, auth, not found,
    an HTTP status and its route, an endpoint that does not answer) and with the `hf-dpo push ...` command that
    retries.
    """
    if not is_main_process():
        logger.info("Not the main process: skipping the push (rank %s).", os.environ.get("RANK"))
        return None
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PushError(f"run dir {run_dir} does not exist.", "invalid")
    check_repo_id(repo_id)
    if problem := revision_problem(revision):
        raise PushError(f"--revision (hub_revision in a recipe) {problem}.", "invalid")
    retry = retry_command(run_dir, repo_id, private, revision, commit_message)
    files_to_push(run_dir)  # the run's own files first: a broken adapter is named whatever the token
    token = _resolve_token(token)
    check_can_push(token)
    paths, payload = prepare_payload(run_dir, repo_id, license)
    _check_no_token(paths, run_dir, token)
    _check_no_token_in(payload, token)
    what = "full fine-tune" if is_full_model_dir(run_dir) else "adapter"
    message = commit_message or f"hf-dpo: DPO {what}, card and eval report from {run_dir.name}"
    api = hf_api(token, endpoint)
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
    except PushError:  # refused before the commit (a public repo with --private): already says what to do
        raise
    except Exception as err:
        raise push_failed(err, run_dir, repo_id, api.endpoint, attempts, token, retry) from None
    logger.info("Pushed %s: %s", repo_id, info.commit_url)
    return info.commit_url


def check_can_push(token: str | None) -> None:
    """PushError before any network call when none could succeed: no token anywhere, or HF_HUB_OFFLINE set."""
    from huggingface_hub import constants

    if not token:
        raise PushError(
            "no Hub token: a push needs a token with write access. Set HF_TOKEN (or give --token, or run "
            "`hf auth login`); tokens are made at https://huggingface.co/settings/tokens.",
            "auth",
        )
    if problem := token_problem(token):
        raise PushError(f"the Hub token {problem}.", "auth")
    if constants.HF_HUB_OFFLINE:
        raise PushError(
            "HF_HUB_OFFLINE is set, so huggingface_hub makes no network call: unset it to push.", "offline"
        )


def check_repo_id(repo_id: str) -> None:
    """PushError naming --repo-id when the Hub would refuse it, before the card (which names it) is written."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(
            f"--repo-id {quoted(repo_id)} (hub_model_id in a recipe) is not a Hub repo id: {shortened(str(err), 200)} Give ORG/NAME, e.g. "
            "me/smollm2-dpo: letters, digits, '-', '_' and '.', no '--' or '..', at most 96 characters, not a URL.",
            "invalid",
        ) from None


def prepare_payload(run_dir: Path, repo_id: str, license: str | None) -> tuple[list[Path], dict]:
    """Checks the run, writes the card and .eval_results/ locally (local first: a failed push loses nothing),
    and returns (files, {path in repo: file or bytes}) of the commit."""
    files_to_push(run_dir)  # names a missing adapter before anything is written
    read_run_info(run_dir)  # names a missing, corrupt or incomplete run_info.json
    refresh_card(run_dir, repo_id, license)  # a hand-edited README.md is kept
    try:  # the model-index numbers in the Hub's .eval_results/ format
        write_eval_results(run_dir)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        # Reached with a hand-edited README.md, which refresh_card keeps without reading the report.
        report = run_dir / "eval_report.json"
        raise PushError(
            f"{report} is damaged or from an older hf_dpo: it lacks what the Hub's eval results need "
            f"({type(err).__name__}: {err}). Re-run `hf-dpo eval {run_dir}` to rewrite it, or delete it to "
            "push without a report.",
            "invalid",
        ) from None
    paths = files_to_push(run_dir)
    for name in REPORT_FILES:
        if not (run_dir / name).is_file():
            logger.warning(
                "%s has no %s: pushing without the report (run `hf-dpo eval %s` first).",
                run_dir,
                name,
                run_dir,
            )
    for name in _plots_named_by_report(run_dir) + files_named_by_report(run_dir):
        if not (run_dir / name).is_file():  # the card links it
            logger.warning(
                "%s: eval_report.json names %s, which is missing: pushing without it.", run_dir, name
            )
    return paths, public_files(run_dir, paths)


def _plots_named_by_report(run_dir: Path) -> list[str]:
    """The plots eval_report.json lists (the card shows only those present); [] for a missing or damaged report."""
    try:
        plots = json.loads((run_dir / "eval_report.json").read_text()).get("plots")
    except (OSError, ValueError, AttributeError):
        return []
    return [p for p in plots if isinstance(p, str)] if isinstance(plots, list) else []


def push_failed(
    err, run_dir: Path, repo_id: str, endpoint: str, attempts: int, token, retry: str
) -> PushError:
    """The PushError for a failed upload: why (auth, not found, an HTTP status and the route that answered it, an
    endpoint that does not answer), what to do, and the retry command; the token scrubbed from every word of it."""
    kind, reason = classify(err)
    _, route = http_failure(err)
    hint = {
        "auth": "Set HF_TOKEN (or --token) to a token with write access: https://huggingface.co/settings/tokens",
        "not_found": "Check --repo-id (ORG/NAME) and --revision, and that the token can write to that namespace.",
        "network": f"{endpoint} did not answer after {attempts} attempts; check the connection / HF_ENDPOINT.",
        "unreachable": f"Nothing answers at {endpoint}: check HF_ENDPOINT (unset, it is the Hub) and the "
        "connection (a proxy, a firewall).",
        "server": f"The Hub kept failing after {attempts} attempts.",
        "http": f"{endpoint} refused the request; the reason is below.",
        "offline": "Unset HF_HUB_OFFLINE to push.",
    }.get(kind, "")
    if kind == "not_found" and route and "xet-" in route:  # an endpoint without the Xet upload routes
        hint = (
            f"{endpoint} has no Xet upload route (a server other than the Hub, or an older one): set "
            "HF_HUB_DISABLE_XET=1 to upload without Xet."
        )
    detail = scrub_token(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token)
    return PushError(
        f"Push of {run_dir} to {repo_id} failed: {reason}. {hint}\n  ({detail})\n"
        f"Nothing was lost: every file is still in {run_dir}. Retry with:\n  {retry}",
        kind,
        retry,
    )
