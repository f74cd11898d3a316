"""Sampling from the reference and labelling with a judge (tiny random Llama; SmolLM2 for one slow test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_dpo.config import DataConfig, load_recipe
from hf_dpo.pairs.formats import SamplingError, read_prompts, read_samples
from hf_dpo.pairs.judges import JudgeError
from hf_dpo.pairs.labelling import label_with_judge
from hf_dpo.pairs.row_sampler import PerRowSampler
from hf_dpo.pairs.sampling import format_prompt, load_reference, run_sampling, sample

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path, model_dir, **over):
    values = {
        "model_name_or_path": model_dir,
        "quantization": "none",
        "num_samples_per_prompt": 3,
        "max_new_tokens": 6,
        "sampling_batch_size": 2,
        "output_dir": str(tmp_path / "run"),
        **over,
    }
    args = [x for k, v in values.items() for x in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]
    return load_recipe(None, args)


def _prompts(tmp_path, lines, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model as the reference (loaded once for the module)."""
    from hf_dpo.config import ModelConfig

    return load_reference(ModelConfig(model_name_or_path=tiny_model_dir, quantization="none"))


PROMPTS = ["What is 2 + 3?", "What is the capital of France?", "Add 4 and 5.", "What is 7 times 8?", "Hi"]


def test_samples_file_rows_and_determinism(tmp_path, tiny, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir)
    prompts = _prompts(tmp_path, PROMPTS)
    stats = sample(recipe, prompts, tmp_path / "a.jsonl", tiny, progress=False)
    assert stats["prompts"] == 5 and stats["sampled_now"] == 5 and stats["resumed"] == 0
    rows = read_samples(tmp_path / "a.jsonl")
    assert [r["index"] for r in rows] == list(range(5))
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(len(r["completions"]) == 3 for r in rows)
    # Random weights: three samples of one prompt differ (temperature 1 over a 49k vocabulary).
    assert len(set(rows[0]["completions"])) > 1
    sample(recipe, prompts, tmp_path / "b.jsonl", tiny, progress=False)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    other_seed = _recipe(tmp_path, tiny_model_dir, sampling_seed=1)
    sample(other_seed, prompts, tmp_path / "c.jsonl", tiny, progress=False)
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


def test_completion_does_not_depend_on_batch_size(tmp_path, tiny, tiny_model_dir):
    prompts = _prompts(tmp_path, PROMPTS)
    sample(
        _recipe(tmp_path, tiny_model_dir, sampling_batch_size=1),
        prompts,
        tmp_path / "bs1.jsonl",
        tiny,
        progress=False,
    )
    sample(
        _recipe(tmp_path, tiny_model_dir, sampling_batch_size=4),
        prompts,
        tmp_path / "bs4.jsonl",
        tiny,
        progress=False,
    )
    bs1 = [r["completions"] for r in read_samples(tmp_path / "bs1.jsonl")]
    bs4 = [r["completions"] for r in read_samples(tmp_path / "bs4.jsonl")]
    assert bs1 == bs4


def test_interrupted_run_resumes_to_the_same_file(tmp_path, tiny, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir)
    prompts = _prompts(tmp_path, PROMPTS)
    sample(recipe, prompts, tmp_path / "full.jsonl", tiny, progress=False)
    full = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    # A run killed after two prompts, with a third line cut off mid-write.
    (tmp_path / "part.jsonl").write_text("".join(full[:2]) + full[2][:25])
    stats = sample(recipe, prompts, tmp_path / "part.jsonl", tiny, progress=False)
    assert stats["resumed"] == 2 and stats["sampled_now"] == 3
    assert (tmp_path / "part.jsonl").read_text() == "".join(full)
    again = sample(recipe, prompts, tmp_path / "part.jsonl", tiny, progress=False)
    assert again["sampled_now"] == 0


