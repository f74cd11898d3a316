"""Audit of the push and the card (hub/): inputs the other hub tests do not try. Each test failed before its fix."""

from __future__ import annotations

import os

import pytest

from hf_dpo.hub.errors import PushError
from tests.hub.test_hub import REPO, hub, run_dir  # noqa: F401 - fixtures


@pytest.mark.parametrize("name", ["plots/extra.png", "README.md"])
def test_a_link_to_a_file_outside_the_run_dir_is_refused_before_anything_is_written(run_dir, tmp_path, name):  # noqa: F811
    """Before: a plots/*.png (or any run file) linked to a file outside the run dir was uploaded (its content read
    through the link), and a linked README.md had the card written over the outside file."""
    from hf_dpo.hub.push import prepare_payload

    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"NOT PART OF THE RUN")
    (run_dir / name).unlink(missing_ok=True)
    os.symlink(outside, run_dir / name)
    with pytest.raises(PushError) as err:
        prepare_payload(run_dir, REPO, None)
    assert name in str(err.value) and "outside the run dir" in str(err.value) and err.value.kind == "invalid"
    assert outside.read_bytes() == b"NOT PART OF THE RUN"


@pytest.mark.parametrize(
    "repo_id", ["my repo", "https://huggingface.co/tester/x", "a/b/c", "tester/x--y", "tester/" + "x" * 100]
)
def test_a_repo_id_the_hub_refuses_is_named_before_the_card_is_written(hub, run_dir, repo_id):  # noqa: F811
    """Before: the card (naming the bad id in its usage snippet) was written into the run dir, then the push failed
    with only 'failed: HFValidationError.' and no hint what to change."""
    from hf_dpo.hub.push import push_run

    (run_dir / "README.md").unlink(missing_ok=True)
    with pytest.raises(PushError) as err:
        push_run(run_dir, repo_id, backoff_s=0.01)
    message = str(err.value)
    assert err.value.kind == "invalid" and "--repo-id" in message and "ORG/NAME" in message
    assert not (run_dir / "README.md").exists()
    assert hub.requests == []  # nothing reached the Hub


@pytest.mark.parametrize("damage", ["not json", "old schema"])
def test_a_damaged_report_beside_a_hand_edited_card_is_a_named_error(run_dir, damage):  # noqa: F811
    """Before: with README.md edited by hand (so the card is not rendered), a damaged eval_report.json or one from
    an older schema reached the Hub's eval-results writer and the push died with a bare JSONDecodeError/KeyError."""
    import json

    from hf_dpo.hub.push import prepare_payload

    (run_dir / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    path = run_dir / "eval_report.json"
    if damage == "not json":
        path.write_text("{cut off")
    else:
        report = json.loads(path.read_text())
        del report["verdict"]["policy"]
        path.write_text(json.dumps(report))
    with pytest.raises(PushError) as err:
        prepare_payload(run_dir, REPO, None)
    assert (
        "eval_report.json" in str(err.value)
        and "hf-dpo eval" in str(err.value)
        and err.value.kind == "invalid"
    )
    assert (run_dir / "README.md").read_text().endswith("# My own card\n")


@pytest.mark.parametrize(
    "metadata", ["license: [mit\n", "- a list\n- not a mapping\n", "model-index:\n- name: x\n  results: 3\n"]
)
def test_a_hand_edited_card_whose_metadata_does_not_parse_is_refused(hub, run_dir, metadata):  # noqa: F811
    """Before: a hand-edited README.md is kept as it is, and one whose YAML block does not parse (or is not a model
    card's) was uploaded with the adapter: an invalid card on the Hub, which the real Hub refuses after the upload."""
    from hf_dpo.hub.push import push_run

    card = f"---\n{metadata}---\n# My own card\n"
    (run_dir / "README.md").write_text(card)
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, backoff_s=0.01)
    assert (
        "README.md" in str(err.value) and "edited by hand" in str(err.value) and err.value.kind == "invalid"
    )
    assert (run_dir / "README.md").read_text() == card  # kept, never rewritten
    assert hub.requests == []  # nothing reached the Hub


