"""Generation and the floor: tokens/s of the report's judged decoding and of sampling, against `model.generate`
on the 4-bit + LoRA model, and each line's achieved FLOP/s against this machine's measured matmul rate.

    python -m hf_dpo.bench.generation [--prompts 32] [--max-new-tokens 48]   # = hf-dpo bench --generation

A decoding step multiplies each row by every weight once: 2·N FLOPs a token for the N parameters of the linear
layers (LM head included; attention over the cache is left out, it is small at these lengths). `FLOP/s` is
2·N x (prompt + generated tokens) over the line's wall time; `of fp32` / `of bf16` divide it by the rate of a
(96 x 2048) @ (2048 x 2048) matmul in that dtype, measured before and after the lines (the higher kept): the
rate a decoder of this model could reach on this machine at that batch. The lines run one after another in this process, each twice with the
median kept; the machine's load average is printed beside the table (other processes slow every line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch

REPEATS = 2


@dataclass
class GenerationLine:
    name: str
    dtype: str
    seconds: float
    prompt_tokens: int
    new_tokens: int  # the tokens of the answers, up to their end token
    flops: float

    def row(self, rates: dict[str, float]) -> dict:
        flops_per_s = self.flops / self.seconds
        return {
            "line": self.name,
            "dtype": self.dtype,
            "seconds": self.seconds,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "tokens_per_s": self.new_tokens / self.seconds,
            "gflops_per_s": flops_per_s / 1e9,
            "share_of_fp32_matmul": flops_per_s / rates["float32"],
            "share_of_bf16_matmul": flops_per_s / rates["bfloat16"],
        }


def matmul_rate(dtype: torch.dtype, rows: int = 96, width: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of a (rows x width) @ (width x width) matmul in `dtype` on CPU, the median of `repeats`."""
    a, w = torch.randn(rows, width, dtype=dtype), torch.randn(width, width, dtype=dtype)
    a @ w  # first call: allocation, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ w
        times.append(time.perf_counter() - start)
    return 2 * rows * width * width / statistics.median(times)


def linear_parameters(model) -> int:
    """Parameters of every Linear (4-bit ones counted unpacked): the weights a decoding step multiplies by."""
    total = 0
    for name, module in model.named_modules():
        # bitsandbytes' Linear4bit is a Linear too; LoRA's A and B are left out (r x width each: small)
        if isinstance(module, torch.nn.Linear) and ".lora_" not in name:
            total += module.in_features * module.out_features
    return total


def _timed(run) -> tuple[float, list[list[int]]]:
    """Median wall time of REPEATS runs and the last run's completions."""
    times, out = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _cut_at_end(rows: list[list[int]], ends: set[int]) -> list[list[int]]:
    return [row[: next((i + 1 for i, t in enumerate(row) if t in ends), len(row))] for row in rows]


