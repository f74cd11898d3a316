"""What the card (hf_dpo/hub/card.py) says about a run whose report is unusual: a criterion name with a slash still
gives the Hub's eval-result files, numbers on training prompts are never called held out (metadata and text), and
a plot the run lacks is not linked."""

from __future__ import annotations

import pytest

from tests.hub.conftest import REPO


@pytest.fixture
def overlap(rewrite_report):
    """overlap(judged_prompts, eval_pairs): the report counts that many of its 4 judged prompts and of its 4 eval
    pairs as training prompts."""

    def set_overlap(judged_prompts: int, eval_pairs: int) -> None:
        counts = {
            "judged_prompts": judged_prompts,
            "judged_prompts_of": 4,
            "eval_pairs": eval_pairs,
            "eval_pairs_of": 4,
        }
        rewrite_report(lambda report: report.update(training_overlap=counts))

    return set_overlap


def test_a_criterion_name_with_a_slash_still_gives_pushed_eval_result_files(run_dir, rewrite_report):
    """Before: a judge criterion named 'help/ful: yes' made `.eval_results/help/ful: yes_rate.yaml`, a subfolder the
    push does not send, so the verdict's three numbers were missing from the Hub's eval results."""
    import yaml

    from hf_dpo.hub.push import prepare_payload

    rewrite_report(lambda report: report["verdict"].update(criterion="help/ful: yes"))
    paths, payload = prepare_payload(run_dir, REPO, None)
    results = sorted(p.name for p in (run_dir / ".eval_results").iterdir())
    assert all(p.is_file() for p in (run_dir / ".eval_results").iterdir()), results
    sent = [k for k in payload if k.startswith(".eval_results/")]
    assert len(sent) == len(results) == 7, (sent, results)
    tasks = {yaml.safe_load((run_dir / k).read_text())[0]["dataset"]["task_id"] for k in sent}
    assert "help/ful: yes_rate_difference" in tasks  # the entry keeps the criterion's name


def test_the_card_metadata_does_not_call_numbers_on_training_prompts_held_out(run_dir, overlap):
    """Before: with eval_report.json's training_overlap counting judged prompts and eval pairs that are training
    prompts (its 'Not held out' warning), the card's model-index still named every number 'Held-out ...' on split
    'held-out', claiming more than the report."""
    from huggingface_hub import ModelCard

    from hf_dpo.hub.card import write_card

    overlap(judged_prompts=3, eval_pairs=4)
    results = ModelCard.load(write_card(run_dir, REPO)).data.eval_results
    names = {r.metric_type: r.metric_name for r in results}
    assert {r.dataset_split for r in results} == {"eval (not held out)"}
    assert not any("Held-out" in n for n in names.values()), names
    assert "not held out: 4 of 4 eval pairs are training prompts" in names["accuracy"]
    assert "not held out: 3 of 4 judged prompts are training prompts" in names["win_rate"]
    from hf_dpo.hub.card import eval_result_files

    for text in eval_result_files(run_dir).values():  # the Hub's eval results say it too
        assert "not held out" in text and "held-out split" not in text, text

    overlap(judged_prompts=0, eval_pairs=0)
    results = ModelCard.load(write_card(run_dir, REPO)).data.eval_results
    assert {r.dataset_split for r in results} == {"held-out"}
    assert {r.metric_type: r.metric_name for r in results}["accuracy"] == "Held-out reward accuracy"


def test_a_plot_the_report_names_but_the_run_lacks_is_not_linked_from_the_card(run_dir, caplog):
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


def test_the_card_text_does_not_call_training_prompts_held_out(run_dir, overlap):
    """Before: with training_overlap counting trained-on prompts, the card (and eval_report.md) still said 'Policy
    vs reference on 4 held-out prompts' and 'The held-out set has 4 pairs', beside the report's 'Not held out'."""
    from hf_dpo.hub.card import write_card

    overlap(judged_prompts=3, eval_pairs=4)
    card = write_card(run_dir, REPO).read_text()
    assert "(adapters off) on 4 held-out prompts" not in card and "held-out set" not in card
    assert "4 prompts (3 of them training prompts, not held out)" in card and "The eval set has" in card
