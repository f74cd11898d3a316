"""`hf-dpo bench`: hf_dpo against TRL's DPOTrainer on the same model, data, batch size and LoRA, in one run.

    hf-dpo bench                                   # full: 4-bit and unquantized, every configuration
    hf-dpo bench --quick                           # 3 configurations, unquantized, a few steps
    hf-dpo bench --dataset recipes/data/demo/train.jsonl --steps 10 --warmup 2 --out runs/bench.json

The recipe (default recipes/demo.yaml) gives the LoRA settings, max_length and the data; `--dataset` overrides
the data (any prompt/chosen/rejected .jsonl); without either, synthetic arithmetic pairs are generated.

Every configuration trains in a fresh subprocess (so peak RSS is its own) for `warmup + steps` optimizer steps;
only the last `steps` are timed, and the table reports medians of the per-step rates. TRL runs with its defaults
(except bf16=False on CPU, which it needs), once as is and once with precompute_ref_log_probs=True. hf_dpo runs
with everything on and then with one optimisation off per line, so each one's share is visible.

tokens/s counts prompt+chosen and prompt+rejected tokens of the pairs trained on (the work a plain
implementation does), the same measure for every line whatever it computes internally.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hf_dpo.model.memory import peak_memory, return_freed_memory_to_os

DEMO_DATA = Path("recipes/data/demo/train.jsonl")
DEMO_RECIPE = Path("recipes/demo.yaml")

# name -> (implementation, options). hf_dpo options are DPOConfig keys.
HF_ALL = {
    "prefix_sharing": True,
    "logps_chunk_size": 256,
    "precompute_ref_log_probs": True,
    "train_sampling_strategy": "group_by_length",
}


def _checkpointing(every_n_layers: int) -> dict:
    return {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False, "every_n_layers": every_n_layers},
    }


# A bench-only option for TRL lines: the allocator setting hf_dpo applies on CPU (return_freed_memory), applied
# to TRL's process too, so that line shows how much of the memory gap is the allocator and how much the method.
SAME_ALLOCATOR = "_return_freed_memory"
CONFIGS = {
    "trl_default": ("trl", {}),
    "trl_precompute": ("trl", {"precompute_ref_log_probs": True}),
    "trl_default_same_allocator": ("trl", {SAME_ALLOCATOR: True}),
    "hf_dpo_all": ("hf_dpo", HF_ALL),
    # TRL checkpoints activations of every layer by default; these lines are hf_dpo doing the same, and doing it
    # for every other / every third decoder layer only (selective checkpointing: transformers' every_n_layers).
    "hf_dpo_all_grad_ckpt": ("hf_dpo", {**HF_ALL, **_checkpointing(1)}),
    "hf_dpo_all_ckpt_every_2": ("hf_dpo", {**HF_ALL, **_checkpointing(2)}),
    "hf_dpo_all_ckpt_every_3": ("hf_dpo", {**HF_ALL, **_checkpointing(3)}),
    "hf_dpo_no_prefix_sharing": ("hf_dpo", {**HF_ALL, "prefix_sharing": False}),
    "hf_dpo_no_ref_cache": ("hf_dpo", {**HF_ALL, "precompute_ref_log_probs": False}),
    "hf_dpo_no_chunking": ("hf_dpo", {**HF_ALL, "logps_chunk_size": 0}),
    "hf_dpo_no_length_grouping": ("hf_dpo", {**HF_ALL, "train_sampling_strategy": "random"}),
    "hf_dpo_all_return_freed_memory": ("hf_dpo", {**HF_ALL, "return_freed_memory": True}),
    "hf_dpo_plain": (
        "hf_dpo",
        {
            "prefix_sharing": False,
            "logps_chunk_size": 0,
            "precompute_ref_log_probs": False,
            "train_sampling_strategy": "random",
            "return_freed_memory": False,
        },
    ),
}
QUICK_CONFIGS = ["trl_default", "trl_precompute", "hf_dpo_all"]
ON_REQUEST = ("hf_dpo_plain", "trl_default_same_allocator", "hf_dpo_all_ckpt_every_3")  # run with --configs
DEFAULT_CONFIGS = [name for name in CONFIGS if name not in ON_REQUEST]
# Every configuration gets the same threading environment. OpenMP's default spin-waiting made every
# parallel elementwise op take ~8 ms with 2 threads on a shared 2-vCPU VM (0.7 ms passive), which swamps any
# difference between trainers; passive waiting is set unless the caller's environment says otherwise.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


# ---------------------------------------------------------------- data


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """Arithmetic prompts with a terse correct answer (chosen) and a chatty, often wrong one (rejected), of
    varied length: the shape of the demo's on-policy pairs, for when recipes/data/demo/ is not there yet."""
    rng = random.Random(seed)
    fillers = [
        "Sure! Let me work through this carefully.",
        "Great question, I am happy to help with that.",
        "Let's think about it step by step, starting from the first number.",
        "Adding numbers is one of the basic operations in arithmetic, taught early in school.",
        "I hope this helps, and feel free to ask if you have any other questions!",
    ]
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        verb, result = rng.choice([("Add", a + b), ("Multiply", a * b)])
        wrong = result + rng.choice([-10, -1, 1, 2, 10])
        chatty = " ".join(rng.sample(fillers, rng.randint(1, len(fillers))))
        rows.append(
            {
                "prompt": f"{verb} {a} and {b}.",
                "chosen": f"{result}.",
                "rejected": f"{chatty} The result is {wrong}.",
            }
        )
    return rows


