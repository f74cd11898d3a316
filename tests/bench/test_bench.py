"""hf_dpo.bench: the parts that need no model (lines, data shapes, ratios, table, verdicts, token counting), and
the message when TRL is missing. `make bench` runs the rest; no speed is asserted here."""

import pytest

from hf_dpo.bench import data_shapes
from hf_dpo.bench.lines import (
    CHECKPOINTING,
    DEFAULT_LINES,
    HF_ALL,
    LINES,
    NO_CHECKPOINTING,
    QUICK_LINES,
    check_lines,
)
from hf_dpo.bench.table import add_ratios, format_compute_table, format_table, format_verdicts, verdicts
from hf_dpo.bench.worker import CountingCollator, pass_flops


def result(name, end_to_end_s, rss, data_set="demo", **extra):
    line = LINES[name]
    return {
        "name": name,
        "impl": line.impl,
        "regime": line.regime,
        "baseline": line.baseline,
        "warm_cache_of": line.warm_cache_of,
        "data_set": data_set,
        "quantization": "4bit",
        "pairs": 32,
        "end_to_end_s": end_to_end_s,
        "setup_s": 1.0,
        "step_pairs_per_s": 32 / end_to_end_s,
        "peak_rss_mb": rss,
        "peak_cuda_mb": None,
        "loss_first": 0.6931,
        "logps_chosen_first": -40.0,
        "tokens_per_pair": 200.0,
        "prompt_share": 0.75,
        "completion_share": 0.25,
        **extra,
    }


def test_each_regime_is_compared_with_its_own_trl_lines():
    results = [
        result("trl", 40.0, 2000),
        result("trl_precompute", 30.0, 1900),
        result("hf_dpo", 20.0, 1500, pad_share=0.02),
        result("hf_dpo_warm_cache", 10.0, 1500),
        result("trl_ckpt", 60.0, 1600),
        result("trl_precompute_ckpt", 50.0, 1600),
        result("hf_dpo_ckpt", 25.0, 1200),
        result("hf_dpo", 10.0, 1000, data_set="long_prompt"),  # no TRL lines for that set: no ratios
        {"name": "hf_dpo_ckpt_warm_cache", "data_set": "demo", "quantization": "4bit", "error": "boom"},
    ]
    add_ratios(results)
    hf, ckpt = results[2], results[6]
    assert hf["speed_vs_trl"] == pytest.approx(2.0)  # TRL's wall time over hf_dpo's
    assert hf["speed_vs_trl_precompute"] == pytest.approx(1.5)
    assert hf["memory_vs_trl"] == pytest.approx(0.75)
    assert ckpt["speed_vs_trl"] == pytest.approx(60 / 25)  # against the checkpointed TRL, not the other
    assert ckpt["memory_vs_trl"] == pytest.approx(1200 / 1600)
    assert "speed_vs_trl" not in results[7]
    table = format_table(results)
    assert NO_CHECKPOINTING in table and CHECKPOINTING in table and "failed: boom" in table
    assert "prompt 75%, completions 25%" in table and "long_prompt (4bit)" in table


def test_verdict_covers_cold_hf_dpo_lines_and_names_the_regime():
    results = [
        result("trl", 40.0, 2000),
        result("trl_precompute", 28.0, 2000),
        result("hf_dpo", 20.0, 1800),  # 2.0x, 1.4x, 0.9x: meets
        result("hf_dpo_warm_cache", 5.0, 1800),  # warm cache: no verdict of its own
        result("trl_ckpt", 40.0, 1500),
        result("trl_precompute_ckpt", 30.0, 1500),
        result("hf_dpo_ckpt", 25.0, 1400),  # 1.6x: misses
    ]
    add_ratios(results)
    found = verdicts(results)
    assert [(v["line"], v["regime"], v["meets_targets"]) for v in found] == [
        ("hf_dpo", NO_CHECKPOINTING, True),
        ("hf_dpo_ckpt", CHECKPOINTING, False),
    ]
    text = format_verdicts(found)
    assert "meets" in text and "MISSES" in text and CHECKPOINTING in text


def test_lines_differ_from_their_partner_only_where_they_say():
    assert LINES["hf_dpo"].trainer_options()["gradient_checkpointing"] is False
    assert LINES["trl"].trainer_options() == {"gradient_checkpointing": False}
    assert LINES["trl_ckpt"].trainer_options()["gradient_checkpointing"] is True
    for name, line in LINES.items():
        if name.startswith("hf_dpo_no_"):
            changed = {k for k in HF_ALL if line.options.get(k) != HF_ALL[k]}
            assert len(changed) == 1, (name, changed)
    for regime in (NO_CHECKPOINTING, CHECKPOINTING):  # each regime has both baselines in the default run
        assert {LINES[n].baseline for n in DEFAULT_LINES if LINES[n].regime == regime} >= {
            "trl",
            "trl_precompute",
        }


def test_warm_cache_lines_run_after_the_line_that_fills_the_cache():
    assert check_lines(["hf_dpo_warm_cache", "trl", "hf_dpo"]) == ["trl", "hf_dpo", "hf_dpo_warm_cache"]
    assert check_lines(QUICK_LINES)[-1] == "hf_dpo_warm_cache"
    with pytest.raises(ValueError, match="add hf_dpo"):
        check_lines(["trl", "hf_dpo_warm_cache"])
    with pytest.raises(ValueError, match="unknown"):
        check_lines(["trl_fast"])


@pytest.mark.parametrize("name", data_shapes.DATA_SETS[1:])
def test_generated_sets_are_seeded_conversational_and_distinct(name):
    rows, source = data_shapes.load_data_set(name, 12, seed=3)
    assert rows == data_shapes.load_data_set(name, 12, seed=3)[0] and "generated" in source
    for row in rows:
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == "assistant" and row["chosen"] != row["rejected"]
    assert len({str(r["prompt"]) for r in rows}) == len(rows)


def test_generated_sets_span_the_prompt_share():
    def chars(rows, key):
        return sum(len(m["content"]) for r in rows for m in r[key])

    shares = {}
    for name in ("long_prompt", "long_answer", "multi_turn"):
        rows, _ = data_shapes.load_data_set(name, 16)
        p = 2 * chars(rows, "prompt")
        shares[name] = p / (p + chars(rows, "chosen") + chars(rows, "rejected"))
    assert shares["long_prompt"] > 0.9 and shares["long_answer"] < 0.2
    assert 0.5 < shares["multi_turn"] < 0.9


def test_demo_rows_read_from_jsonl_become_conversational(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Add 2 and 3.", "chosen": "5.", "rejected": "6.", "score": 1}\n')
    rows, source = data_shapes.load_data_set("demo", 1, demo_path=path)
    assert source == str(path)
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "Add 2 and 3."}],
            "chosen": [{"role": "assistant", "content": "5."}],
            "rejected": [{"role": "assistant", "content": "6."}],
        }
    ]
    with pytest.raises(ValueError, match="needs 2"):
        data_shapes.load_data_set(str(path), 2)
    assert "arithmetic" in data_shapes.load_data_set("demo", 4, demo_path=tmp_path / "absent.jsonl")[1]


def test_token_shares_count_the_prompt_twice():
    shares = data_shapes.token_shares([10, 30], [(5, 5), (10, 10)])
    assert shares["tokens_per_pair"] == pytest.approx((80 + 30) / 2)
    assert shares["prompt_share"] == pytest.approx(80 / 110)


def test_counting_collator_counts_prompt_twice():
    seen = []
    collate = CountingCollator(lambda examples: len(examples), ("p", "c", "r"), seen)
    assert collate([{"p": [1, 2], "c": [3], "r": [4, 5, 6]}, {"p": [1], "c": [2], "r": [3]}]) == 2
    assert seen == [2 * 2 + 1 + 3 + 2 * 1 + 1 + 1]


def test_counting_collator_also_counts_prompt_and_completions_once():
    seen, parts = [], []
    collate = CountingCollator(lambda examples: len(examples), ("p", "c", "r"), seen, parts)
    collate([{"p": [1, 2], "c": [3], "r": [4, 5, 6]}, {"p": [1], "c": [2], "r": [3]}])
    assert parts == [(2 + 1, 1 + 3 + 1 + 1)]


def test_pass_flops_count_every_decoder_weight_at_each_token_and_the_head_at_completions():
    # 2 FLOPs per weight: 10 decoder weights x (4 prompt + 2 completion tokens), 3 head weights x 2 completions
    assert pass_flops(body=10, head=3, prompt_tokens=4, completion_tokens=2) == 2 * (10 * 6 + 3 * 2)


def test_compute_table_shows_the_reference_pass_and_flops_against_the_matmul_floor():
    figures = dict(
        ref_pass_s=8.0, ref_pass_over_step_per_pair=0.25, ref_gflops_per_s=30.0, train_gflops_per_s=20.0
    )
    results = [
        result("trl", 40.0, 2000, ref_pass_s=0.0, train_gflops_per_s=10.0),
        result("hf_dpo", 20.0, 1500, **figures),
        result("hf_dpo_bf16", 15.0, 1500, **{**figures, "bf16": True}),
        {"name": "hf_dpo_warm_cache", "data_set": "demo", "quantization": "4bit", "error": "boom"},
    ]
    table = format_compute_table(results, {"float32": 40.0, "bfloat16": 120.0})
    rows = table.splitlines()
    assert "fp32 40 GFLOP/s, bf16 120 GFLOP/s" in rows[0] and len(rows) == 3 + 3
    trl, hf, bf16 = rows[3:]
    assert trl.split()[:2] == ["trl", "-"]  # no pre-pass
    # 8 s over 32 pairs: 250 ms a pair, a quarter of a step's; 30 GFLOP/s = 75% of fp32's, 25% of bf16's
    assert hf.split()[:7] == ["hf_dpo", "8.0", "250", "0.25", "30.0", "75%", "25%"]
    assert hf.split()[7:10] == ["20.0", "50%", "17%"]
    assert bf16.startswith("hf_dpo_bf16 (bf16)")


