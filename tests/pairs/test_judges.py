"""Judges: loading from a spec, score checking, and reward models (a tiny random Llama classifier)."""

from __future__ import annotations

import math

import pytest
import torch

from hf_dpo.pairs.judges import CallableJudge, Judge, JudgeError, RewardModelJudge, load_judge
from tests.run_fixtures import tiny_classifier


def length_judge(prompt: str, completion: str) -> float:
    return float(len(completion))


def test_module_function_spec():
    judge = load_judge("hf_dpo.pairs.demo_task:judge")
    assert isinstance(judge, Judge)
    assert judge.name == "hf_dpo.pairs.demo_task:judge"
    assert judge.score(
        ["What is 2 + 3?", "What is 2 + 3?"],
        ["5", "Six, I would say, after thinking about it for a long while, is it."],
    ) == [
        2.0,
        0.0,
    ]


def test_callable_and_judge_objects_pass_through():
    judge = load_judge(length_judge)
    assert judge.score(["p", "p"], ["ab", "abcd"]) == [2.0, 4.0]
    assert load_judge(judge) is judge


@pytest.mark.parametrize(
    "spec, match",
    [
        ("hf_dpo.pairs.demo_task", "neither 'module:function'"),
        ("no_such_module_xyz:judge", "cannot import module"),
        ("hf_dpo.pairs.demo_task:no_such_fn", "has no attribute"),
        ("hf_dpo.pairs.demo_task:CAPITALS", "not callable"),
        ("", "must be"),
    ],
)
def test_bad_specs_are_clear_errors(spec, match):
    with pytest.raises(JudgeError, match=match):
        load_judge(spec)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), True, "1.0", [1.0]])
def test_non_number_scores_name_the_prompt(bad):
    judge = CallableJudge(lambda p, c: bad if p == "second prompt" else 1.0, name="bad-judge")
    with pytest.raises(JudgeError, match=r"prompt 1 \('second prompt'\).*finite float"):
        judge.score(["first prompt", "second prompt"], ["a", "b"])


def test_judge_that_raises_names_prompt_and_completion():
    def crashing(prompt, completion):
        raise KeyError("boom")

    with pytest.raises(JudgeError, match=r"raised KeyError.*prompt 0 \('What is 2 \+ 2\?'\).*'four'"):
        CallableJudge(crashing).score(["What is 2 + 2?"], ["four"])


def test_integers_and_numpy_floats_are_accepted():
    import numpy as np

    judge = CallableJudge(lambda p, c: np.float32(0.5) if c == "a" else 3)
    assert judge.score(["p", "p"], ["a", "b"]) == [0.5, 3.0]


@pytest.fixture(scope="module")
def smol_tokenizer(smollm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_dir)


def test_reward_model_scores_with_chat_template(tmp_path, smol_tokenizer):
    path = tiny_classifier(tmp_path / "rm", smol_tokenizer, num_labels=1)
    judge = load_judge(f"rm:{path}")
    assert isinstance(judge, RewardModelJudge) and judge.name == f"rm:{path}"
    prompts = ["What is 2 + 3?", "What is the capital of France?", "What is 2 + 3?"]
    completions = ["5", "Paris, a city of about two million people.", "5"]
    scores = judge.score(prompts, completions)
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores[0] == pytest.approx(scores[2], abs=1e-5)  # batching/padding does not change a score
    # The score is the classifier's logit on the chat-formatted exchange, scored alone.
    text = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": prompts[1]}, {"role": "assistant", "content": completions[1]}],
        tokenize=False,
    )
    ids = smol_tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        alone = judge.model(**ids).logits[0, 0].item()
    assert scores[1] == pytest.approx(alone, abs=1e-4)


def test_reward_model_with_two_outputs_is_refused(tmp_path, smol_tokenizer):
    path = tiny_classifier(tmp_path / "rm2", smol_tokenizer, num_labels=2)
    with pytest.raises(JudgeError, match="has 2 outputs.*exactly one"):
        load_judge(f"rm:{path}")


def test_causal_lm_is_not_a_reward_model(tiny_model_dir):
    with pytest.raises(JudgeError, match="not a reward model.*LlamaForCausalLM"):
        load_judge(f"rm:{tiny_model_dir}")


def test_missing_reward_model_path(tmp_path):
    with pytest.raises(JudgeError, match="Could not load reward model"):
        load_judge(f"rm:{tmp_path / 'nothing-here'}")


def test_a_judge_with_criteria_gives_tuples_in_its_declared_order():
    def graded(prompt, completion):
        return {"polite": float("please" in completion), "correct": float("5" in completion)}

    graded.criteria = ("correct", "polite")  # declared order of importance, not the dict's
    judge = load_judge(graded)
    scores = judge.criteria_scores(["What is 2 + 3?"] * 2, ["5", "6, please"])
    assert judge.criteria == ("correct", "polite")
    assert scores == [(1.0, 0.0), (0.0, 1.0)]
    assert max(scores) == (1.0, 0.0)  # lexicographic: correctness decides before politeness
    assert judge.score(["p"], ["5, please"]) == [2.0]  # one number per answer: the sum


