"""What the push (hf_dpo/hub/push.py) sends and refuses: links out of the run dir (files, folders, the records the
push writes), repo ids the Hub refuses, a damaged report or unparsable metadata beside a hand-edited card, a
private push to a public repo, a hub token left in recipe.yaml. Each refusal is a PushError before anything
reaches the Hub."""

from __future__ import annotations

import os

import pytest

from hf_dpo.hub.errors import PushError
from tests.hub.conftest import REPO


@pytest.mark.parametrize("name", ["plots/extra.png", "README.md"])
def test_a_link_to_a_file_outside_the_run_dir_is_refused_before_anything_is_written(run_dir, tmp_path, name):
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
def test_a_repo_id_the_hub_refuses_is_named_before_the_card_is_written(hub, run_dir, repo_id):
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
def test_a_damaged_report_beside_a_hand_edited_card_is_a_named_error(run_dir, rewrite_report, damage):
    """Before: with README.md edited by hand (so the card is not rendered), a damaged eval_report.json or one from
    an older schema reached the Hub's eval-results writer and the push died with a bare JSONDecodeError/KeyError."""
    from hf_dpo.hub.push import prepare_payload

    (run_dir / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    if damage == "not json":
        (run_dir / "eval_report.json").write_text("{cut off")
    else:
        rewrite_report(lambda report: report["verdict"].pop("policy"))
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
def test_a_hand_edited_card_whose_metadata_does_not_parse_is_refused(hub, run_dir, metadata):
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


def test_private_push_to_an_existing_public_repo_is_refused_not_published(hub, run_dir):
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


def test_a_hub_token_left_in_recipe_yaml_is_not_pushed(hub, run_dir):
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


@pytest.mark.parametrize("name", [".eval_results", ".hf_dpo_card.sha256"])
def test_a_linked_folder_or_record_the_push_writes_is_refused_not_written_through(run_dir, tmp_path, name):
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