def test_resume_refuses_other_settings_and_keeps_the_file(tmp_path, tiny, tiny_model_dir):
    prompts = _prompts(tmp_path, PROMPTS[:2])
    sample(_recipe(tmp_path, tiny_model_dir), prompts, tmp_path / "s.jsonl", tiny, progress=False)
    before = (tmp_path / "s.jsonl").read_text()
    with pytest.raises(SamplingError, match="other sampling settings.*new file"):
        sample(
            _recipe(tmp_path, tiny_model_dir, sampling_temperature=0.5), prompts, tmp_path / "s.jsonl", tiny
        )
    other = _prompts(tmp_path, ["A different prompt", "and another"], "other.txt")
    with pytest.raises(SamplingError, match="line 1: this sample does not belong"):
        sample(_recipe(tmp_path, tiny_model_dir), other, tmp_path / "s.jsonl", tiny)
    assert (tmp_path / "s.jsonl").read_text() == before


def test_broken_line_in_the_middle_names_file_and_line(tmp_path, tiny, tiny_model_dir):
    prompts = _prompts(tmp_path, PROMPTS[:3])
    sample(_recipe(tmp_path, tiny_model_dir), prompts, tmp_path / "s.jsonl", tiny, progress=False)
    lines = (tmp_path / "s.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "s.jsonl").write_text(lines[0] + "{not json\n" + lines[2])
    with pytest.raises(SamplingError, match=r"s\.jsonl, line 2: not valid JSON"):
        sample(_recipe(tmp_path, tiny_model_dir), prompts, tmp_path / "s.jsonl", tiny)
    with pytest.raises(SamplingError, match=r"s\.jsonl, line 2"):
        label_with_judge(tmp_path / "s.jsonl", "hf_dpo.pairs.demo_task:judge", tmp_path / "pairs.jsonl")
    assert (tmp_path / "s.jsonl").read_text() == lines[0] + "{not json\n" + lines[2]


def test_prompt_longer_than_context_names_the_prompt(tmp_path, tiny, tiny_model_dir):
    long_prompt = "word " * 600  # the tiny model has 512 positions
    prompts = _prompts(tmp_path, ["short one", long_prompt])
    with pytest.raises(
        SamplingError, match=r"Prompt 1 \('word word.*exceeds the model's context of 512.*max_new_tokens"
    ):
        sample(_recipe(tmp_path, tiny_model_dir), prompts, tmp_path / "s.jsonl", tiny)
    assert not (tmp_path / "s.jsonl").exists() or (tmp_path / "s.jsonl").read_text() == ""


def test_empty_and_missing_prompt_sets(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(SamplingError, match="has no prompts"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(SamplingError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "p.tsv").write_text("x")
    with pytest.raises(SamplingError, match="unknown prompt file type"):
        read_prompts(tmp_path / "p.tsv")


def test_prompt_tables_and_conversations(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"}]
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"prompt": "plain"}) + "\n" + json.dumps({"prompt": conv}) + "\n"
    )
    assert read_prompts(tmp_path / "p.jsonl") == ["plain", conv]
    (tmp_path / "bad.jsonl").write_text(
        json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"question": "x"}) + "\n"
    )
    with pytest.raises(SamplingError, match=r"bad\.jsonl, line 2: no 'prompt' column"):
        read_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "p.csv").write_text("question,other\nWhat is 1 + 1?,a\nWhat is 2 + 2?,b\n")
    assert read_prompts(tmp_path / "p.csv", "question") == ["What is 1 + 1?", "What is 2 + 2?"]