def test_criteria_without_a_declaration_follow_the_dict_order_and_must_stay_the_same():
    judge = CallableJudge(lambda p, c: {"a": 1.0, "b": 0.0} if c == "x" else {"a": 1.0})
    with pytest.raises(JudgeError, match=r"criteria \['a'\].*its criteria are \['a', 'b'\]"):
        judge.criteria_scores(["p", "q"], ["x", "y"])
    assert judge.criteria == ("a", "b")


def test_plain_float_judges_and_reward_models_have_one_criterion():
    from hf_dpo.pairs.judges import criteria_scores, judge_criteria

    judge = load_judge(length_judge)
    assert criteria_scores(judge, ["p"], ["abc"]) == [(3.0,)] and judge_criteria(judge) == ("score",)


@pytest.mark.parametrize("kind", ["separator", "bos"])
def test_reward_model_without_chat_template_reads_its_special_tokens(tmp_path, smollm_dir, kind):
    """Before: without a chat template the exchange was prompt + completion with no special tokens, so a
    BERT-style reward model scored without [CLS]/[SEP] (read as its own tokenizer(prompt, completion) gives
    them) and a decoder one without the BOS it was trained with."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    tokenizer.chat_template = None
    cls, sep = tokenizer.bos_token, tokenizer.eos_token  # stand-ins for [CLS] and [SEP]
    specials = [(cls, tokenizer.bos_token_id), (sep, tokenizer.eos_token_id)]
    if kind == "separator":
        tokenizer.sep_token = sep
        template = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1", special_tokens=specials
        )
    else:
        template = processors.TemplateProcessing(
            single=f"{cls} $A", pair=f"{cls} $A $B", special_tokens=specials
        )
    tokenizer._tokenizer.post_processor = template
    judge = load_judge(f"rm:{tiny_classifier(tmp_path / 'rm', tokenizer, num_labels=1)}")
    assert not judge.tokenizer.chat_template
    prompt, completion = "What is 2 + 3?", " It is 5."
    expected = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    if kind == "separator":
        expected += [tokenizer.eos_token_id, *tokenizer(completion, add_special_tokens=False)["input_ids"]]
        expected += [tokenizer.eos_token_id]
    else:
        expected = [
            tokenizer.bos_token_id,
            *tokenizer(prompt + completion, add_special_tokens=False)["input_ids"],
        ]
    assert judge._encode([prompt], [completion])["input_ids"][0].tolist() == expected
    with torch.no_grad():
        alone = judge.model(input_ids=torch.tensor([expected])).logits[0, 0].item()
    assert judge.score([prompt, "Hi"], [completion, " there, how are you today?"])[0] == pytest.approx(
        alone, abs=1e-4
    )


def test_a_reward_model_under_the_home_directory_loads_from_a_recipes_tilde_path(
    tmp_path, monkeypatch, smol_tokenizer
):
    """Before: `judge: rm:~/rm` (no shell expands a recipe's ~) passed the preflight's existence check and then
    failed to load, transformers reading '~/rm' as a Hub id."""
    from hf_dpo.pairs.judges import check_judge

    monkeypatch.setenv("HOME", str(tmp_path))
    tiny_classifier(tmp_path / "rm", smol_tokenizer, num_labels=1)
    check_judge("rm:~/rm")
    judge = load_judge("rm:~/rm")
    assert judge.name == "rm:~/rm" and len(judge.score(["What is 2 + 3?"], ["5"])) == 1


def test_a_judge_returning_an_int_too_large_for_a_float_is_named():
    from hf_dpo.pairs.judges import CallableJudge, JudgeError

    for value in (10**400, 10**5000, -(10**400)):
        judge = CallableJudge(lambda p, c, v=value: v, name="huge")
        with pytest.raises(JudgeError, match="Judge 'huge' returned .* for prompt 0"):
            judge.score(["p"], ["c"])


def test_a_judge_declares_which_prompts_ask_the_same_question():
    from hf_dpo.pairs.judges import JudgeError, judge_questions, load_judge

    demo = load_judge("hf_dpo.pairs.demo_task:judge")
    prompts = [
        "What is the capital of Chile?",
        "Name the capital city of Chile.",
        "What is 3 + 4?",
        "Add 3 and 4.",
    ]
    assert judge_questions(demo, prompts) == [
        "capital:Chile",
        "capital:Chile",
        "+:3:4",
        "+:3:4",
    ]

    def plain(prompt, completion):
        return 1.0

    assert judge_questions(load_judge(plain), prompts) is None  # undeclared: every prompt its own question

    def grouped(prompt, completion):
        return 1.0

    grouped.question_of = lambda prompt: {"a": "x"}[prompt]
    with pytest.raises(JudgeError, match=r"question_of raised KeyError.*prompt 1 \('b'\)"):
        judge_questions(load_judge(grouped), ["a", "b"])
