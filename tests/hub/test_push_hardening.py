"""Issue 12, the push: a hand-edited card survives, the pushed adapter names the Hub id, no local path and no
token leaves the machine, a damaged run_info.json is named, and there is one retry budget."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from hf_dpo import cli
from tests.hub.conftest import PUSH_TOKEN, REPO
from tests.run_fixtures import TRAIN_TOKEN, write_adapter


def test_a_hand_edited_card_is_never_overwritten_locally_or_on_the_hub(hub, run_dir):
    from hf_dpo.hub.push import push_run

    push_run(run_dir, REPO, backoff_s=0.01)
    generated = (run_dir / "README.md").read_text()
    assert "hf-dpo" in generated
    # A regenerated card (same numbers) is fine: it is still hf_dpo's own.
    push_run(run_dir, REPO, backoff_s=0.01)
    assert (run_dir / "README.md").read_text() == generated
    edited = generated.replace("# ", "# My own words. ", 1) + "\nA paragraph I wrote by hand.\n"
    (run_dir / "README.md").write_text(edited)
    push_run(run_dir, REPO, backoff_s=0.01)
    assert (run_dir / "README.md").read_text() == edited
    on_hub = hub.files(REPO)["README.md"].decode()  # as edited, local paths aside
    assert "My own words." in on_hub and "A paragraph I wrote by hand." in on_hub
    # Deleting it brings a fresh card back.
    (run_dir / "README.md").unlink()
    push_run(run_dir, REPO, backoff_s=0.01)
    assert (run_dir / "README.md").read_text() == generated


def test_peft_placeholder_card_is_replaced(run_dir):
    from hf_dpo.hub.run_card import card_was_edited, refresh_card

    (run_dir / "README.md").write_text(
        "---\nlibrary_name: peft\n---\n# Model Card for Model ID\n\n"
        "<!-- Provide a quick summary of what the model is/does. -->\n\n### Framework versions\n\n- PEFT 0.21.2\n"
    )
    assert not card_was_edited(run_dir)
    refresh_card(run_dir, REPO)
    assert "Provide a quick summary" not in (run_dir / "README.md").read_text()


def _as_builtin_model_run(directory: Path) -> str:
    """Make the run dir look like one of the built-in model: a Hub id in run_info, a cache path in the adapter."""
    cache_path = str(Path(tempfile.gettempdir()) / "hf_dpo_cache" / "models" / "smollm2-135m-instruct")
    info = json.loads((directory / "run_info.json").read_text())
    info.update(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", model_name_or_path="smollm2-135m-instruct")
    (directory / "run_info.json").write_text(json.dumps(info))
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = cache_path
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return cache_path


def test_pushed_adapter_config_names_the_hub_id_not_a_local_path(hub, run_dir):
    from hf_dpo.hub.push import push_run

    cache_path = _as_builtin_model_run(run_dir)
    push_run(run_dir, REPO, backoff_s=0.01)
    pushed = json.loads(hub.files(REPO)["adapter_config.json"])
    assert pushed["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert pushed["r"] == json.loads((run_dir / "adapter_config.json").read_text())["r"]
    assert cache_path in (run_dir / "adapter_config.json").read_text()  # the local file is left as it was


def _local_markers(directory: Path, tiny_model_dir: str) -> list[str]:
    info = json.loads((directory / "run_info.json").read_text())
    markers = {
        str(directory.resolve()),
        str(Path(tiny_model_dir).resolve()),
        str(Path(info["dataset"]).resolve()) if str(info.get("dataset", "")).startswith("/") else None,
        str(Path.home()) + "/",
        tempfile.gettempdir().rstrip("/") + "/",
        os.getcwd() + "/",
    }
    return sorted(m for m in markers if m and m != "/")


def test_end_to_end_pushed_files_hold_no_local_path_and_no_token(hub, run_dir, tiny_model_dir):
    """A real run (local model and data under the temp dir, trained with --hub_token) pushed by the CLI."""
    rc = cli.main(["push", str(run_dir), "--repo-id", REPO])
    assert rc == 0
    pushed = hub.files(REPO)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "recipe.yaml"} <= set(pushed)
    markers = _local_markers(run_dir, tiny_model_dir)
    for name, data in pushed.items():
        for marker in markers:
            assert marker.encode() not in data, f"{name} holds the local path {marker}"
        for token in (PUSH_TOKEN, TRAIN_TOKEN):
            assert token.encode() not in data, f"{name} holds a token"
    config = json.loads(pushed["adapter_config.json"])
    assert config["base_model_name_or_path"] == Path(tiny_model_dir).name  # no Hub id: the directory's name
    # Files without local paths go byte for byte.
    assert pushed["adapter_model.safetensors"] == (run_dir / "adapter_model.safetensors").read_bytes()
    assert pushed["tokenizer.json"] == (run_dir / "tokenizer.json").read_bytes()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b"{}", "has no 'base_model'"),
        (b'{"base_model": 5}', "has no 'base_model'"),
        (b'{"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "lora": "oops", "quantization": [1]}', None),
    ],
)
def test_push_with_a_damaged_run_info_is_a_named_error(hub, run_dir, capsys, content, expected):
    (run_dir / "run_info.json").write_bytes(content)
    rc = cli.main(["push", str(run_dir), "--repo-id", REPO])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if expected is None:  # odd types in optional keys: either pushed or a named error
        assert rc == 0 or (rc == 2 and "error:" in err)
        return
    assert rc == 2 and "error:" in err and "run_info.json" in err and expected in err
    assert not hub.requests_to(r"/commit/main$", "POST")


def test_push_of_a_missing_run_info_is_named(hub, run_dir, capsys):
    (run_dir / "run_info.json").unlink()
    rc = cli.main(["push", str(run_dir), "--repo-id", REPO])
    err = capsys.readouterr().err
    assert rc == 2 and "run_info.json is missing" in err


def test_one_retry_budget_no_retries_nested_inside_huggingface_hub(hub, run_dir):
    from hf_dpo.hub.push import PushError, push_run

    hub.fail("PUT", r"/lfs/[0-9a-f]{64}$", [503] * 200)  # every LFS upload answers 503
    start = time.monotonic()
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, attempts=3, backoff_s=0.01)
    assert time.monotonic() - start < 30
    assert err.value.kind == "server"
    puts = hub.requests_to(r"/lfs/[0-9a-f]{64}$", "PUT")
    per_file: dict[str, int] = {}
    for request in puts:
        path = request.path if hasattr(request, "path") else request[1]
        per_file[path] = per_file.get(path, 0) + 1
    assert per_file and max(per_file.values()) <= 3, per_file  # was 3 x 6 = 18 for each file


def test_a_restarted_push_after_a_failure_sends_the_same_files(hub, run_dir):
    """Push killed half-way (the commit fails after the uploads): rerunning the printed command finishes it."""
    from hf_dpo.hub.push import PushError, push_run

    hub.fail("POST", r"/commit/main$", ["reset"] * 2)
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, attempts=2, backoff_s=0.01)
    assert "hf-dpo push" in err.value.retry_command
    push_run(run_dir, REPO, attempts=2, backoff_s=0.01)
    pushed = hub.files(REPO)
    assert pushed["adapter_model.safetensors"] == (run_dir / "adapter_model.safetensors").read_bytes()


def test_saving_the_adapter_keeps_a_hand_edited_card_and_drops_peft_changes_to_ours(tmp_path, monkeypatch):
    """PEFT's save_pretrained updates README.md (metadata with a local base path) or writes its placeholder."""
    from hf_dpo.hub.run_card import CARD_RECORD, _sha256, card_kept

    monkeypatch.delenv("RANK", raising=False)

    def peft_save(directory: Path) -> None:
        readme = directory / "README.md"
        old = readme.read_text() if readme.exists() else "# Model Card for Model ID\n"
        readme.write_text("---\nbase_model: /local/cache/model\nlibrary_name: peft\n---\n" + old)

    # A card the user wrote: restored byte for byte.
    (tmp_path / "README.md").write_text("# My adapter\n\nWritten by hand.\n")
    with card_kept(tmp_path):
        peft_save(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# My adapter\n\nWritten by hand.\n"
    # hf_dpo's own card (its hash recorded): PEFT's version is dropped, to be rewritten by refresh_card.
    ours = "---\nlibrary_name: peft\n---\n# tiny-dpo\n"
    (tmp_path / "README.md").write_text(ours)
    (tmp_path / CARD_RECORD).write_text(_sha256(ours.encode()))
    with card_kept(tmp_path):
        peft_save(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_eval_generations_go_only_with_the_report_that_names_them(tmp_path, caplog):
    """Before: any eval_generations.jsonl in the run dir was pushed, also beside a report that judged nothing
    (no judge) and does not name it, and push warned 'has no eval_generations.jsonl: pushing without the
    report' for every such report."""
    from hf_dpo.hub.push import prepare_payload

    run = write_adapter(tmp_path / "run", "tiny")
    (run / "run_info.json").write_text(json.dumps({"base_model": "tiny", "beta": 0.1}))
    (run / "eval_report.md").write_text("# Report\n")
    (run / "evaluate_results.json").write_text("{}")
    (run / "eval_generations.jsonl").write_text('{"prompt": "an earlier report\'s"}\n')

    def pushed(generations_file) -> set[str]:
        report = {"preference": None, "behaviour": None, "generations_file": generations_file}
        (run / "eval_report.json").write_text(json.dumps(report))
        caplog.clear()
        with caplog.at_level("WARNING", logger="hf_dpo.hub.push"):
            _, payload = prepare_payload(run, REPO, None)
        return set(payload)

    assert "eval_generations.jsonl" not in pushed(None)  # the report judged nothing: the file is not its own
    assert "eval_generations.jsonl" not in caplog.text  # and its absence from the push is no warning
    assert "eval_generations.jsonl" in pushed("eval_generations.jsonl")
    (run / "eval_generations.jsonl").unlink()
    assert "eval_generations.jsonl" not in pushed("eval_generations.jsonl")
    assert "eval_report.json names eval_generations.jsonl, which is missing" in caplog.text


@pytest.mark.parametrize("given", [None, ""])
def test_a_push_without_a_token_says_so_before_any_network_call(hub, run_dir, monkeypatch, capsys, given):
    # It went to the network and came back with "HTTP 401" (or, with nothing at the endpoint, a network error
    # after the whole retry budget, ~22 s), never saying that no token had been found.
    from huggingface_hub import constants

    from hf_dpo.hub.push import PushError, push_run

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(run_dir / "no-token-here"))
    with pytest.raises(PushError, match=r"^no Hub token: .*Set HF_TOKEN \(or give --token") as err:
        push_run(run_dir, REPO, token=given)
    assert err.value.kind == "auth" and hub.requests == []
    assert cli.main(["push", str(run_dir), "--repo-id", REPO]) == 2
    assert capsys.readouterr().err.startswith("error: no Hub token") and hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a token, but huggingface_hub would send nothing
    with pytest.raises(PushError, match="HF_HUB_OFFLINE is set"):
        push_run(run_dir, REPO, token=PUSH_TOKEN)
    assert hub.requests == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing listens there


def test_an_endpoint_that_refuses_the_connection_is_named_at_once_not_retried(run_dir, hub, caplog):
    # Each refused connection was retried (2 + 4 + 8 s of backoff) before "network error (ConnectError)".
    from hf_dpo.hub.push import PushError, push_run

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with caplog.at_level("WARNING"), pytest.raises(PushError) as err:
        push_run(run_dir, REPO, endpoint=endpoint, backoff_s=5.0)
    assert time.monotonic() - start < 5.0 and "retry" not in caplog.text  # one try, no backoff
    message = str(err.value)
    assert err.value.kind == "unreachable" and "cannot reach the endpoint" in message
    assert f"Nothing answers at {endpoint}: check HF_ENDPOINT" in message and "hf-dpo push" in message


@pytest.mark.parametrize(
    ("method", "route", "status", "kind", "said"),
    [
        ("POST", "/api/repos/create", 404, "not_found", "HTTP 404 on POST /api/repos/create: not found"),
        ("POST", "/api/repos/create", 400, "http", "HTTP 400 on POST /api/repos/create"),
        ("POST", "/api/models/tester/tiny-dpo/preupload/main", 400, "http", "HTTP 400 on POST /api/models/"),
        ("POST", "/api/models/tester/tiny-dpo/commit/main", 413, "http", "HTTP 413 on POST /api/models/"),
        (
            "POST",
            "/api/models/tester/tiny-dpo/commit/main",
            404,
            "not_found",
            "HTTP 404 on POST /api/models/",
        ),
    ],
)
def test_an_http_error_is_reported_as_its_status_and_route_and_not_retried(
    hub,
    run_dir,
    method,
    route,
    status,
    kind,
    said,
):
    from hf_dpo.hub.push import PushError, push_run

    hub.fail(method, re.escape(route) + "$", [status, status, status, status])
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, backoff_s=0.01)
    message = str(err.value)
    assert err.value.kind == kind and said in message, message
    assert "network error" not in message and "Could not reach" not in message
    assert len(hub.requests_to(re.escape(route) + "$", method)) == 1  # not retried


def test_an_endpoint_without_the_xet_route_is_named_with_the_switch_that_avoids_it(hub, run_dir, monkeypatch):
    # hf_xet asks the endpoint for a write token; the local server has no such route and answers 404, which hf_xet
    # raises as a ConnectionError: "network error (ConnectionError). Could not reach ...", retried three times.
    from huggingface_hub import constants

    from hf_dpo.hub.push import PushError, push_run

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.delenv("HF_HUB_DISABLE_XET")
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, backoff_s=0.01)
    message = str(err.value)
    assert (
        err.value.kind == "not_found"
        and "HTTP 404 on /api/models/tester/tiny-dpo/xet-write-token/main" in message
    )
    assert "set HF_HUB_DISABLE_XET=1" in message and "Could not reach" not in message
    assert len(hub.requests_to(r"/xet-write-token/")) == 1


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--revision", ""], r"--revision \(hub_revision in a recipe\) is empty"),
        (["--revision", "my branch"], r"'my branch' is no branch name git accepts"),
        (["--token", PUSH_TOKEN + "\n"], r"the Hub token holds whitespace"),
    ],
)
def test_a_push_the_hub_would_refuse_for_its_branch_or_token_is_named_before_any_request(
    hub, run_dir, capsys, args, problem
):
    assert cli.main(["push", str(run_dir), "--repo-id", REPO, *args]) == 2
    err = capsys.readouterr().err
    assert re.search(problem, err) and PUSH_TOKEN not in err and hub.requests == []