def test_format_prompt_matches_training(smollm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    text = format_prompt("What is 2 + 3?", tokenizer, DataConfig())
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == expected and text.rstrip().endswith("assistant")
    with_system = format_prompt("Hi", tokenizer, DataConfig(system_prompt="Answer in one word."))
    assert "Answer in one word." in with_system
    assert format_prompt("raw text", tokenizer, DataConfig(apply_chat_template=False)) == "raw text"


def test_per_row_sampler_matches_the_distribution():
    """Inverse-CDF draws over probs (0.5, 0.3, 0.2, 0): frequencies within 3 sigma of n=6000, token 3 never."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    sampler = PerRowSampler(seeds=[7], temperature=1.0, top_p=1.0)
    picks = torch.tensor([int(sampler(None, logits.clone()).argmax()) for _ in range(6000)])
    freqs = torch.bincount(picks, minlength=4).float() / 6000
    assert freqs[3] == 0
    assert torch.allclose(freqs[:3], torch.tensor([0.5, 0.3, 0.2]), atol=3 * (0.25 / 6000) ** 0.5)
    # top_p=0.6 keeps tokens 0 and 1 only (0.5 < 0.6 <= 0.8).
    nucleus = PerRowSampler(seeds=[7], temperature=1.0, top_p=0.6)
    assert {int(nucleus(None, logits.clone()).argmax()) for _ in range(300)} == {0, 1}


def _write_samples(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"index": i, "prompt": p, "completions": c}) + "\n" for i, (p, c) in enumerate(rows)
        )
    )
    return path


def test_label_with_judge_best_vs_worst_and_ties(tmp_path):
    samples = _write_samples(
        tmp_path / "s.jsonl",
        [
            (
                "What is 2 + 3?",
                ["It is 6.", "5", "Let me think about the numbers two and three for a while, then add: six."],
            ),
            ("What is 2 + 3?", ["5", "5.", "Five is 5"]),  # all score 2: tie
            ("What is the capital of Japan?", ["Kyoto", "Tokyo is the capital of Japan.", "Kyoto"]),
        ],
    )
    stats = label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "out" / "train.jsonl")
    assert {k: stats[k] for k in ("prompts", "pairs", "ties", "judge", "criteria", "pairs_file")} == {
        "prompts": 3,
        "pairs": 2,
        "ties": 1,
        "judge": "hf_dpo.pairs.demo_task:judge",
        "criteria": ["correct", "concise"],
        "pairs_file": str(tmp_path / "out" / "train.jsonl"),
    }
    assert stats["composition"]["by_criteria"] == {
        "correct=1, concise=1 > correct=0, concise=0": 1,
        "correct=1, concise=1 > correct=0, concise=1": 1,
    }
    rows = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "What is 2 + 3?" and rows[0]["chosen"] == "5"
    assert rows[0]["rejected"].startswith("Let me think")
    assert (rows[0]["score_chosen"], rows[0]["score_rejected"], rows[0]["margin"]) == (2.0, 0.0, 2.0)
    assert rows[0]["scores"] == [1.0, 2.0, 0.0]
    assert (
        rows[1]["index"] == 2
        and rows[1]["chosen"] == "Tokyo is the capital of Japan."
        and rows[1]["margin"] == 1.0
    )


def test_failing_judge_keeps_previous_pairs_and_names_the_prompt(tmp_path):
    samples = _write_samples(
        tmp_path / "s.jsonl", [("What is 2 + 3?", ["5", "6"]), ("Write a haiku.", ["a", "b"])]
    )
    pairs = tmp_path / "train.jsonl"
    previous = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": 1.0}) + "\n"
    pairs.write_text(previous)  # a judge's previous pairs (any other file is refused before scoring)
    with pytest.raises(JudgeError, match=r"prompt 1 \('Write a haiku\.'\)"):
        label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", pairs)
    assert pairs.read_text() == previous


def test_conversational_prompts_give_conversational_pairs(tmp_path):
    conv = [{"role": "user", "content": "What is 2 + 3?"}]
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"index": 0, "prompt": conv, "completions": ["5", "six"]}) + "\n")
    label_with_judge(path, "hf_dpo.pairs.demo_task:judge", tmp_path / "train.jsonl")
    row = json.loads((tmp_path / "train.jsonl").read_text())
    assert row["prompt"] == conv
    assert row["chosen"] == [{"role": "assistant", "content": "5"}]


def test_run_sampling_writes_train_test_and_card(tmp_path, tiny_model_dir, monkeypatch):
    from huggingface_hub import DatasetCard

    # A user's own judge module, named in the recipe as module:function.
    (tmp_path / "my_judges.py").write_text(
        "def length_judge(prompt, completion):\n    return float(len(completion))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    train = _prompts(tmp_path, PROMPTS[:3], "train.txt")
    test = _prompts(tmp_path, PROMPTS[3:], "test.txt")
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        prompts_file=str(train),
        test_prompts_file=str(test),
        judge="my_judges:length_judge",
        pairs_file=str(tmp_path / "pairs" / "train.jsonl"),
        allow_unfinished_chosen=True,  # the tiny random model never writes its end token in 6 tokens
    )
    report = run_sampling(recipe, progress=False)
    assert report["splits"]["train"]["prompts"] == 3 and report["splits"]["test"]["prompts"] == 2
    for split in ("train", "test"):
        st = report["splits"][split]
        assert st["pairs"] + st["ties"] == st["prompts"]
        assert Path(st["samples_file"]).name == f"samples_{split}.jsonl"
        rows = [json.loads(x) for x in (tmp_path / "pairs" / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == st["pairs"] and all(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    card = DatasetCard.load(tmp_path / "pairs" / "README.md")
    assert "dpo" in card.data.tags
    assert "my_judges:length_judge" in card.text and "3 completions" in card.text
    assert "| train | 3 | " in card.text and "train 3 prompts in" in card.text
    assert (
        "unfinished" in card.text and "| 9 / 9 (100%) |" in card.text
    )  # train: 3 prompts x 3, all cut at 6 tokens
    # The pairs directory is what `hf-dpo train` reads: a `datasets` json load of both splits works.
    from datasets import load_dataset

    ds = load_dataset("json", data_dir=str(tmp_path / "pairs"))
    assert set(ds) == {"train", "test"} and {"prompt", "chosen", "rejected"} <= set(ds["train"].column_names)
    # Everything done: a second run samples nothing and loads no model.
    again = run_sampling(recipe, progress=False)
    assert again["splits"]["train"]["sampled_now"] == 0


def test_cli_sample_prints_counts(tmp_path, tiny_model_dir, capsys):
    from hf_dpo.cli import main

    prompts = _prompts(tmp_path, PROMPTS[:2])
    rc = main(
        [
            "sample",
            str(REPO / "recipes" / "demo_pairs.yaml"),
            "--model_name_or_path",
            tiny_model_dir,
            "--quantization",
            "none",
            "--prompts_file",
            str(prompts),
            "--test_prompts_file",
            "",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path / "run"),
            "--pairs_file",
            str(tmp_path / "pairs" / "train.jsonl"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "train: 2 prompts (2 sampled now" in out and " of 2 prompts -> " in out
    assert "prompts without a pair: " in out and "pairs dropped below min_chosen_score: " in out
    assert (tmp_path / "pairs" / "README.md").exists()


def test_cli_sample_checks_the_output_files_once(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Before: `hf-dpo sample` ran check_output_files twice, in preflight_sampling and again in run_sampling.
    run_sampling called without the preflight (the Python API) still checks them."""
    from hf_dpo.cli import main
    from hf_dpo.pairs import formats

    real, calls = formats.check_output_files, []

    def spy(recipe, splits):
        calls.append(list(splits))
        return real(recipe, splits)

    # preflight imports it from formats when it runs; sampling holds its own name for it
    monkeypatch.setattr("hf_dpo.pairs.formats.check_output_files", spy)
    monkeypatch.setattr("hf_dpo.pairs.sampling.check_output_files", spy)
    prompts = _prompts(tmp_path, PROMPTS[:2])
    argv = ["sample", str(REPO / "recipes" / "demo_pairs.yaml"), "--model_name_or_path", tiny_model_dir]
    argv += ["--quantization", "none", "--prompts_file", str(prompts), "--test_prompts_file", ""]
    argv += ["--max_new_tokens", "2", "--output_dir", str(tmp_path / "run")]
    argv += ["--pairs_file", str(tmp_path / "pairs" / "train.jsonl")]
    assert main(argv) == 0, capsys.readouterr().err
    assert calls == [["train"]]

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("# My project\n")
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        prompts_file=str(prompts),
        judge="hf_dpo.pairs.demo_task:judge",
        pairs_file=str(tmp_path / "data" / "train.jsonl"),
    )
    with pytest.raises(SamplingError, match="README.md exists and is not a dataset card hf-dpo wrote"):
        run_sampling(recipe, progress=False)
    assert calls == [["train"], ["train"]]


