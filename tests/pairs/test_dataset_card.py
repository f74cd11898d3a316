"""hf_dpo/pairs/dataset_card.py: the pairs' dataset card is replaced whole, never left empty by a failed write."""

from __future__ import annotations

import pytest

from hf_dpo.pairs.formats import SamplingError
from tests.run_fixtures import sampling_recipe


def test_a_dataset_card_write_that_fails_leaves_the_previous_card(write_jsonl, tmp_path, monkeypatch):
    """The card was written with DatasetCard.save(), which empties README.md first: a failure (or a kill) midway
    left a README without the hf-dpo mark, and the next `hf-dpo sample` refused it as someone else's card; the
    failure itself was a bare OSError traceback."""
    import errno

    from hf_dpo import files
    from hf_dpo.pairs.dataset_card import write_dataset_card
    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    stats = label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "pairs" / "train.jsonl")
    report = {"splits": {"train": stats | {"resumed": 1, "sampled_now": 0, "seconds": 0.0}}, "notes": []}
    recipe = sampling_recipe(tmp_path, judge="hf_dpo.pairs.demo_task:judge")
    card = write_dataset_card(tmp_path / "pairs", recipe, report)
    before = card.read_bytes()
    assert b"hf-dpo" in before

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(SamplingError, match=r"README\.md: could not write the dataset card \(No space left"):
        write_dataset_card(tmp_path / "pairs", recipe, report | {"notes": ["a new note"]})
    assert card.read_bytes() == before