def test_a_criterion_name_with_a_slash_still_gives_pushed_eval_result_files(run_dir):  # noqa: F811
    """Before: a judge criterion named 'help/ful: yes' made `.eval_results/help/ful: yes_rate.yaml`, a subfolder the
    push does not send, so the verdict's three numbers were missing from the Hub's eval results."""
    import json

    import yaml

    from hf_dpo.hub.push import prepare_payload

    path = run_dir / "eval_report.json"
    report = json.loads(path.read_text())
    report["verdict"]["criterion"] = "help/ful: yes"
    path.write_text(json.dumps(report))
    paths, payload = prepare_payload(run_dir, REPO, None)
    results = sorted(p.name for p in (run_dir / ".eval_results").iterdir())
    assert all(p.is_file() for p in (run_dir / ".eval_results").iterdir()), results
    sent = [k for k in payload if k.startswith(".eval_results/")]
    assert len(sent) == len(results) == 7, (sent, results)
    tasks = {yaml.safe_load((run_dir / k).read_text())[0]["dataset"]["task_id"] for k in sent}
    assert "help/ful: yes_rate_difference" in tasks  # the entry keeps the criterion's name


def test_the_card_metadata_does_not_call_numbers_on_training_prompts_held_out(run_dir):  # noqa: F811
    """Before: with eval_report.json's training_overlap counting judged prompts and eval pairs that are training
    prompts (its 'Not held out' warning), the card's model-index still named every number 'Held-out ...' on split
    'held-out', claiming more than the report."""
    import json

    from huggingface_hub import ModelCard

    from hf_dpo.hub.card import write_card

    path = run_dir / "eval_report.json"
    report = json.loads(path.read_text())
    report["training_overlap"] = {
        "judged_prompts": 3,
        "judged_prompts_of": 4,
        "eval_pairs": 4,
        "eval_pairs_of": 4,
    }
    path.write_text(json.dumps(report))
    results = ModelCard.load(write_card(run_dir, REPO)).data.eval_results
    names = {r.metric_type: r.metric_name for r in results}
    assert {r.dataset_split for r in results} == {"eval (not held out)"}
    assert not any("Held-out" in n for n in names.values()), names
    assert "not held out: 4 of 4 eval pairs are training prompts" in names["accuracy"]
    assert "not held out: 3 of 4 judged prompts are training prompts" in names["win_rate"]
    from hf_dpo.hub.card import eval_result_files

    for text in eval_result_files(run_dir).values():  # the Hub's eval results say it too
        assert "not held out" in text and "held-out split" not in text, text

    report["training_overlap"] = {
        "judged_prompts": 0,
        "judged_prompts_of": 4,
        "eval_pairs": 0,
        "eval_pairs_of": 4,
    }
    path.write_text(json.dumps(report))
    results = ModelCard.load(write_card(run_dir, REPO)).data.eval_results
    assert {r.dataset_split for r in results} == {"held-out"}
    assert {r.metric_type: r.metric_name for r in results}["accuracy"] == "Held-out reward accuracy"


def test_a_plot_the_report_names_but_the_run_lacks_is_not_linked_from_the_card(run_dir, caplog):  # noqa: F811
    """Before: with plots/heldout_margins.png deleted (eval_report.json still listing it) the card linked it, a
    broken image on the Hub, and the push said nothing about it."""
    import logging

    from hf_dpo.hub.push import prepare_payload

    (run_dir / "plots" / "heldout_margins.png").unlink()
    with caplog.at_level(logging.WARNING):
        _, payload = prepare_payload(run_dir, REPO, None)
    card = (run_dir / "README.md").read_text()
    assert "plots/heldout_margins.png" not in card and "(plots/training_curves.png)" in card
    assert "plots/heldout_margins.png" not in payload
    assert "names plots/heldout_margins.png, which is missing" in caplog.text


def test_the_card_text_does_not_call_training_prompts_held_out(run_dir):  # noqa: F811
    """Before: with training_overlap counting trained-on prompts, the card (and eval_report.md) still said 'Policy
    vs reference on 4 held-out prompts' and 'The held-out set has 4 pairs', beside the report's 'Not held out'."""
    import json

    from hf_dpo.hub.card import write_card

    path = run_dir / "eval_report.json"
    report = json.loads(path.read_text())
    report["training_overlap"] = {
        "judged_prompts": 3,
        "judged_prompts_of": 4,
        "eval_pairs": 4,
        "eval_pairs_of": 4,
    }
    path.write_text(json.dumps(report))
    card = write_card(run_dir, REPO).read_text()
    assert "(adapters off) on 4 held-out prompts" not in card and "held-out set" not in card
    assert "4 prompts (3 of them training prompts, not held out)" in card and "The eval set has" in card