def test_cli_sample_prints_what_became_of_every_prompt(tmp_path, capsys, monkeypatch):
    """Before: '3 pairs, 1 ties skipped', silent on prompts skipped for any other reason."""
    from hf_dpo import cli

    labelled = {
        "prompts": 7,
        "sampled_now": 7,
        "resumed": 0,
        "seconds": 2.0,
        "samples_file": "s.jsonl",
        "pairs": 3,
        "prompts_with_pairs": 2,
        "too_few_answers": 2,
        "no_finished_answer": 1,
        "ties": 1,
        "all_below_min_chosen": 1,
        "below_min_chosen": 4,
        "pairs_file": "pairs/train.jsonl",
    }
    report = {"splits": {"train": labelled}, "card": "pairs/README.md"}
    monkeypatch.setattr("hf_dpo.preflight.preflight_sampling", lambda recipe: None)
    monkeypatch.setattr("hf_dpo.pairs.sampling.run_sampling", lambda recipe, **kwargs: report)
    assert cli.main(["sample", str(REPO / "recipes" / "demo_pairs.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "train: 7 prompts (7 sampled now in 2 s, 0 resumed) -> s.jsonl",
        "  3 pairs from 2 of 7 prompts -> pairs/train.jsonl; prompts without a pair: 2 with fewer than 2 "
        "distinct non-empty answers, 1 without a finished answer, 1 tie, 1 with every chosen answer below "
        "min_chosen_score; pairs dropped below min_chosen_score: 4",
    ]
    # Every reason is printed, a zero too: the line always accounts for every prompt.
    labelled |= {"pairs": 1, "prompts_with_pairs": 1, "too_few_answers": 6, "no_finished_answer": 0}
    labelled |= {"ties": 0, "all_below_min_chosen": 0, "below_min_chosen": 0}
    assert cli.main(["sample", str(REPO / "recipes" / "demo_pairs.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "  1 pair from 1 of 7 prompts -> pairs/train.jsonl; prompts without a pair: 6 with fewer than 2 distinct "
        "non-empty answers, 0 without a finished answer, 0 ties, 0 with every chosen answer below "
        "min_chosen_score; pairs dropped below min_chosen_score: 0"
    )


def test_cli_sample_bad_judge_is_a_clean_error(tmp_path, tiny_model_dir, capsys):
    from hf_dpo.cli import main

    prompts = _prompts(tmp_path, PROMPTS[:1])
    rc = main(["sample", str(REPO / "recipes" / "demo_pairs.yaml"), "--prompts_file", str(prompts),
               "--test_prompts_file", "", "--judge", "nope_module:fn", "--output_dir", str(tmp_path / "run")])  # fmt: skip
    assert rc == 2
    assert "cannot import module 'nope_module'" in capsys.readouterr().err


def test_demo_pairs_recipe_loads():
    recipe = load_recipe(REPO / "recipes" / "demo_pairs.yaml")
    assert recipe.report.judge == "hf_dpo.pairs.demo_task:judge"
    assert recipe.sampling.num_samples_per_prompt == 4
    assert recipe.model.model_name_or_path == "smollm2-135m-instruct"
    assert recipe.sampling.pairs_file == "recipes/data/demo/train.jsonl"
    for prompts in (recipe.sampling.prompts_file, recipe.report.test_prompts_file):
        assert read_prompts(REPO / prompts)
    first_line = (REPO / "recipes" / "demo_pairs.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# make pairs RECIPE=recipes/demo_pairs.yaml")


@pytest.mark.slow
def test_smollm_4bit_samples_answer_the_demo(tmp_path, smollm_dir):
    """The real reference: SmolLM2 in 4-bit answers demo prompts; some answers are judged correct."""
    recipe = load_recipe(
        REPO / "recipes" / "demo_pairs.yaml",
        ["--max_new_tokens", "16", "--num_samples_per_prompt", "2", "--output_dir", str(tmp_path / "run")],
    )
    prompts = _prompts(tmp_path, ["What is the capital of France?", "What is the capital of Japan?"])
    sample(recipe, prompts, tmp_path / "s.jsonl", progress=False)
    rows = read_samples(tmp_path / "s.jsonl")
    texts = [c for r in rows for c in r["completions"]]
    assert any("Paris" in t for t in rows[0]["completions"]) or any(
        "Tokyo" in t for t in rows[1]["completions"]
    ), texts


def test_push_pairs_to_a_local_hub(tmp_path, monkeypatch):
    """The pairs directory goes up as a dataset repo through the real client, to tests/hub_server.py."""
    from huggingface_hub import constants

    from hf_dpo.pairs.dataset_card import push_pairs
    from tests.hub_server import HubServer

    server = HubServer(token="hf_test_token").start()
    try:
        for key, value in {
            "HF_ENDPOINT": server.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_TOKEN": "hf_test_token",
            "NO_PROXY": "127.0.0.1,localhost",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        pairs = tmp_path / "pairs"
        pairs.mkdir()
        (pairs / "train.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
        (pairs / "test.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "c", "rejected": "d"}) + "\n")
        (pairs / "README.md").write_text("---\ntags:\n- dpo\n---\n# pairs\n")
        (pairs / ".train.jsonl.tmp").write_text("half-written")
        url = push_pairs(pairs, "tester/demo-pairs", token="hf_test_token")
        files = server.files("tester/demo-pairs", repo_type="dataset")
        assert set(files) == {"train.jsonl", "test.jsonl", "README.md"}
        assert files["train.jsonl"] == (pairs / "train.jsonl").read_bytes()
        assert "tester/demo-pairs" in url
        with pytest.raises(SamplingError, match="no .jsonl pairs"):
            push_pairs(tmp_path / "run", "tester/empty")
        # Refused before any request: no token anywhere, a blank one, a repo id the Hub refuses.
        requests = len(server.requests)
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
        for token in (None, " "):
            with pytest.raises(SamplingError, match="no usable Hub token"):
                push_pairs(pairs, "tester/demo-pairs", token=token)
        with pytest.raises(SamplingError, match="'tester/demo pairs' is not a Hub repo id"):
            push_pairs(pairs, "tester/demo pairs", token="hf_test_token")
        assert len(server.requests) == requests
    finally:
        server.stop()


def test_dequantized_reference_computes_what_the_4bit_model_computes(tiny_model_dir):
    """On CPU the 4-bit linears are swapped for float ones with the same NF4-rounded weights: same logits."""
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model
    from hf_dpo.model.reference import swap_4bit_linears

    model = load_base_model(ModelConfig(model_name_or_path=tiny_model_dir, quantization="4bit"))
    ids = torch.tensor([[1, 5, 9, 300, 42, 7]])
    model.train()  # the training-time path: dequantize per call, then a float matmul
    with torch.inference_mode():
        quantized = model(input_ids=ids).logits
    layer = model.model.layers[0].mlp.down_proj
    assert "4bit" in type(layer).__name__
    swap_4bit_linears(model)
    model.eval()
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear
    with torch.inference_mode():
        dequantized = model(input_ids=ids).logits
    assert torch.equal(quantized, dequantized)


def test_shared_prompt_cache_gives_the_same_samples_as_k_copies(tiny, tiny_model_dir, tmp_path):
    """generate_batch runs each prompt once and copies its cache K times; same tokens as K padded copies."""
    from transformers import GenerationConfig

    from hf_dpo.pairs.sampling import generate_batch

    model, tokenizer = tiny
    cfg = _recipe(tmp_path, tiny_model_dir, max_new_tokens=8).sampling
    prompt_ids = [tokenizer(p)["input_ids"] for p in ("What is 2 + 3?", "Hi", "Name the capital of Peru.")]
    seeds = [[10 * i + j for j in range(3)] for i in range(3)]
    shared, _ = generate_batch(model, tokenizer, prompt_ids, seeds, cfg)
    rows = tokenizer.pad({"input_ids": [ids for ids in prompt_ids for _ in range(3)]}, return_tensors="pt")
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        out = model.generate(
            **rows, generation_config=gen_cfg, logits_processor=[PerRowSampler(sum(seeds, []), 1.0, 1.0)]
        )
    texts = tokenizer.batch_decode(out[:, rows["input_ids"].shape[1] :], skip_special_tokens=True)
    assert shared == [[t.strip() for t in texts[i * 3 : (i + 1) * 3]] for i in range(3)]


def test_label_with_judge_all_pairs_with_different_scores(tmp_path):
    """Scores [1, 2, 0] give three ordered pairs; two copies of one text are one answer: never paired with each
    other, and its pair with another answer is written once."""
    samples = _write_samples(
        tmp_path / "s.jsonl",
        [
            (
                "What is 2 + 3?",
                ["It is 6.", "5", "Let me think about the numbers two and three for a while, then add: six."],
            ),
            ("What is the capital of Japan?", ["Kyoto", "Tokyo is the capital of Japan.", "Kyoto"]),
        ],
    )
    stats = label_with_judge(
        samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "train.jsonl", pairs_per_prompt="all"
    )
    assert stats["pairs"] == 4 and stats["ties"] == 0
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    first = [(r["score_chosen"], r["score_rejected"]) for r in rows if r["index"] == 0]
    assert sorted(first) == [(1.0, 0.0), (2.0, 0.0), (2.0, 1.0)]
    assert all(r["score_chosen"] > r["score_rejected"] and r["chosen"] != r["rejected"] for r in rows)
    japan = [r for r in rows if r["index"] == 1]
    assert [(r["chosen"], r["rejected"]) for r in japan] == [("Tokyo is the capital of Japan.", "Kyoto")]
    with pytest.raises(SamplingError, match="pairs_per_prompt must be"):
        label_with_judge(
            samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "x.jsonl", pairs_per_prompt="some"
        )


def test_a_concise_wrong_answer_never_beats_a_correct_one(tmp_path):
    """The demo judge ranks `correct` before `concise`: a long correct answer is chosen over a short wrong one."""
    long_correct = "Let me add the two numbers carefully, step by step, and the result of it all is 5."
    samples = _write_samples(tmp_path / "s.jsonl", [("What is 2 + 3?", ["6", long_correct])])
    label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "train.jsonl")
    row = json.loads((tmp_path / "train.jsonl").read_text())
    assert (row["chosen"], row["rejected"]) == (long_correct, "6")
    assert row["criteria_chosen"] == {"correct": 1.0, "concise": 0.0}
    assert row["criteria_rejected"] == {"correct": 0.0, "concise": 1.0}


def _write_marked_samples(path: Path, prompt: str, completions: list[str], finished: list[bool]) -> Path:
    path.write_text(
        json.dumps({"index": 0, "prompt": prompt, "completions": completions, "finished": finished})
    )
    return path


def test_an_unfinished_answer_is_never_chosen_unless_allowed(tmp_path):
    """A cut answer that reads as correct ranks below a finished wrong one; allow_unfinished_chosen lifts that."""
    samples = _write_marked_samples(
        tmp_path / "s.jsonl", "What is 2 + 3?", ["It is 5 and", "It is 6.", "Seven"], [False, True, True]
    )
    stats = label_with_judge(
        samples, "hf_dpo.pairs.demo_task:judge", tmp_path / "train.jsonl", pairs_per_prompt="all"
    )
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert all(r["chosen"] != "It is 5 and" and r["finished_chosen"] for r in rows)
    assert ("It is 6.", "It is 5 and") in [(r["chosen"], r["rejected"]) for r in rows]
    assert (
        stats["composition"]["unfinished_samples"] == 1 and stats["composition"]["unfinished_rejected"] == 2
    )
    label_with_judge(
        samples,
        "hf_dpo.pairs.demo_task:judge",
        tmp_path / "allowed.jsonl",
        pairs_per_prompt="all",
        allow_unfinished_chosen=True,
    )
    allowed = [json.loads(x) for x in (tmp_path / "allowed.jsonl").read_text().splitlines()]
    assert {r["rejected"] for r in allowed if r["chosen"] == "It is 5 and"} == {"It is 6.", "Seven"}


def test_min_chosen_score_keeps_only_pairs_with_a_good_enough_chosen_answer(tmp_path):
    samples = _write_samples(
        tmp_path / "s.jsonl",
        [
            (
                "What is 2 + 3?",
                ["5", "6", "Six, or maybe seven, or eight, or perhaps nine, who could really tell for sure."],
            )
        ],
    )
    stats = label_with_judge(
        samples,
        "hf_dpo.pairs.demo_task:judge",
        tmp_path / "train.jsonl",
        pairs_per_prompt="all",
        min_chosen_score=1.0,
        min_chosen_criterion="correct",
    )
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert {r["chosen"] for r in rows} == {"5"} and stats["below_min_chosen"] == 1
    with pytest.raises(SamplingError, match="not one of the judge's criteria"):
        label_with_judge(
            samples,
            "hf_dpo.pairs.demo_task:judge",
            tmp_path / "x.jsonl",
            min_chosen_score=1,
            min_chosen_criterion="kind",
        )


def test_second_round_samples_the_trained_policy(tmp_path, tiny_model_dir):
    """adapter_name_or_path (e.g. a finished run dir) makes the adapter the sampled policy: other samples
    than the bare base with the same seeds, and a samples file that records which adapter made them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # not a no-op
    get_peft_model(base, lora).save_pretrained(tmp_path / "run")
    prompts = _prompts(tmp_path, PROMPTS[:2])
    rows = {}
    for name, extra in (("base", {}), ("policy", {"adapter_name_or_path": str(tmp_path / "run")})):
        recipe = _recipe(tmp_path, tiny_model_dir, prompts_file=str(prompts), **extra)
        sample(recipe, samples_file=tmp_path / f"{name}.jsonl", progress=False)
        rows[name] = read_samples(tmp_path / f"{name}.jsonl")
    assert rows["policy"][0]["settings"]["adapter"] == str(tmp_path / "run")
    assert [r["completions"] for r in rows["policy"]] != [r["completions"] for r in rows["base"]]


def test_raw_text_prompts_get_the_special_tokens_training_gives_them(smollm_dir, tmp_path):
    """Before: sampling and the report's generations tokenized a raw-text prompt (no chat template, or
    apply_chat_template: false) without special tokens, while training (as TRL) gives it the tokenizer's BOS:
    the reference was sampled and judged on prompts unlike those it is trained on."""
    from types import SimpleNamespace

    from tokenizers import processors
    from transformers import AutoTokenizer

    from hf_dpo.data import prompt_token_ids, tokenize_pair
    from hf_dpo.pairs.sampling import _encode_prompts
    from hf_dpo.report.prompts import prompts_from_file

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    bos = tokenizer.bos_token  # a tokenizer that adds a BOS, as Llama's do (SmolLM2's adds none)
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    cfg = DataConfig(apply_chat_template=False)
    pair = {"prompt": "Question: 2 + 3?\nAnswer:", "chosen": " 5", "rejected": " 6", "implicit": False}
    trained = tokenize_pair(pair, tokenizer, cfg)["prompt_input_ids"]
    assert trained[0] == tokenizer.bos_token_id
    assert prompt_token_ids(pair["prompt"], tokenizer, cfg) == trained
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    recipe = SimpleNamespace(data=cfg, sampling=SimpleNamespace(max_new_tokens=8))
    assert _encode_prompts([pair["prompt"]], model, tokenizer, recipe, "p.jsonl") == [trained]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": pair["prompt"]}) + "\n")
    assert prompts_from_file(str(tmp_path / "p.jsonl"), tokenizer, cfg, 4)[0][1] == trained
    # a chat template renders its own special tokens: nothing is added in front of them
    chat = DataConfig()
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert (
        prompt_token_ids("Hi", tokenizer, chat) == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )
