"""hf_dpo.bench: the parts that need no model (ratios, table, token counting, data); `make bench` runs the rest."""

import pytest

from hf_dpo.bench import CONFIGS, CountingCollator, add_ratios, format_table, synthetic_pairs


def result(name, quant, pairs_per_s, rss, **extra):
    return {
        "name": name,
        "quantization": quant,
        "pairs_per_s": pairs_per_s,
        "tokens_per_s": 100 * pairs_per_s,
        "peak_rss_mb": rss,
        "peak_cuda_mb": None,
        "loss_first": 0.6931,
        "setup_s": 1.0,
        **extra,
    }


def test_ratios_are_per_quantization_against_both_trl_lines():
    results = [
        result("trl_default", "4bit", 0.5, 2000),
        result("trl_precompute", "4bit", 1.0, 1800),
        result("hf_dpo_all", "4bit", 2.0, 1500, pad_share=0.02),
        result("trl_default", "none", 1.0, 3000),
        result("hf_dpo_all", "none", 3.0, 3300),
        {"name": "hf_dpo_no_chunking", "quantization": "none", "error": "boom"},
    ]
    add_ratios(results)
    four = results[2]
    assert four["speed_vs_trl_default"] == pytest.approx(4.0)
    assert four["speed_vs_trl_precompute"] == pytest.approx(2.0)
    assert four["memory_vs_trl_default"] == pytest.approx(0.75)
    assert results[4]["speed_vs_trl_default"] == pytest.approx(3.0)  # against the unquantized TRL line
    assert "speed_vs_trl_precompute" not in results[4]  # no such baseline in that group
    table = format_table(results)
    assert "hf_dpo_all" in table and "4.00" in table and "failed: boom" in table


def test_counting_collator_counts_prompt_twice():
    seen = []
    collate = CountingCollator(lambda examples: len(examples), ("p", "c", "r"), seen)
    assert collate([{"p": [1, 2], "c": [3], "r": [4, 5, 6]}, {"p": [1], "c": [2], "r": [3]}]) == 2
    assert seen == [2 * 2 + 1 + 3 + 2 * 1 + 1 + 1]


def test_every_hf_dpo_line_differs_from_all_on_by_one_switch():
    all_on = CONFIGS["hf_dpo_all"][1]
    for name, (impl, options) in CONFIGS.items():
        if impl == "hf_dpo" and name.startswith("hf_dpo_no_"):
            changed = {k for k in all_on if options.get(k) != all_on[k]}
            assert len(changed) == 1, (name, changed)


def test_synthetic_pairs_are_seeded_and_varied():
    rows = synthetic_pairs(20, seed=1)
    assert rows == synthetic_pairs(20, seed=1)
    assert len({len(r["rejected"]) for r in rows}) > 5  # varied lengths: length grouping has work to do
    assert all(r["chosen"] != r["rejected"] for r in rows)


def test_same_allocator_line_is_trl_with_hf_dpos_allocator_setting_only():
    from hf_dpo.bench import SAME_ALLOCATOR

    impl, options = CONFIGS["trl_default_same_allocator"]
    assert impl == "trl" and options == {SAME_ALLOCATOR: True}
    assert CONFIGS["hf_dpo_all_return_freed_memory"][1]["return_freed_memory"] is True
    results = [
        result("trl_default", "4bit", 0.5, 2000),
        result("trl_default_same_allocator", "4bit", 0.5, 1600),
        result("hf_dpo_all", "4bit", 1.5, 1500),
    ]
    add_ratios(results)
    assert results[2]["memory_vs_trl_default"] == pytest.approx(0.75)
    assert results[2]["memory_vs_trl_default_same_allocator"] == pytest.approx(1500 / 1600)
    assert "0.94" in format_table(results)


def test_verdict_names_only_lines_meeting_all_three_targets():
    from hf_dpo.bench import format_verdict, lines_meeting_targets

    results = [
        result("trl_default", "4bit", 0.5, 2000, impl="trl"),
        result("trl_precompute", "4bit", 0.6, 2000, impl="trl"),
        result("fast_but_big", "4bit", 1.5, 2100, impl="hf_dpo"),  # 3x, 2.5x, 1.05x memory: no
        result("fast_and_lean", "4bit", 1.2, 1800, impl="hf_dpo"),  # 2.4x, 2.0x, 0.9x: yes
        result("lean_but_slow", "4bit", 0.8, 1500, impl="hf_dpo"),  # 1.6x: no
        result("edge", "4bit", 1.0, 2000, impl="hf_dpo"),  # exactly 2x, 1.67x, 1.0x: yes
        result("hf_only", "none", 3.0, 1000, impl="hf_dpo"),  # no TRL lines for 'none': no verdict
    ]
    add_ratios(results)
    met = lines_meeting_targets(results)
    assert met == {"4bit": ["fast_and_lean", "edge"]}
    assert "4bit: fast_and_lean, edge" in format_verdict(met)
