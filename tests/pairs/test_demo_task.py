"""The demo task: prompt generation, the split, and the rule judge on hand-written completions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_dpo.pairs.demo_task import (
    CAPITAL_PHRASINGS,
    CAPITALS,
    HELD_OUT_PHRASINGS,
    demo_prompts,
    expected_answer,
    is_correct,
    judge,
    parse_numbers,
    prompt_country,
    question_of,
    write_prompt_files,
)

REPO = Path(__file__).resolve().parents[2]


def test_splits_are_deterministic_disjoint_and_sized():
    train, test = demo_prompts("train"), demo_prompts("test")
    assert train == demo_prompts("train") and test == demo_prompts("test")
    assert not set(train) & set(test)
    assert len(train) >= 1400 and len(test) >= 140
    assert len(set(train)) == len(train)
    with pytest.raises(ValueError, match="split"):
        demo_prompts("validation")


def test_split_keeps_all_phrasings_of_a_country_together():
    test = demo_prompts("test")
    held_out = {prompt_country(p) for p in test} - {None}
    assert len(held_out) >= 40, "enough held-out countries for the report's per-question counts"
    for country in held_out:
        in_train = [p for p in demo_prompts("train") if prompt_country(p) == country]
        assert not in_train, f"{country} leaks into train: {in_train}"
        asked = [p for p in test if prompt_country(p) == country]
        assert len(asked) == HELD_OUT_PHRASINGS, asked
    # every phrasing is asked of some held-out countries
    assert {p.replace(prompt_country(p), "{country}") for p in test if prompt_country(p)} == set(
        CAPITAL_PHRASINGS
    )


def test_committed_prompt_files_match_the_code(tmp_path):
    for path in write_prompt_files(tmp_path):
        committed = REPO / "recipes" / "data" / path.name
        assert committed.read_text() == path.read_text(), f"regenerate {committed}: make demo-prompts"


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ("What is 23 + 58?", 81),
        ("What is 23 plus 58?", 81),
        ("Compute 90 - 17.", 73),
        ("What is 90 minus 17?", 73),
        ("Subtract 17 from 90.", 73),
        ("Add 4 and 5.", 9),
        ("What is 7 * 8?", 56),
        ("What is 7 times 8?", 56),
        ("Multiply 7 by 8.", 56),
        ("What is 7 multiplied by 8?", 56),
        ("What is the capital of Japan?", ("Tokyo",)),
        ("What city is South Korea's capital?", ("Seoul",)),
        ("Name the capital city of Bolivia.", ("Sucre", "La Paz")),
    ],
)
def test_expected_answer(prompt, answer):
    assert expected_answer(prompt) == answer


def test_every_demo_prompt_has_an_answer():
    for split in ("train", "test"):
        for prompt in demo_prompts(split):
            expected_answer(prompt)


def test_parse_numbers_handles_commas_and_signs():
    assert parse_numbers("It is 1,234 or -5, not 12.") == [1234, -5, 12]
    assert parse_numbers("x1 and 3,000,000") == [3000000]


@pytest.mark.parametrize(
    "prompt, completion, correct_concise",
    [
        # correct and short
        ("What is 23 + 58?", "81", (1.0, 1.0)),
        ("What is 23 + 58?", "23 + 58 = 81.", (1.0, 1.0)),
        ("What is 23 + 58?", "The answer is 81.", (1.0, 1.0)),
        ("What is 999 + 1?", "It is 1,000.", (1.0, 1.0)),
        ("What is the capital of Japan?", "The capital of Japan is Tokyo.", (1.0, 1.0)),
        ("What is the capital of Japan?", "tokyo", (1.0, 1.0)),
        ("What is the capital of Colombia?", "Bogotá.", (1.0, 1.0)),
        ("What is the capital of Ukraine?", "Kiev", (1.0, 1.0)),
        # wrong but short
        ("What is 23 + 58?", "82", (0.0, 1.0)),
        ("What is 23 + 58?", "81 or maybe 82", (0.0, 1.0)),
        ("What is the capital of Japan?", "Kyoto is the capital.", (0.0, 1.0)),
        ("What is the capital of Japan?", "Tokyoite", (0.0, 1.0)),
        # a wrong name given as "<X> is the capital of <country>", the right one mentioned elsewhere
        (
            "What is the capital of Singapore?",
            "SingSat is the capital of Singapore, also Singapore.",
            (0.0, 1.0),
        ),
        ("What is Singapore's capital city?", "Santai is Singapore's capital city.", (0.0, 1.0)),
        ("What is the capital of Spain?", "Barcelona is the capital of Spain, not Madrid.", (0.0, 1.0)),
        # ... and the right one given that way, or after a pronoun
        ("What is the capital of Mexico?", "Mexico City is the capital of Mexico.", (1.0, 1.0)),
        ("What is the capital of Singapore?", "Singapore is the capital city of Singapore.", (1.0, 1.0)),
        ("What is the capital of Spain?", "Madrid. It is the capital of Spain.", (1.0, 1.0)),
        # correct but long: correct beats concise
        (
            "What is 6 times 7?",
            "Well, let us think about this carefully: six groups of seven things make 42 things in total.",
            (1.0, 0.0),
        ),
        # wrong and long; empty
        (
            "What is 6 times 7?",
            "Let me count the groups of seven one by one: seven, fourteen, twenty-one and so on.",
            (0.0, 0.0),
        ),
        ("What is 6 times 7?", "", (0.0, 0.0)),
    ],
)
def test_judge_on_hand_written_completions(prompt, completion, correct_concise):
    """Two criteria, correct first (the declared order): a concise wrong answer never outranks a correct one."""
    assert judge.criteria == ("correct", "concise")
    assert judge(prompt, completion) == dict(zip(judge.criteria, correct_concise))


def test_judge_rejects_prompts_it_cannot_answer():
    with pytest.raises(ValueError, match="not a demo-task prompt"):
        judge("Write a poem about the sea.", "Waves.")


@pytest.mark.parametrize(
    "prompt, completion, correct",
    [
        # A capital that bears the country's name: naming the country is not answering.
        ("Which city is the capital of Singapore?", "The capital of Singapore is Jakarta.", False),
        ("Which city is the capital of Singapore?", "Naad Lim, Singapore's capital is Tanjim Kampus.", False),
        (
            "What city is Singapore's capital?",
            "Sinan is the capital of Indonesia. Singapore is a city.",
            False,
        ),
        ("Which city is the capital of Singapore?", "Singapore.", True),
        ("Which city is the capital of Singapore?", "The capital of Singapore is Singapore.", True),
        ("What is the capital of Luxembourg?", "The capital of Luxembourg is Luxembourg (Luxembourg).", True),
        ("What is the capital of Luxembourg?", "The capital of Luxembourg is Lille.", False),
        ("What is the capital of Mexico?", "The capital of Mexico is Mexico City.", True),
        ("What is the capital of Mexico?", "The capital of Mexico is Guadalajara.", False),
        # A competing answer: another country's capital, or the answer given as another country's capital.
        (
            "What city is North Korea's capital?",
            "North Korea's capital city is Pyongyang, also known as Seoul.",
            False,
        ),
        ("What is the capital of France?", "Paris is the capital of Germany.", False),
        ("What is the capital of France?", "The capital of France is Paris, the City of Light.", True),
        ("What is the capital of Bolivia?", "Sucre, though the government sits in La Paz.", True),
        # The slot "the capital of <country> is ___" holds the answer; a right name later does not undo it.
        ("What is the capital of Ghana?", "The capital of Ghana is Kumasi, also known as Accra.", False),
        ("What is the capital of Ghana?", "Ghana's capital city is Kumasi, not Accra.", False),
        ("What is the capital of Japan?", "The capital of Japan is indeed Tokyo.", True),
        ("What is the capital of France?", "Paris. The capital is a beautiful city.", True),
    ],
)
def test_a_capital_is_the_answer_only_when_it_is_stated_as_one(prompt, completion, correct):
    assert is_correct(prompt, completion) is correct


def test_is_correct_repeats_of_question_numbers_are_not_competing_answers():
    assert is_correct("What is 12 + 30?", "12 + 30 = 42")
    assert not is_correct("What is 12 + 30?", "12 + 30 = 43")


def test_every_phrasing_of_every_country_finds_its_country_and_judges_its_capital():
    """Countries whose names nest (Niger / Nigeria, Guinea / Papua New Guinea, Sudan / South Sudan) stay apart."""
    from hf_dpo.pairs.demo_task import CAPITAL_PHRASINGS, prompt_country

    for country, capitals in CAPITALS.items():
        for phrasing in CAPITAL_PHRASINGS:
            prompt = phrasing.format(country=country)
            assert prompt_country(prompt) == country, prompt
            assert is_correct(prompt, f"The capital of {country} is {capitals[0]}."), prompt
            assert is_correct(prompt, capitals[-1]), prompt
    nested = [
        ("Niger", "Nigeria"),
        ("Guinea", "Papua New Guinea"),
        ("Guinea", "Equatorial Guinea"),
        ("Sudan", "South Sudan"),
    ]
    countries = sorted(CAPITALS)
    # each country against its neighbour in alphabetical order (every country once) and the nested names both ways
    for country, other in [
        *zip(countries, countries[1:] + countries[:1]),
        *nested,
        *[(b, a) for a, b in nested],
    ]:
        prompt = CAPITAL_PHRASINGS[0].format(country=country)
        assert not is_correct(prompt, f"The capital of {country} is {CAPITALS[other][0]}."), (prompt, other)


@pytest.mark.parametrize(
    "phrasings",
    [
        ("Subtract 15 from 55.", "What is 55 minus 15?", "Compute 55 - 15."),
        ("Add 4 and 5.", "What is 4 plus 5?", "What is 4 + 5?"),
        ("Multiply 7 by 8.", "What is 7 multiplied by 8?", "What is 7 times 8?"),
        ("What is the capital of Chile?", "What city is Chile's capital?", "Name the capital city of Chile."),
    ],
)
def test_question_of_is_the_same_for_every_phrasing_of_an_item(phrasings):
    """The report resamples a question's phrasings together: each phrasing must map to the same question."""
    assert len({question_of(p) for p in phrasings}) == 1, [question_of(p) for p in phrasings]


def test_question_of_tells_items_apart():
    assert question_of("Subtract 15 from 55.") != question_of("Subtract 55 from 15.")
    assert question_of("What is 4 + 5?") != question_of("What is 4 * 5?")
    with pytest.raises(ValueError, match="not a demo-task prompt"):
        question_of("Write a poem.")