def test_private_push_to_an_existing_public_repo_is_refused_not_published(hub, run_dir):  # noqa: F811
    """Before: create_repo(exist_ok=True) left an existing public repo public, so `hf-dpo push --private` to it
    published the adapter, card and report to everyone, silently."""
    from huggingface_hub import HfApi

    from hf_dpo.hub.push import push_run

    HfApi().create_repo(REPO, private=False)
    with pytest.raises(PushError) as err:
        push_run(run_dir, REPO, private=True, backoff_s=0.01)
    assert err.value.kind == "invalid" and "--private" in str(err.value) and "public" in str(err.value)
    assert not hub.requests_to("/commit/", "POST")  # nothing was committed
    assert push_run(run_dir, "tester/tiny-dpo-private", private=True, backoff_s=0.01)  # a new repo: private
    assert HfApi().repo_info("tester/tiny-dpo-private").private


def test_a_hub_token_left_in_recipe_yaml_is_not_pushed(hub, run_dir):  # noqa: F811
    """Before: a recipe.yaml carrying hub_token (hand-edited, or an older run) whose token is not the one pushing
    went to the Hub as it was: only the card's copy of the recipe dropped it."""
    from pathlib import Path

    from huggingface_hub import hf_hub_download

    from hf_dpo.hub.push import push_run

    other = "hf_otherSECRETabcdefghijklmnop0123"
    with open(run_dir / "recipe.yaml", "a") as f:
        f.write(f"\nhub_token: {other}\n")
    push_run(run_dir, REPO, backoff_s=0.01)
    pushed = Path(hf_hub_download(REPO, "recipe.yaml")).read_text()
    assert other not in pushed and "# hub_token: (removed)" in pushed
    assert other not in Path(hf_hub_download(REPO, "README.md")).read_text()
    assert other in (run_dir / "recipe.yaml").read_text()  # the local file is the user's: left as it is


def test_sample_answers_with_html_like_text_are_shown_not_swallowed():
    """Before: a sample prompt or answer holding '<!--' (or '<think>') went into the card's and eval_report.md's
    table as raw HTML: the Hub hid it, and an unclosed '<!--' hid the rest of the card, warnings included."""
    from hf_dpo.report.markdown import samples_table

    sample = {
        "prompt": "Explain <!-- in HTML",
        "policy": "<think>hmm</think> A comment",
        "reference": "a & b",
    }
    table = samples_table(
        {"behaviour": {"samples": [{**sample, "policy_score": 1.0, "reference_score": 0.0}]}}
    )
    assert "<!--" not in table and "<think>" not in table
    assert (
        "&lt;!-- in HTML" in table and "&lt;think>hmm&lt;/think> A comment" in table and "a &amp; b" in table
    )


@pytest.mark.parametrize("name", [".eval_results", ".hf_dpo_card.sha256"])
def test_a_linked_folder_or_record_the_push_writes_is_refused_not_written_through(run_dir, tmp_path, name):  # noqa: F811
    """Before: .eval_results linked to a folder outside the run dir got the push's *.yaml files written into that
    folder; a linked .hf_dpo_card.sha256 had its outside target overwritten."""
    import shutil

    from hf_dpo.hub.push import prepare_payload

    outside = tmp_path / "elsewhere"
    if name == ".eval_results":
        outside.mkdir()
        (outside / "keep.txt").write_text("mine\n")
    else:
        outside.write_text("mine\n")
    shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / name).unlink(missing_ok=True)
    os.symlink(outside, run_dir / name)
    with pytest.raises(PushError) as err:
        prepare_payload(run_dir, REPO, None)
    assert name in str(err.value) and "outside the run dir" in str(err.value)
    if name == ".eval_results":
        assert [p.name for p in outside.iterdir()] == ["keep.txt"]  # no .yaml written there
    else:
        assert outside.read_text() == "mine\n"