def test_bench_without_trl_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from hf_dpo import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    code = cli.main(["bench", "--quick"])
    assert code == 2
    assert "pip install 'hf-dpo[bench]'" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_both_trainers_on_the_tiny_model(tmp_path, tiny_model_dir):
    """The worker's path end to end, in-process, on the 2-layer model: the same pairs and token counts on both
    sides, log 2 as first loss, and the table built from the results (no speed is checked)."""
    import math

    from hf_dpo.bench.worker import run_line

    rows, _ = data_shapes.load_data_set("multi_turn", 4, seed=1)
    results = []
    for name in ("trl", "hf_dpo"):
        line = LINES[name]
        spec = dict(
            name=name,
            impl=line.impl,
            regime=line.regime,
            options=line.trainer_options(),
            data_set="multi_turn",
            quantization="none",
            model=tiny_model_dir,
            rows=rows,
            batch_size=2,
            steps=2,
            warmup=1,
            max_length=256,
            lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["all-linear"]},
            seed=0,
            output_dir=str(tmp_path / name),
            cache_dir=str(tmp_path / "cache"),
        )
        results.append({**run_line(spec), "baseline": line.baseline, "warm_cache_of": None})
    trl, hf = results
    assert len(trl["step_s"]) == len(hf["step_s"]) == 2
    assert trl["loss_first"] == pytest.approx(math.log(2), abs=1e-4) == hf["loss_first"]
    assert hf["prefix_sharing_used"] and hf["end_to_end_s"] >= hf["setup_s"] > 0
    assert hf["prefix_sharing_attention"] == "mask4d"  # the kernel that was timed: the dense 4D mask on CPU
    assert hf["prompt_share"] == pytest.approx(trl["prompt_share"], abs=0.05)  # same pairs, same template
    assert (
        trl["ref_pass_s"] == 0 and hf["ref_pass_s"] > 0
    )  # TRL's reference runs in its steps, hf_dpo's before
    assert hf["ref_gflops_per_s"] > 0 and hf["ref_pass_over_step_per_pair"] > 0
    # the steps read the pre-pass's values: no reference forward in them, so a step counts as 2 passes, not 3
    assert hf["reference_forward_passes_in_training"] == 0
    assert trl["train_gflops_per_s"] > 0 and hf["train_gflops_per_s"] > 0
    add_ratios(results)
    assert "x TRL" in format_table(results) and hf["speed_vs_trl"] > 0


def test_generation_bench_measures_every_line_against_generate_and_the_matmul_floor(tiny_model_dir, tmp_path):
    """The generation table on a tiny model: each line's tokens/s over its group's model.generate line, its
    FLOP/s as 2 x linear parameters x tokens over the time, and as a share of the measured matmul rates."""
    import torch

    from hf_dpo.bench.generation import format_generation_table, linear_parameters, run_generation_bench

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 plus 3?\nName the capital of Peru.\n")
    report = run_generation_bench(
        tiny_model_dir, str(prompts), num_prompts=2, max_new_tokens=4, echo=lambda s: None
    )
    names = [r["line"] for r in report["lines"]]
    assert (
        names[0] == "judged: model.generate, 4-bit + LoRA"
        and "judged: hf_dpo decoder, dense float32" in names
    )
    assert any(n.startswith("sampling K=4: hf_dpo, dense") for n in names)
    # per layer q, o 64x64, k, v 64x32 (2 of 4 heads), gate, up, down 64x128; the LM head 64 x vocab
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert report["linear_parameters"] == 2 * layer + 64 * 49152
    for r in report["lines"]:
        rows = 2 * (4 if r["line"].startswith("sampling") else 1)
        assert 0 < r["new_tokens"] <= 4 * rows
        assert r["prompt_tokens"] == report["prompt_tokens"] * rows // 2
        flops = 2 * report["linear_parameters"] * (r["new_tokens"] + r["prompt_tokens"]) / r["seconds"]
        assert r["gflops_per_s"] == pytest.approx(flops / 1e9)
        assert r["share_of_bf16_matmul"] == pytest.approx(
            flops / 1e9 / report["matmul_gflops_per_s"]["bfloat16"]
        )
    table = format_generation_table(report)
    assert "x generate" in table and "of bf16" in table and table.count("\n") == len(names) + 3
    assert linear_parameters(torch.nn.Linear(3, 5)) == 15
