"""hf_dpo/report/markdown.py: text from the model is shown as text in the card's and eval_report.md's tables, never
read as HTML."""

from __future__ import annotations


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