def run_generation_bench(
    model_name: str = "smollm2-135m-instruct",
    prompts_file: str = "recipes/data/demo/prompts_test.txt",
    num_prompts: int = 32,
    max_new_tokens: int = 48,
    samples_per_prompt: int = 4,
    echo=print,
) -> dict:
    """The demo model, 4-bit NF4 + a LoRA adapter (B not zero), greedy and sampled decoding of `num_prompts`
    held-out prompts; one dict per line plus the matmul rates and the load average."""
    from hf_dpo.config import DataConfig, ModelConfig, SamplingConfig
    from hf_dpo.data import prompt_token_ids
    from hf_dpo.model.loading import keep_4bit_layers_trainable, load_policy, pick_dtype
    from hf_dpo.model.reference import decoding_plan, dense_copy
    from hf_dpo.pairs.sampling import sample_token_ids
    from hf_dpo.report.generation import end_token_ids, generate

    rates = {"float32": matmul_rate(torch.float32), "bfloat16": matmul_rate(torch.bfloat16)}
    echo(
        f"matmul (96 x 2048) @ (2048 x 2048): fp32 {rates['float32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)"
    )
    cfg = ModelConfig(model_name_or_path=model_name, quantization="4bit", lora_r=16, lora_alpha=32)
    model, tokenizer = load_policy(cfg)
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained adapter's size of update: the folded weights differ from the base
            torch.nn.init.normal_(param, std=0.02)
    keep_4bit_layers_trainable(
        model
    )  # the training-time function (bitsandbytes' CPU inference kernel is bf16)
    model.eval()
    prompts = open(prompts_file, encoding="utf-8").read().splitlines()[:num_prompts]
    prompt_ids = [prompt_token_ids(p, tokenizer, DataConfig()) for p in prompts]
    prompt_tokens = sum(len(p) for p in prompt_ids)
    ends = end_token_ids(model, tokenizer)
    per_token = 2 * linear_parameters(model)
    plan = decoding_plan(model)
    lines: list[GenerationLine] = []

    def add(name: str, dtype: torch.dtype, run, rows_per_prompt: int = 1) -> None:
        seconds, out = _timed(run)
        new, prompt = sum(len(c) for c in out), prompt_tokens * rows_per_prompt
        flops = per_token * (prompt + new) * 1.0
        lines.append(GenerationLine(name, str(dtype).replace("torch.", ""), seconds, prompt, new, flops))
        echo(f"  {name:<46}{seconds:7.1f} s  {new / seconds:7.1f} tokens/s")

    def hf_generate(m, do_sample: bool, k: int):
        tokenizer.padding_side = "left"
        rows = [ids for ids in prompt_ids for _ in range(k)]
        batch = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = m.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=0.8 if do_sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )  # (rows, T + new)
        return _cut_at_end(out[:, batch["input_ids"].shape[1] :].tolist(), ends)

    compute = pick_dtype(cfg.torch_dtype)  # the 4-bit layers' compute dtype
    add("judged: model.generate, 4-bit + LoRA", compute, lambda: hf_generate(model, False, 1))
    for dtype in dict.fromkeys([torch.float32, plan.dtype]):
        dense = dense_copy(model, dtype)
        add(
            f"judged: hf_dpo decoder, dense {str(dtype)[6:]}",
            dtype,
            lambda d=dense: generate(d, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, batch_size=96),
        )
    sampling = SamplingConfig(
        num_samples_per_prompt=samples_per_prompt, sampling_temperature=0.8, max_new_tokens=max_new_tokens
    )
    seeds = [[1000 * i + k for k in range(samples_per_prompt)] for i in range(len(prompt_ids))]
    add(
        f"sampling K={samples_per_prompt}: model.generate, 4-bit + LoRA",
        compute,
        lambda: hf_generate(model, True, samples_per_prompt),
        samples_per_prompt,
    )
    dense = dense_copy(model, plan.dtype)

    def hf_dpo_sampling():
        return sample_token_ids(dense, tokenizer, prompt_ids, seeds, sampling)[0]

    add(
        f"sampling K={samples_per_prompt}: hf_dpo, dense {str(plan.dtype)[6:]}",
        plan.dtype,
        hf_dpo_sampling,
        samples_per_prompt,
    )
    # measured again at the end, the higher kept: on a shared machine the first measure may fall in a busy spell,
    # and a floor below what the lines reached says nothing
    for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        rates[dtype_name] = max(rates[dtype_name], matmul_rate(dtype))
    return {
        "matmul_gflops_per_s": {k: v / 1e9 for k, v in rates.items()},
        "prompts": len(prompt_ids),
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "linear_parameters": per_token // 2,
        "lines": [line.row(rates) for line in lines],
        "load_average_end": os.getloadavg(),
    }


HEADER = (
    f"{'line':<46}{'dtype':>9}{'s':>7}{'tokens':>8}{'tokens/s':>9}{'x generate':>11}{'GFLOP/s':>9}"
    f"{'of fp32':>8}{'of bf16':>8}"
)


def format_generation_table(report: dict) -> str:
    """The lines, each judged / sampling line's speed over its group's `model.generate` line."""
    rates = report["matmul_gflops_per_s"]
    out = [
        f"generation, {report['prompts']} prompts, at most {report['max_new_tokens']} new tokens; matmul floor: "
        f"fp32 {rates['float32']:.0f} GFLOP/s, bf16 {rates['bfloat16']:.0f} GFLOP/s",
        HEADER,
        "-" * len(HEADER),
    ]
    baseline = {}
    for r in report["lines"]:
        group = r["line"].split(":")[0]
        baseline.setdefault(group, r["tokens_per_s"])
        out.append(
            f"{r['line']:<46}{r['dtype']:>9}{r['seconds']:>7.1f}{r['new_tokens']:>8}{r['tokens_per_s']:>9.1f}"
            f"{r['tokens_per_s'] / baseline[group]:>11.2f}{r['gflops_per_s']:>9.1f}"
            f"{100 * r['share_of_fp32_matmul']:>7.0f}%{100 * r['share_of_bf16_matmul']:>7.0f}%"
        )
    out.append(f"load average (1, 5, 15 min) at the end: {report['load_average_end']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    report = run_generation_bench(num_prompts=args.prompts, max_new_tokens=args.max_new_tokens)
    print(format_generation_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
