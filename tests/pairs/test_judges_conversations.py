"""A judge is given each prompt as the model was: a conversation's message list to a judge written for them (by
its annotation or `conversations = True`), the last user turn to a plain-text judge; a reward model reads the
whole exchange through its chat template; the report and eval_generations.jsonl show the earlier turns."""

import json

import pytest
import torch

from hf_dpo.pairs.judges import criteria_scores, load_judge, takes_conversations
from tests.run_fixtures import tiny_classifier

CHAT = [
    {"role": "system", "content": "You are a pirate. Answer like one."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "Seven, matey."},
    {"role": "user", "content": "Another one?"},
]


def annotated(prompt: str | list[dict], completion: str) -> float:
    return float(isinstance(prompt, list) and prompt[0]["role"] == "system")


def quoted(
    prompt: "list[dict] | str", completion: str
) -> float:  # as under `from __future__ import annotations`
    return float(isinstance(prompt, list))


def declared(prompt, completion):
    return float(isinstance(prompt, list))


declared.conversations = True


def plain(prompt: str, completion: str) -> float:
    return float(prompt == "Another one?")


def untyped(prompt, completion):
    return float(prompt == "Another one?")


class ObjectJudge:
    name = "object"
    conversations = True

    def score(self, prompts, completions):
        return [float(len(p)) if isinstance(p, list) else -1.0 for p in prompts]


class PlainObjectJudge:
    name = "plain object"

    def score(self, prompts, completions):
        return [float(p == "Another one?") for p in prompts]


@pytest.mark.parametrize(
    "judge, whole",
    [
        (annotated, True),
        (quoted, True),
        (declared, True),
        (ObjectJudge(), True),
        (plain, False),
        (untyped, False),
        (PlainObjectJudge(), False),
    ],
)
def test_each_judge_gets_the_prompt_in_the_form_it_is_written_for(judge, whole):
    assert takes_conversations(judge) is whole
    for wrapped in (judge, load_judge(judge)):
        # a conversation: whole, or its last user turn; a text prompt is text for every judge
        assert criteria_scores(wrapped, [CHAT, "Another one?"], ["Eleven.", "Eleven."]) == [
            (4.0,) if isinstance(judge, ObjectJudge) else (1.0,),
            (-1.0,) if isinstance(judge, ObjectJudge) else ((0.0,) if whole else (1.0,)),
        ]


def test_the_declaration_is_read_once_not_guessed_per_call():
    judge = load_judge(untyped)
    assert judge.conversations is False  # decided by how untyped is written, whatever it is given later
    assert judge.score([CHAT], ["x"]) == [1.0]


def test_an_error_of_a_conversation_judge_names_the_last_turn():
    from hf_dpo.pairs.judges import JudgeError

    def broken(prompt: list[dict], completion: str) -> float:
        raise KeyError("role")

    with pytest.raises(JudgeError, match=r"prompt 0 \('Another one\?'\)"):
        load_judge(broken).score([CHAT], ["x"])


def test_a_reward_model_scores_the_whole_exchange_through_its_chat_template(tmp_path, smollm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    judge = load_judge(f"rm:{tiny_classifier(tmp_path / 'rm', tokenizer, num_labels=1)}")
    (whole,) = judge.score([CHAT], ["Eleven, arr."])
    text = tokenizer.apply_chat_template(
        CHAT + [{"role": "assistant", "content": "Eleven, arr."}], tokenize=False
    )
    with torch.no_grad():
        alone = (
            judge.model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
        )
    assert whole == pytest.approx(alone, abs=1e-4)
    (last_turn_only,) = judge.score(["Another one?"], ["Eleven, arr."])
    assert last_turn_only != pytest.approx(whole, abs=1e-4)  # the system prompt and earlier turns count


def test_labelling_passes_conversations_to_the_judge(tmp_path, monkeypatch):
    """hf-dpo sample's labelling gives a conversation-reading judge the whole conversation."""
    from hf_dpo.pairs.labelling import label_with_judge

    seen = []

    def pirate_judge(prompt: str | list[dict], completion: str) -> float:
        seen.append(prompt)
        return (
            float("arr" in completion)
            if isinstance(prompt, list) and "pirate" in prompt[0]["content"]
            else 0.0
        )

    module = tmp_path / "pirate_judges.py"
    module.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pirate_judges

    pirate_judges.judge = pirate_judge
    samples = tmp_path / "s.jsonl"
    samples.write_text(
        json.dumps({"index": 0, "prompt": CHAT, "completions": ["Eleven.", "Eleven, arr."]}) + "\n"
    )
    label_with_judge(samples, "pirate_judges:judge", tmp_path / "train.jsonl")
    assert seen and all(prompt == CHAT for prompt in seen)
    row = json.loads((tmp_path / "train.jsonl").read_text())
    assert row["chosen"] == [{"role": "assistant", "content": "Eleven, arr."}]


def test_the_generations_file_and_report_show_the_earlier_turns(tmp_path):
    import numpy as np

    from hf_dpo.report.generations_file import generation_rows
    from hf_dpo.report.markdown import samples_table

    long_system = {"role": "system", "content": "You are a pirate. " * 40}
    side = {"answers": ["Eleven."], "finished": [True], "tokens": [3]}
    (row,) = generation_rows(
        [[long_system, *CHAT[1:]]], ("score",), side, side, np.ones((1, 1)), np.ones((1, 1)), [0.5]
    )
    assert row["prompt"] == "Another one?"
    assert [m["role"] for m in row["context"]] == ["system", "user", "assistant"]
    assert row["context"][1:] == CHAT[1:3]
    shown = row["context"][0]["content"]
    assert len(shown) < 220 and shown.startswith("You are a pirate.") and " ... " in shown  # shortened
    (text_row,) = generation_rows(["Hi"], ("score",), side, side, np.ones((1, 1)), np.ones((1, 1)), [0.5])
    assert "context" not in text_row
    table = samples_table(
        {
            "behaviour": {
                "samples": [
                    {
                        **row,
                        "policy": "Eleven.",
                        "reference": "Nine.",
                        "policy_score": 1.0,
                        "reference_score": 0.0,
                    }
                ]
            }
        }
    )
    assert "*system: You are a pirate." in table and "assistant: Seven, matey.* → Another one?" in table
