"""scripts/demo_rephrased_prompts.py: the held-out questions in wordings the demo never uses."""

import importlib.util
from pathlib import Path

from hf_dpo.pairs.demo_task import (
    CAPITAL_PHRASINGS,
    demo_prompts,
    expected_answer,
    prompt_country,
    question_of,
)

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("rephrased", ROOT / "scripts" / "demo_rephrased_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rephrased_prompts_ask_the_held_out_questions_in_new_words():
    prompts = _script().rephrased_prompts()
    held_out = demo_prompts("test")
    answers = {question_of(p): expected_answer(p) for p in held_out}
    assert len(prompts) == len(held_out) == len(set(prompts))
    # the same questions, each with the held-out answer
    assert {question_of(p) for p in prompts} == set(answers)
    assert all(expected_answer(p) == answers[question_of(p)] for p in prompts)
    # no wording the demo's prompts use
    everything = set(demo_prompts("train")) | set(held_out)
    assert not set(prompts) & everything
    capital_wordings = {p.replace(prompt_country(p), "{country}") for p in prompts if prompt_country(p)}
    assert len(capital_wordings) == 3 and not capital_wordings & set(CAPITAL_PHRASINGS)
    arithmetic_openings = {p.split()[0] for p in prompts if not prompt_country(p)}
    assert not arithmetic_openings & {p.split()[0] for p in everything if not prompt_country(p)}
