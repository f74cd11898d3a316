"""What a failed push says: `PushError` (why, and the command that retries it), and the token scrubbed from any
text that could reach an error message or a log line."""

from __future__ import annotations

from hf_dpo.errors import HfDpoError


class PushError(HfDpoError, RuntimeError):
    """A push failed; `kind` is auth | not_found | network | server | invalid, `retry_command` retries it."""

    def __init__(self, message: str, kind: str, retry_command: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_command = retry_command


def scrub_token(text: str, token: str | None) -> str:
    """`text` with every occurrence of `token` replaced by ***."""
    return text.replace(token, "***") if token else text
