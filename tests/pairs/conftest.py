"""Fixtures of the pairs tests: samples files as `hf-dpo sample` writes them."""

from __future__ import annotations

import pytest


def _sample_rows(answers=(("Paris.", "Lyon"), ("Tokyo.", "Kyoto"))) -> list[dict]:
    return [{"index": i, "prompt": f"Question {i}?", "completions": list(a)} for i, a in enumerate(answers)]


@pytest.fixture
def sample_rows():
    """sample_rows(answers=((a, b), ...)) -> samples rows 'Question i?', each pair of answers as completions."""
    return _sample_rows


@pytest.fixture
def write_samples(write_jsonl):
    """write_samples(path, n=3) -> a samples file of n rows 'Question i?', each with the answers a{i} and b{i}."""

    def write(path, n: int = 3):
        rows = [{"index": i, "prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(n)]
        return write_jsonl(path, rows)

    return write