def read_pairs(path: str, n: int) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if len(rows) < n:
        raise ValueError(
            f"{path} has {len(rows)} pairs; the bench needs {n} (lower --steps or --batch-size)."
        )
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows[:n]]


# ---------------------------------------------------------------- one configuration (in its own process)


def _trainer_callbacks(timer):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            timer["collated"].clear()  # batches collated before training (the reference pass) don't count
            timer["last"] = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            timer.setdefault("first_step_begin", time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            timer["steps"].append(now - timer["last"])
            timer["last"] = now

    return [StepTimer()]


class CountingCollator:
    """Wraps a collator; records prompt+chosen + prompt+rejected tokens of each batch it builds."""

    def __init__(self, inner, keys: tuple[str, str, str], sink: list):
        self.inner, self.keys, self.sink = inner, keys, sink

    def __call__(self, examples):
        p, c, r = self.keys
        self.sink.append(sum(2 * len(ex[p]) + len(ex[c]) + len(ex[r]) for ex in examples))
        return self.inner(examples)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_config(spec: dict) -> dict:
    import torch
    from datasets import Dataset

    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model, load_tokenizer, lora_config

    torch.manual_seed(spec["seed"])
    cuda = torch.cuda.is_available()
    model_cfg = ModelConfig(
        model_name_or_path=spec["model"],
        quantization=spec["quantization"],
        lora_r=spec["lora"]["r"],
        lora_alpha=spec["lora"]["alpha"],
        lora_dropout=spec["lora"]["dropout"],
        lora_target_modules=spec["lora"]["target_modules"],
    )
    tokenizer = load_tokenizer(model_cfg)
    model = load_base_model(model_cfg)
    peft_config = lora_config(model_cfg)
    rows = spec["rows"]
    common = dict(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"],
        max_steps=spec["warmup"] + spec["steps"],
        learning_rate=5e-6,
        beta=0.1,
        max_length=spec["max_length"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec["seed"],
        bf16=cuda,  # CPU: float32 (TRL's default bf16 is ~10x slower on CPU, DESIGN.md)
        use_cpu=not cuda,
    )
    timer = {"steps": [], "collated": []}
    started = time.perf_counter()
    if spec["impl"] == "trl":
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer as TRLTrainer

        conversational = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
        options = dict(spec["options"])
        if options.pop(SAME_ALLOCATOR, False) and not cuda:
            return_freed_memory_to_os()
        trainer = TRLTrainer(
            model=model,
            args=TRLConfig(**common, **options),
            train_dataset=Dataset.from_list(conversational),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=_trainer_callbacks(timer),
        )
        keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    else:
        from hf_dpo.config import DPOConfig
        from hf_dpo.train.trainer import DPOTrainer

        options = dict(spec["options"])
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, ref_logps_cache_dir=spec["cache_dir"], **options),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=_trainer_callbacks(timer),
        )
        keys = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    trainer.data_collator = CountingCollator(trainer.data_collator, keys, timer["collated"])
    data = trainer.train_dataset
    tokens_per_pair = statistics.fmean(
        2 * len(p) + len(c) + len(r) for p, c, r in zip(data[keys[0]], data[keys[1]], data[keys[2]])
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = peak_memory()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    warm = spec["warmup"]
    times = timer["steps"][warm:]
    tokens = timer["collated"][warm : warm + len(times)]
    pairs = spec["batch_size"]
    result = {
        "name": spec["name"],
        "impl": spec["impl"],
        "quantization": spec["quantization"],
        "options": spec["options"],
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "step_s": timer["steps"],
        "pairs_per_s": statistics.median(pairs / t for t in times),
        "tokens_per_s": statistics.median(n / t for n, t in zip(tokens, times)),
        "setup_s": timer.get("first_step_begin", time.perf_counter()) - started,
        "peak_rss_mb": peak["peak_rss_mb"],
        "peak_cuda_mb": peak.get("peak_cuda_allocated_mb"),
        "loss_first": logs[0]["loss"],
        "logps_chosen_first": logs[0].get("logps/chosen"),
        "loss_mean": statistics.fmean(h["loss"] for h in logs),
        "tokens_per_pair": tokens_per_pair,
        "threads": torch.get_num_threads(),
    }
    if spec["impl"] == "hf_dpo":
        result["pad_share"] = trainer.pad_share
        result["reference_forward_passes_in_training"] = trainer.reference_forward_passes
        result["prefix_sharing_used"] = trainer._prefix_sharing
    return result


# ---------------------------------------------------------------- the run and the table


def _spawn(spec: dict, timeout: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    env = {**THREAD_ENV, **os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hf_dpo.bench", "--worker", fh.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {
            "name": spec["name"],
            "quantization": spec["quantization"],
            "error": f"timed out after {timeout} s",
        }
    finally:
        os.unlink(fh.name)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"name": spec["name"], "quantization": spec["quantization"], "error": " | ".join(tail)}


def add_ratios(results: list[dict]) -> None:
    """Speed and memory of each line relative to TRL default and TRL precompute of the same quantization."""
    for quant in {r["quantization"] for r in results}:
        group = {r["name"]: r for r in results if r["quantization"] == quant and "error" not in r}
        for r in group.values():
            mem = "peak_cuda_mb" if r.get("peak_cuda_mb") else "peak_rss_mb"
            for base in ("trl_default", "trl_precompute", "trl_default_same_allocator"):
                if base in group:
                    r[f"speed_vs_{base}"] = r["pairs_per_s"] / group[base]["pairs_per_s"]
                    r[f"memory_vs_{base}"] = r[mem] / group[base][mem]


# The targets hf_dpo is held to (issue "Faster and leaner than TRL"): pairs/s over TRL default and over TRL with a
# precomputed reference, and peak memory over TRL default's, same model, data, batch and LoRA.
TARGETS = {"speed_vs_trl_default": 2.0, "speed_vs_trl_precompute": 1.4, "memory_vs_trl_default": 1.0}


def lines_meeting_targets(results: list[dict]) -> dict[str, list[str]]:
    """Per quantization, the hf_dpo lines that meet every target (needs both TRL lines in the run)."""
    met: dict[str, list[str]] = {}
    for r in results:
        if r.get("impl") != "hf_dpo" or "error" in r or not all(k in r for k in TARGETS):
            continue
        met.setdefault(r["quantization"], [])
        ok = (
            r["speed_vs_trl_default"] >= TARGETS["speed_vs_trl_default"]
            and r["speed_vs_trl_precompute"] >= TARGETS["speed_vs_trl_precompute"]
            and r["memory_vs_trl_default"] <= TARGETS["memory_vs_trl_default"]
        )
        if ok:
            met[r["quantization"]].append(r["name"])
    return met


def format_verdict(met: dict[str, list[str]]) -> str:
    head = (
        f"Lines at >= {TARGETS['speed_vs_trl_default']:g}x TRL default, >= {TARGETS['speed_vs_trl_precompute']:g}x "
        f"TRL precompute and <= {TARGETS['memory_vs_trl_default']:g}x TRL default's peak memory:"
    )
    return "\n".join([head] + [f"  {q}: {', '.join(names) or 'none'}" for q, names in met.items()])


def format_table(results: list[dict]) -> str:
    same_allocator = any("memory_vs_trl_default_same_allocator" in r for r in results)
    header = (
        f"{'configuration':<32}{'quant':>6}{'pairs/s':>9}{'tokens/s':>10}{'peak MB':>9}{'loss@1':>8}"
        f"{'setup s':>9}{'pad %':>7}{'x TRL':>7}{'x TRL-pre':>10}{'mem/TRL':>9}"
        + (f"{'mem/TRL-sa':>11}" if same_allocator else "")
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:<32}{r['quantization']:>6}  failed: {r['error']}")
            continue
        mem = r["peak_cuda_mb"] or r["peak_rss_mb"]
        pad = f"{100 * r['pad_share']:.0f}" if r.get("pad_share") is not None else "-"
        lines.append(
            f"{r['name']:<32}{r['quantization']:>6}{r['pairs_per_s']:>9.3f}{r['tokens_per_s']:>10.0f}{mem:>9.0f}"
            f"{r['loss_first']:>8.4f}{r['setup_s']:>9.1f}{pad:>7}"
            f"{r.get('speed_vs_trl_default', float('nan')):>7.2f}{r.get('speed_vs_trl_precompute', float('nan')):>10.2f}"
            f"{r.get('memory_vs_trl_default', float('nan')):>9.2f}"
            + (
                f"{r.get('memory_vs_trl_default_same_allocator', float('nan')):>11.2f}"
                if same_allocator
                else ""
            )
        )
    return "\n".join(lines)


def machine_summary() -> dict:
    import platform

    import torch

    info = {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", THREAD_ENV["OMP_WAIT_POLICY"]),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": os.getloadavg(),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "CPU",
    }
    try:
        import transformers
        import trl

        info["transformers"], info["trl"] = transformers.__version__, trl.__version__
    except ImportError:
        info["trl"] = None
    return info


def run_bench(
    model: str = "smollm2-135m-instruct",
    dataset: str | None = None,
    recipe: str | None = None,
    quantizations: tuple[str, ...] = ("4bit", "none"),
    configs: list[str] | None = None,
    batch_size: int = 4,
    steps: int = 8,
    warmup: int = 2,
    max_length: int | None = None,
    seed: int = 0,
    out: str | None = "runs/bench/bench.json",
    timeout: int = 1800,
    echo=print,
) -> dict:
    """`recipe` (default recipes/demo.yaml when present) gives the LoRA settings, max_length and the dataset;
    the bench's own options set batch size, steps and which quantizations and configurations run."""
    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["all-linear"]}
    recipe = recipe or (str(DEMO_RECIPE) if DEMO_RECIPE.is_file() else None)
    if recipe:
        from hf_dpo.config import load_recipe

        loaded = load_recipe(recipe)
        m = loaded.model
        lora = {
            "r": m.lora_r,
            "alpha": m.lora_alpha,
            "dropout": m.lora_dropout,
            "target_modules": m.lora_target_modules,
        }
        max_length = max_length or loaded.training.max_length
        if dataset is None and loaded.data.dataset_name:
            candidate = Path(loaded.data.dataset_name)
            candidate = (
                candidate / f"{loaded.data.dataset_train_split}.jsonl" if candidate.is_dir() else candidate
            )
            dataset = str(candidate) if candidate.is_file() else None
    max_length = max_length or 512
    configs = configs or DEFAULT_CONFIGS
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    # One epoch over exactly the pairs the timed run needs: every line sees the same pairs, and the reference
    # precompute (TRL's and hf_dpo's) covers exactly what is trained on.
    n_pairs = batch_size * (warmup + steps)
    dataset = dataset or (str(DEMO_DATA) if DEMO_DATA.is_file() else None)
    rows = read_pairs(dataset, n_pairs) if dataset else synthetic_pairs(n_pairs, seed)
    source = dataset or f"synthetic arithmetic pairs (seed {seed})"
    echo(
        f"bench: {model}, {n_pairs} pairs from {source}, batch {batch_size}, {warmup} warm-up + {steps} timed steps"
    )
    work = Path(tempfile.mkdtemp(prefix="hf_dpo_bench_"))
    results = []
    for quant in quantizations:
        for name in configs:
            impl, options = CONFIGS[name]
            spec = dict(
                name=name,
                impl=impl,
                options=options,
                quantization=quant,
                model=model,
                rows=rows,
                batch_size=batch_size,
                steps=steps,
                warmup=warmup,
                max_length=max_length,
                lora=lora,
                seed=seed,
                output_dir=str(work / f"{name}-{quant}"),
                cache_dir=str(
                    work / f"{name}-{quant}-ref-cache"
                ),  # a fresh cache: the pass is timed in setup
            )
            t0 = time.time()
            result = _spawn(spec, timeout)
            results.append(result)
            status = result.get("error") or f"{result['pairs_per_s']:.3f} pairs/s"
            echo(f"  {name:<28}{quant:>6}  {status}  ({time.time() - t0:.0f} s)")
    add_ratios(results)
    table = format_table(results)
    met = lines_meeting_targets(results)
    report = {
        "machine": machine_summary(),
        "setup": {
            "model": model,
            "dataset": source,
            "pairs": n_pairs,
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "max_length": max_length,
            "recipe": recipe,
            "lora": lora,
        },
        "results": results,
        "table": table,
        "targets": TARGETS,
        "lines_meeting_targets": met,
    }
    echo("")
    echo(table)
    if met:
        echo("\n" + format_verdict(met))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        echo(f"\nResults written to {out}")
    return report


def _worker_main(spec_path: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    result = run_config(spec)
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    print("usage: hf-dpo bench [--quick] [--steps N] [--warmup N] [--dataset PATH] ...", file=sys.stderr)
    sys.exit(2)
