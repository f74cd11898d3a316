"""One retry budget for every Hub call of a push: transient failures (5xx, 429, 408, a connection reset or
dropped, timeouts) are retried with exponential backoff; auth (401/403), not-found and other HTTP errors, and an
endpoint that cannot be reached at all (connection refused, unknown host), are not. Each call gets `attempts`
tries (default 4: waits 2, 4, 8 s), and huggingface_hub's own inner retries are off while it runs, so a dead
server fails in ~15 s, not minutes. `classify` says which kind a failure is, with its status and route."""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from urllib.parse import urlsplit

from hf_dpo.hub.errors import scrub_token

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
RETRIED_KINDS = ("server", "network")
# hf_xet reports an HTTP error of its own requests as a ConnectionError whose text carries the status and URL:
# "Request error: HTTP status client error (404 Not Found), domain: http://host/api/models/a/b/xet-write-token/main"
_XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3})[^)]*\)(?:, domain: (\S+))?")


def _route(url) -> str | None:
    """'/api/repos/create' of a request URL (no host, no query: neither says what failed)."""
    return urlsplit(str(url)).path or None if url else None


def http_failure(err: BaseException) -> tuple[int | None, str | None]:
    """(HTTP status, route) of a failed Hub call that got an answer; (None, None) when none came."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        request = getattr(response, "_request", None)  # httpx raises on .request when no request is attached
        url = getattr(request, "url", None)
        method = getattr(request, "method", None)
        route = _route(url)
        return status, f"{method} {route}" if method and route else route
    found = _XET_STATUS.search(str(err)) if isinstance(err, ConnectionError) else None
    if found:
        return int(found.group(1)), _route(found.group(2))
    return None, None


def classify(err: BaseException) -> tuple[str, str]:
    """(kind, reason) of a failed Hub call. kind: auth | not_found | server | http (an answer with that status),
    network (no answer: reset, timeout; worth retrying), unreachable (refused, unknown host: not worth it),
    offline (HF_HUB_OFFLINE), other."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    status, route = http_failure(err)
    on = f" on {route}" if route else ""
    if status in (401, 403):
        return "auth", f"HTTP {status}{on}: the token is missing, invalid or lacks write access to this repo"
    if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)) or status == 404:
        return "not_found", f"HTTP 404{on}: not found"
    if status in TRANSIENT_STATUS:
        return "server", f"HTTP {status}{on} from the Hub (transient)"
    if status is not None:
        return "http", f"HTTP {status}{on}"
    if isinstance(err, OfflineModeIsEnabled):
        return "offline", "HF_HUB_OFFLINE is set: huggingface_hub makes no network call"
    if isinstance(err, (httpx2.ConnectError, ConnectionRefusedError)):
        return "unreachable", f"cannot reach the endpoint ({type(err).__name__})"
    if isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return "network", f"network error ({type(err).__name__})"
    if isinstance(err, RuntimeError) and err.__cause__ is not None:  # LFS upload errors wrap the real cause
        return classify(err.__cause__)
    return "other", type(err).__name__


# While > 0, huggingface_hub's http_backoff tries once. Process-wide, not per thread: the LFS uploads of one
# commit run in huggingface_hub's own worker threads.
_INNER_RETRIES_OFF = [0]
_INNER_RETRIES_LOCK = threading.Lock()


def _single_retry_budget() -> None:
    """Make huggingface_hub's `http_backoff` (LFS batch/upload/verify, commit, pagination) try once whenever
    `with_retries` is calling, so `attempts` is the whole budget: no 4 x 6 = 24 uploads of one file."""
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
            kind, reason = classify(err)
            if kind not in RETRIED_KINDS or attempt == attempts:
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
