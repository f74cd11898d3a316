"""Intermediate checkpoints pushed while training runs (recipe `hub_strategy` other than `end`)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hf_dpo.hub.errors import scrub_token
from hf_dpo.hub.public_files import ADAPTER_FILES
from hf_dpo.hub.push import hf_api, upload
from hf_dpo.hub.retries import classify
from hf_dpo.hub.settings import HubSettings

logger = logging.getLogger(__name__)


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
            # a full fine-tune's checkpoint is the whole model: read into memory here, it could take more than
            # there is; its final model is pushed at the end
            logger.warning(
                "Checkpoint %s has no adapter files (a full fine-tune's checkpoints are not pushed while training; "
                "the final model is); not pushing it.",
                ckpt,
            )
            return
        self._futures.append(self._executor.submit(self._push, state.global_step, files))

    def _push(self, step: int, files: dict[str, bytes]) -> None:
        s = self.settings
        try:
            api = hf_api(s.token, self.endpoint)
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
            kind, reason = classify(err)
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
