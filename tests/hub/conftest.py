"""Fixtures of the hub tests: a local Hub-compatible server and a private copy of a real tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.hub_server import HubServer
from tests.run_fixtures import tiny_run

PUSH_TOKEN = "hf_pushSECRETtoken9876543210zyxwvuts"
REPO = "tester/tiny-dpo"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fresh local Hub; the client is pointed at it whatever was imported before this test."""
    server = HubServer(token=PUSH_TOKEN).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", PUSH_TOKEN)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    from huggingface_hub import constants

    # huggingface_hub reads the environment once, at its first import (maybe by transformers, earlier in
    # the session): set what that import would have derived from the variables above.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    # A download cache of this test's own: every test's server names its repo tester/tiny-dpo, and the shared
    # cache would hold an earlier server's refs/main (a commit this server never made: "Invalid rev id").
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    yield server
    server.stop()


@pytest.fixture
def run_dir(tiny_model_dir, tmp_path, tmp_path_factory) -> Path:
    """A private copy of the tiny run (pushing writes README.md into it)."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run(tiny_model_dir, tmp_path_factory), dst)
    return dst


@pytest.fixture
def rewrite_report(run_dir):
    """rewrite_report(change) -> the run's eval_report.json after change(report) edited it in place."""

    def rewrite(change) -> dict:
        path = run_dir / "eval_report.json"
        report = json.loads(path.read_text())
        change(report)
        path.write_text(json.dumps(report))
        return report

    return rewrite
