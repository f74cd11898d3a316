"""The card's "How to use" prompts the adapter in the form it was trained on (hf_dpo.hub.card.usage_example)."""

import json

import pytest

from hf_dpo.hub.card import render_card

HH = "transcript split at the last assistant turn"


def _run_dir(tmp_path, train_report: dict, recipe: str = "") -> str:
    info = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "data_report": {"train": train_report}}
    (tmp_path / "run_info.json").write_text(json.dumps(info))
    (tmp_path / "recipe.yaml").write_text(recipe or "dataset_name: pairs.jsonl\n")
    return str(tmp_path)


def _usage(run_dir: str) -> str:
    text = render_card(run_dir, "me/x").text
    return text.split("## How to use", 1)[1].split("## Limitations", 1)[0]


def test_a_model_trained_on_raw_hh_transcripts_is_prompted_with_one(tmp_path):
    report = {"prompt_formats": {"raw text": 54}, "prompt_methods": {HH: 54}}
    usage = _usage(_run_dir(tmp_path, report))
    assert (
        'inputs = tokenizer("\\n\\nHuman: What is the capital of France?\\n\\nAssistant:", return_tensors="pt")'
        in usage
    )
    assert "apply_chat_template" not in usage


def test_a_model_trained_on_plain_text_prompts_is_prompted_with_plain_text(tmp_path):
    report = {"prompt_formats": {"raw text": 10}, "prompt_methods": {"prompt column": 10}}
    usage = _usage(_run_dir(tmp_path, report, "dataset_name: pairs.jsonl\napply_chat_template: false\n"))
    assert 'inputs = tokenizer("What is the capital of France?", return_tensors="pt")' in usage
    assert "apply_chat_template" not in usage


@pytest.mark.parametrize(
    "report, recipe, first_turn",
    [
        ({"prompt_formats": {"chat template": 8}}, "system_prompt: Answer briefly.\n", "Answer briefly."),
        ({"prompt_formats": {"chat template": 8}}, "dataset_name: x\n", None),
        ({}, "dataset_name: x\n", None),  # a run from before the data report said: the chat template
        (  # raw text that came rendered in a chat format: prompted through the template, not as plain text
            {
                "prompt_formats": {"raw text": 5},
                "prompt_methods": {"rendered chat split after its last assistant header": 5},
            },
            "dataset_name: x\n",
            None,
        ),
    ],
)
def test_a_chat_model_is_prompted_through_its_template_with_the_recipes_system_prompt(
    tmp_path, report, recipe, first_turn
):
    usage = _usage(_run_dir(tmp_path, report, recipe))
    messages = json.loads(usage.split("messages = ", 1)[1].split("\n", 1)[0])
    assert messages[-1] == {"role": "user", "content": "What is the capital of France?"}
    assert (messages[0]["content"] if len(messages) == 2 else None) == first_turn
    assert "apply_chat_template(messages, add_generation_prompt=True" in usage
