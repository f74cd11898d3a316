"""hf_dpo.hub.push against a local Hub-compatible server: the real huggingface_hub client, no network.

The run dir is a real tiny run (tests/run_fixtures.py): trained 3 steps with `hf-dpo train`'s pipeline,
evaluated, then pushed. Checks: the bytes that arrive, the card's metadata round trip, 401 / 503 /
connection-reset handling, the retry command, and that the token lands nowhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.hub.conftest import PUSH_TOKEN, REPO
from tests.run_fixtures import TRAIN_TOKEN


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


EXPECTED = {
    "adapter_model.safetensors",
    "adapter_config.json",
    "README.md",
    "eval_report.json",
    "eval_report.md",
    "eval_generations.jsonl",
    "recipe.yaml",
    "tokenizer.json",
    "tokenizer_config.json",
    "plots/training_curves.png",
    "plots/eval_summary.png",
    "plots/heldout_margins.png",
    ".eval_results/accuracy.yaml",
    ".eval_results/reward_margin.yaml",
    ".eval_results/win_rate.yaml",
    ".eval_results/correct_rate.yaml",
    ".eval_results/correct_rate_reference.yaml",
    ".eval_results/correct_rate_difference.yaml",
    ".eval_results/length_controlled_win_rate.yaml",
}


def test_push_sends_one_commit_with_exactly_the_run_files(hub, run_dir):
    import json

    from huggingface_hub import HfApi, hf_hub_download

    from hf_dpo.hub.public_files import public_files
    from hf_dpo.hub.push import push_run

    url = push_run(run_dir, REPO, backoff_s=0.01)

    pushed = hub.files(REPO)
    assert EXPECTED <= set(pushed), f"missing: {EXPECTED - set(pushed)}"
    assert not [
        p for p in pushed if p.startswith("checkpoint") or p.endswith((".bin", ".pt")) or "trainer_state" in p
    ]
    public = {k: v if isinstance(v, bytes) else v.read_bytes() for k, v in public_files(run_dir).items()}
    for path, data in pushed.items():
        assert data == public[path], path  # byte for byte what push sends: the run's files, local paths out
    assert public["adapter_model.safetensors"] == (run_dir / "adapter_model.safetensors").read_bytes()
    # Every judged answer goes byte-exact with the report, one row per prompt it counted.
    generations = (run_dir / "eval_generations.jsonl").read_bytes()
    assert pushed["eval_generations.jsonl"] == generations
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert len(generations.decode().splitlines()) == report["behaviour"]["n"] == 4
    head = hub.repo(REPO).head("main")
    assert {"adapter_model.safetensors", "plots/training_curves.png"} <= head.lfs  # binaries went through LFS
    assert url == f"{hub.url}/{REPO}/commit/{head.oid}"
    assert len(hub.requests_to(r"/commit/main$", "POST")) == 1
    assert hub.requests_to(r"/lfs/[0-9a-f]{64}$", "PUT") and hub.requests_to(r"/verify$", "POST")
    assert hub.requests_to(r"/api/validate-yaml$", "POST")  # the card's YAML was validated before upload

    # What the real client reads back: listing, info, and a download of the card.
    api = HfApi(endpoint=hub.url)
    assert set(api.list_repo_files(REPO)) == set(pushed)
    assert {s.rfilename for s in api.model_info(REPO).siblings} == set(pushed)
    readme = hf_hub_download(REPO, "README.md", endpoint=hub.url, cache_dir=str(run_dir.parent / "dl"))
    assert Path(readme).read_bytes() == public["README.md"]


def test_card_metadata_round_trips_and_carries_the_eval_results(hub, run_dir):
    import json

    from huggingface_hub import ModelCard

    from hf_dpo.hub.push import push_run

    info = json.loads((run_dir / "run_info.json").read_text())
    info["base_model"] = "tester/tiny-llama"  # as for a base from the Hub (the tiny one is a local dir)
    (run_dir / "run_info.json").write_text(json.dumps(info))
    push_run(run_dir, REPO, backoff_s=0.01)
    report = json.loads((run_dir / "eval_report.json").read_text())
    for text in ((run_dir / "README.md").read_text(), hub.file(REPO, "README.md").decode()):
        card = ModelCard(text)
        data = card.data
        assert data.base_model == info["base_model"]
        assert data.library_name == "peft" and data.pipeline_tag == "text-generation"
        assert {"trl", "dpo", "lora", "qlora", "hf-dpo", f"base_model:adapter:{info['base_model']}"} <= set(
            data.tags
        )
        assert data.license == "other"  # unknown base: said so, and the body tells the reader to check
        assert data.datasets is None  # a local dataset is not a Hub id: named in the body instead
        results = {r.metric_type: r.metric_value for r in data.eval_results}
        pref = report["preference"]["metrics"]
        assert results["accuracy"] == pytest.approx(pref["reward_accuracy"]["value"], abs=1e-4)
        assert results["reward_margin"] == pytest.approx(pref["rewards/margins"]["value"], abs=1e-4)
        assert results["win_rate"] == pytest.approx(report["behaviour"]["win_rate"]["value"], abs=1e-4)
        # The verdict's numbers head the model-index, and the card's text states the verdict line.
        assert results["correct_rate_difference"] == pytest.approx(
            report["verdict"]["difference"]["value"], abs=1e-4
        )
        assert report["verdict"]["line"] in card.text
        assert data.to_dict()["model-index"][0]["name"] == "tiny-dpo"
        body = card.text
        assert f'PeftModel.from_pretrained(base, "{REPO}")' in body
        assert "(plots/training_curves.png)" in body and "## Limitations" in body
        assert "[eval_generations.jsonl](eval_generations.jsonl)" in body  # the pushed answers, linked
        assert (run_dir / "recipe.yaml").read_text().strip().splitlines()[-1] in body  # the recipe itself
    loaded = ModelCard.load(run_dir / "README.md")
    assert loaded.data.to_dict() == ModelCard(hub.file(REPO, "README.md").decode()).data.to_dict()


def test_card_names_framework_versions_and_cites_dpo(run_dir):
    from importlib.metadata import version

    from huggingface_hub import ModelCard

    from hf_dpo.hub.card import write_card

    text = ModelCard.load(write_card(run_dir, REPO)).text
    versions = text.split("## Framework versions", 1)[1].split("##", 1)[0]
    for package in ("transformers", "peft", "bitsandbytes", "torch", "datasets"):
        assert f"- {package}: {version(package)}" in versions  # recorded in run_info.json at training time
    assert "- hf_dpo: " in versions
    assert "@inproceedings{rafailov2023direct" in text and "Direct Preference Optimization" in text


def test_eval_results_entries_carry_the_model_index_numbers_and_parse_back(hub, run_dir):
    import json

    import yaml
    from huggingface_hub import ModelCard, parse_eval_result_entries

    from hf_dpo.hub.push import push_run

    push_run(run_dir, REPO, backoff_s=0.01)
    model_index = {
        r.metric_type: r.metric_value for r in ModelCard.load(run_dir / "README.md").data.eval_results
    }
    pushed = hub.files(REPO)
    entries = {}
    for path, data in pushed.items():
        if path.startswith(".eval_results/"):
            (entry,) = parse_eval_result_entries(yaml.safe_load(data.decode()))
            entries[entry.task_id] = entry
    assert (
        set(entries)
        == set(model_index)
        == {
            "correct_rate",
            "correct_rate_reference",
            "correct_rate_difference",
            "accuracy",
            "reward_margin",
            "win_rate",
            "length_controlled_win_rate",
        }
    )
    for kind, entry in entries.items():
        assert entry.value == model_index[kind]
        dataset = json.loads((run_dir / "run_info.json").read_text())["dataset"]
        assert (
            entry.dataset_id == Path(dataset).name
        )  # a local dataset: its name, said to be local in the notes
        assert "local" in entry.notes


def test_known_base_gets_its_license_and_hub_dataset_is_listed(run_dir):
    import json

    from hf_dpo.hub.card import render_card

    info = json.loads((run_dir / "run_info.json").read_text())
    info.update(
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        dataset="trl-lib/ultrafeedback_binarized",
        quantization="none",
    )
    (run_dir / "run_info.json").write_text(json.dumps(info))
    data = render_card(run_dir, "me/x").data
    assert data.license == "apache-2.0"
    assert data.datasets == ["trl-lib/ultrafeedback_binarized"]
    assert "qlora" not in data.tags and "base_model:adapter:HuggingFaceTB/SmolLM2-135M-Instruct" in data.tags


def test_local_base_and_unevaluated_run_still_give_a_valid_card(hub, run_dir):
    import json

    from huggingface_hub import ModelCard

    from hf_dpo.hub.push import push_run

    (run_dir / "eval_report.json").unlink()
    push_run(run_dir, REPO, backoff_s=0.01)  # the server rejects a base_model that is not a Hub id
    info = json.loads((run_dir / "run_info.json").read_text())
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.base_model is None and not [t for t in card.data.tags if t.startswith("base_model:")]
    assert card.data.eval_results is None and card.data.library_name == "peft"
    assert f"`{info['base_model']}` (a local model)" in card.text
    assert "not evaluated yet (run `hf-dpo eval RUN_DIR`)" in card.text
    assert "eval_report.json" not in hub.files(REPO)


def test_auth_error_is_clear_not_retried_and_loses_nothing(hub, run_dir, monkeypatch, caplog):
    from hf_dpo.hub.push import PushError, push_run

    wrong = "hf_wrongSECRET000000000000000000000"
    before = _snapshot(run_dir)
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as err:
        push_run(run_dir, REPO, token=wrong, private=True, revision="exp", backoff_s=0.01)
    msg = str(err.value)
    assert err.value.kind == "auth" and "401" in msg and "HF_TOKEN" in msg
    assert f"hf-dpo push {run_dir} --repo-id {REPO} --private --revision exp" in msg
    assert err.value.retry_command in msg
    assert wrong not in msg and wrong not in caplog.text
    assert len(hub.requests_to(r"/api/repos/create$")) == 1  # auth errors are not retried
    after = _snapshot(run_dir)

    # Written locally before any network call: the card, the record of it, and its .eval_results/ entries.
    def kept(files):
        return {k: v for k, v in files.items() if k not in ("README.md", ".hf_dpo_card.sha256")}

    assert {k: v for k, v in kept(before).items() if not k.startswith(".eval_results/")} == {
        k: v for k, v in kept(after).items() if not k.startswith(".eval_results/")
    }
    assert "model-index" in after["README.md"].decode()  # the card was written locally before the push


def test_unknown_repo_is_reported_as_not_found(hub, run_dir, monkeypatch):
    from hf_dpo.hub.push import PushError, push_run

    hub.fail("POST", r"/preupload/", [404])
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, backoff_s=0.01)
    assert err.value.kind == "not_found" and "--repo-id" in str(err.value)


def test_transient_errors_are_retried_with_backoff(hub, run_dir, caplog):
    from hf_dpo.hub.push import push_run

    hub.fail("POST", r"/api/repos/create$", ["reset"])  # connection dropped without an answer
    hub.fail("POST", r"/commit/main$", [503])
    with caplog.at_level(logging.WARNING):
        url = push_run(run_dir, REPO, backoff_s=0.01)
    assert (
        url
        and hub.files(REPO)["adapter_model.safetensors"]
        == (run_dir / "adapter_model.safetensors").read_bytes()
    )
    assert len(hub.requests_to(r"/commit/main$", "POST")) == 2
    assert len(hub.requests_to(r"/api/repos/create$")) == 2
    assert "HTTP 503" in caplog.text and "retry 1/3" in caplog.text


def test_transient_errors_give_up_after_bounded_attempts(hub, run_dir):
    from hf_dpo.hub.push import PushError, push_run

    hub.fail("POST", r"/commit/main$", [503, 503, 503])
    start = time.monotonic()
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, attempts=3, backoff_s=0.01)
    assert time.monotonic() - start < 10
    assert err.value.kind == "server" and "after 3 attempts" in str(err.value)
    assert len(hub.requests_to(r"/commit/main$", "POST")) == 3
    assert "hf-dpo push" in str(err.value)


def test_token_lands_nowhere(hub, run_dir, caplog, capsys):
    from hf_dpo.hub.push import push_run

    with caplog.at_level(logging.DEBUG):
        push_run(run_dir, REPO, private=True, backoff_s=0.01)
    # The training run was given --hub_token TRAIN_TOKEN: no file of the run dir (checkpoints, the pickled
    # training_args.bin, recipe.yaml, the card) holds it; nor does any pushed file hold either token.
    for token in (TRAIN_TOKEN, PUSH_TOKEN):
        for path, data in _snapshot(run_dir).items():
            assert token.encode() not in data, path
        for path, data in hub.files(REPO).items():
            assert token.encode() not in data, path
        for req in hub.requests:  # only ever in the Authorization header, never in a body or a URL
            assert token.encode() not in req.body and token not in req.path
        out = capsys.readouterr()
        assert token not in caplog.text and token not in out.out and token not in out.err
    create = hub.requests_to(r"/api/repos/create$")[0]
    assert create.headers["authorization"] == f"Bearer {PUSH_TOKEN}"
    assert b'"visibility": "private"' in create.body or b'"visibility":"private"' in create.body
    assert hub.repo(REPO).private


def test_refuses_to_push_a_file_holding_the_token(hub, run_dir):
    from hf_dpo.hub.push import PushError, push_run

    (run_dir / "recipe.yaml").write_text(f"hub_token: {PUSH_TOKEN}\n")
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, backoff_s=0.01)
    assert "recipe.yaml" in str(err.value) and PUSH_TOKEN not in str(err.value)
    assert not hub.requests


def test_push_to_a_branch_and_only_from_the_main_process(hub, run_dir, monkeypatch):
    from hf_dpo.hub.push import push_run

    push_run(run_dir, REPO, revision="experiment-1", commit_message="first try", backoff_s=0.01)
    assert "adapter_model.safetensors" in hub.files(REPO, "experiment-1")
    assert hub.files(REPO, "main") == {}
    assert hub.repo(REPO).head("experiment-1").message == "first try"
    n = len(hub.requests)
    monkeypatch.setenv("RANK", "1")
    assert push_run(run_dir, REPO) is None
    assert len(hub.requests) == n


def test_missing_adapter_is_a_clear_error(tmp_path, hub):
    from hf_dpo.hub.push import PushError, push_run

    with pytest.raises(PushError, match="does not exist"):
        push_run(tmp_path / "nope", REPO)


def test_checkpoint_callback_pushes_in_the_background_of_a_real_training(hub, run_dir, tmp_path):
    from hf_dpo.config import load_recipe
    from hf_dpo.hub.checkpoints import HubCheckpointCallback
    from hf_dpo.hub.settings import HubSettings
    from hf_dpo.run import build_trainer

    class Timed(HubCheckpointCallback):
        on_save_seconds: list[float] = []

        def on_save(self, *args, **kwargs):
            start = time.monotonic()
            super().on_save(*args, **kwargs)
            self.on_save_seconds.append(time.monotonic() - start)

    hub.delay("POST", r"/commit/", 1.5)  # a slow Hub: training must not wait for it
    cb = Timed(HubSettings(repo_id=REPO, private=True, token=PUSH_TOKEN), backoff_s=0.01)
    out = tmp_path / "out"
    overrides = ["--output_dir", str(out), "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "1",
                 "--eval_steps", "100", "--logging_steps", "1"]  # fmt: skip
    trainer, _ = build_trainer(load_recipe(run_dir / "recipe.yaml", overrides), callbacks=[cb])
    trainer.train()  # on_train_end waits for the pending pushes

    assert len(cb.on_save_seconds) == 2 and max(cb.on_save_seconds) < 1.0, cb.on_save_seconds
    assert [r["step"] for r in cb.results] == [1, 2] and all("commit_url" in r for r in cb.results)
    files = hub.files(REPO)
    # checkpoint-1 was rotated away (save_total_limit=1) while its upload was pending: nothing was lost.
    assert not (out / "checkpoint-1").exists() and "checkpoints/step-1/adapter_model.safetensors" in files
    assert (
        files["checkpoints/step-2/adapter_model.safetensors"]
        == (out / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    )
    assert not [p for p in files if not p.startswith("checkpoints/step-")]  # adapter files only
    assert not [p for p in files if "optimizer" in p or "rng_state" in p or "scheduler" in p]
    assert hub.repo(REPO).private


def test_checkpoint_callback_logs_failures_without_stopping_training(hub, run_dir, caplog):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hf_dpo.hub.checkpoints import HubCheckpointCallback
    from hf_dpo.hub.settings import HubSettings

    cb = HubCheckpointCallback(HubSettings(repo_id=REPO, token="hf_badSECRET999999999"), backoff_s=0.01)
    args = TrainingArguments(output_dir=str(run_dir), report_to=[])
    state = TrainerState(global_step=3)
    with caplog.at_level(logging.WARNING):
        cb.on_save(args, state, TrainerControl())
        cb.on_train_end(args, state, TrainerControl())
    assert "error" in cb.results[0] and "401" in cb.results[0]["error"]
    assert "hf_badSECRET999999999" not in caplog.text + cb.results[0]["error"]


def test_take_hub_settings_moves_the_token_out_of_training_args(tmp_path):
    from hf_dpo.config import DPOConfig
    from hf_dpo.hub.settings import take_hub_settings

    args = DPOConfig(
        output_dir=str(tmp_path / "r"),
        push_to_hub=True,
        hub_model_id="me/r",
        hub_token=PUSH_TOKEN,
        hub_private_repo=True,
        report_to=[],
    )
    settings = take_hub_settings(args)
    assert settings.token == PUSH_TOKEN and settings.repo_id == "me/r" and settings.private
    assert args.hub_token is None and args.push_to_hub is False  # Trainer will neither save nor use it
    assert PUSH_TOKEN not in repr(settings)
    assert take_hub_settings(DPOConfig(output_dir=str(tmp_path / "r"), report_to=[])) is None


def test_take_hub_settings_reads_plain_training_arguments(tmp_path):
    """transformers' own TrainingArguments carry every hub key take_hub_settings reads; the strategy comes out as
    its name (TrainingArguments holds a HubStrategy enum)."""
    from transformers import TrainingArguments

    from hf_dpo.hub.settings import take_hub_settings

    args = TrainingArguments(
        output_dir=str(tmp_path / "r"),
        push_to_hub=True,
        hub_token=PUSH_TOKEN,
        hub_strategy="end",
        hub_revision="v1",
        report_to=[],
    )
    settings = take_hub_settings(args)
    assert (settings.repo_id, settings.strategy, settings.revision, settings.token) == (
        "r",
        "end",
        "v1",
        PUSH_TOKEN,
    )
    assert args.hub_token is None and args.push_to_hub is False


def test_cli_push(hub, run_dir, capsys, monkeypatch):
    from hf_dpo.cli import main

    assert main(["push", str(run_dir), "--repo-id", REPO, "--commit-message", "from the CLI"]) == 0
    out = capsys.readouterr()
    assert hub.repo(REPO).head("main").message == "from the CLI"
    assert hub.url in out.out and PUSH_TOKEN not in out.out + out.err

    monkeypatch.setenv("HF_TOKEN", "hf_wrongSECRET1111111111")
    assert main(["push", str(run_dir), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert "401" in err and f"hf-dpo push {run_dir} --repo-id {REPO}" in err and "hf_wrongSECRET" not in err


def test_recipe_with_push_to_hub_trains_reports_and_pushes(hub, tiny_model_dir, tmp_path, capsys):
    """`push_to_hub: true` in a recipe: train, evaluate, write the card, push once — token nowhere."""
    from hf_dpo.cli import main
    from hf_dpo.hub.public_files import public_files
    from tests.run_fixtures import write_pairs

    data = tmp_path / "data"
    data.mkdir()
    write_pairs(data)
    out = tmp_path / "pushed-run"
    argv = [
        "train",
        "--model_name_or_path",
        tiny_model_dir,
        "--quantization",
        "none",
        "--dataset_name",
        str(data),
    ]
    argv += [
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--lora_r",
        "4",
    ]
    argv += [
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        "--eval_num_generations",
        "2",
    ]
    argv += ["--judge", "hf_dpo.pairs.demo_task:judge", "--max_new_tokens", "8"]
    argv += ["--push_to_hub", "true", "--hub_model_id", REPO, "--hub_token", PUSH_TOKEN]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Pushed: " in printed and "judged win rate" in printed
    pushed = hub.files(REPO)
    for name in (
        "adapter_model.safetensors",
        "README.md",
        "eval_report.json",
        "eval_report.md",
        "eval_generations.jsonl",
        "recipe.yaml",
    ):
        sent = public_files(out)[name]  # the run's file, absolute local paths out
        assert pushed[name] == (sent if isinstance(sent, bytes) else sent.read_bytes()), name
    assert len(hub.requests_to(r"/commit/main$", "POST")) == 1
    for path in out.rglob("*"):
        if path.is_file():
            assert PUSH_TOKEN.encode() not in path.read_bytes(), path
    assert all(PUSH_TOKEN.encode() not in data for data in pushed.values())


def test_the_hub_server_runs_on_its_own_for_a_trial_push(run_dir, tmp_path):
    """`make hub-server` (python tests/hub_server.py) serves until stopped and prints the push command that
    reaches it; that command, run as printed, pushes the run there and the server logs the commit."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, str(root / "tests" / "hub_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = server.stdout.readline() + server.stdout.readline()
        url = re.search(r"HF_ENDPOINT=(http://127\.0\.0\.1:\d+)", banner).group(1)
        repo = re.search(r"REPO=(\S+)", banner).group(1)
        assert f"Hub-compatible server on {url}" in banner and "make push RUN=runs/demo" in banner
        # the variables of the printed command, as a shell would set them
        printed = dict(re.findall(r"(HF_\w+)=(\S+)", banner))
        assert (
            printed["HF_ENDPOINT"] == url and printed["HF_HUB_DISABLE_XET"] == "1"
        )  # the server speaks no Xet
        env = {**os.environ, **printed, "PYTHONPATH": str(root)}
        env.pop("HF_HUB_OFFLINE", None)
        push = subprocess.run(
            [sys.executable, "-m", "hf_dpo.cli", "push", str(run_dir), "--repo-id", repo],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert push.returncode == 0, push.stderr[-2000:]
        assert f"Pushed {run_dir} to {repo}: {url}/{repo}" in push.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert re.search(rf"POST /api/models/{repo}/commit/main", server.stderr.read())
