"""`run_bench`: every (data set, quantization, line) in a fresh process, then the table, verdicts and JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from hf_dpo.bench.data_shapes import DATA_SETS, load_data_set
from hf_dpo.bench.lines import DEFAULT_LINES, LINES, TARGETS, BenchError, check_lines
from hf_dpo.bench.table import add_ratios, format_compute_table, format_table, format_verdicts, verdicts
from hf_dpo.errors import quoted, shortened
from hf_dpo.validate import BATCH, STEPS, TOKENS

DEMO_RECIPE = Path("recipes/demo.yaml")
DEFAULT_LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["all-linear"]}
# Every line gets the same threading environment. OpenMP's default spin-waiting made every parallel
# elementwise op take ~8 ms with 2 threads on a shared 2-vCPU VM (0.7 ms passive), which swamps any
# difference between trainers; passive waiting is set unless the caller's environment says otherwise.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def require_trl() -> None:
    if importlib.util.find_spec("trl") is None:
        raise BenchError(
            "hf-dpo bench compares hf_dpo with TRL's DPOTrainer, and TRL is not installed: "
            "pip install 'hf-dpo[bench]' (or pip install 'trl>=1.0')."
        )


QUANTIZATIONS = ("4bit", "8bit", "none")


def check_settings(
    quantizations: tuple[str, ...], batch_size: int, steps: int, warmup: int, max_length: int, out: str | None
) -> None:
    """The bench's own options, before any line starts: each line is a fresh process that loads a model, so a bad
    value met there costs minutes per line, and an --out that cannot be written would lose the finished table."""
    from hf_dpo.files import why_not_writable

    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown:
        raise BenchError(
            f"--quantization {shortened(' '.join(unknown), 200)}: choose from {', '.join(QUANTIZATIONS)}."
        )
    for option, value, low, bound in (
        ("--batch-size", batch_size, 1, BATCH),
        ("--steps", steps, 1, STEPS),
        ("--warmup", warmup, 0, STEPS),
        ("--max-length", max_length, 1, TOKENS),
    ):
        if value < low:
            raise BenchError(f"{option} must be >= {low}, got {value}.")
        if value > bound[0]:
            raise BenchError(
                f"{option} {quoted(value)} is over {bound[0]} ({bound[1]}): give at most {bound[0]}."
            )
    if out:
        if Path(out).is_dir():
            raise BenchError(
                f"--out {out} is a directory; give the JSON file to write, e.g. {Path(out) / 'bench.json'}."
            )
        problem = why_not_writable(Path(out).parent)
        if problem:
            raise BenchError(f"--out {out} cannot be written ({problem}); give another --out.")


def recipe_settings(recipe: str | None) -> tuple[dict, str | None, str | None]:
    """(LoRA settings, demo data path, recipe used) from the recipe (default recipes/demo.yaml if present).

    Read as plain YAML: the bench needs five keys, not a validated training configuration."""
    recipe = recipe or (str(DEMO_RECIPE) if DEMO_RECIPE.is_file() else None)
    if not recipe:
        return dict(DEFAULT_LORA), None, None
    import yaml

    try:
        keys = yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())  # YAML's messages span lines; the error is one line
        raise BenchError(f"--recipe {recipe} cannot be read ({type(err).__name__}: {reason}).") from None
    if not isinstance(keys, dict):
        raise BenchError(f"--recipe {recipe} must be a mapping of key: value, not {type(keys).__name__}.")
    lora = {name: keys.get(f"lora_{name}", value) for name, value in DEFAULT_LORA.items()}
    data = Path(keys["dataset_name"]) if keys.get("dataset_name") else None
    if data is not None and data.is_dir():
        data = data / f"{keys.get('dataset_train_split', 'train')}.jsonl"
    return lora, (str(data) if data is not None and data.is_file() else None), recipe


def spawn(spec: dict, timeout: int) -> dict:
    """Run one line in a fresh interpreter; its result, or {"error": ...}."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    env = {**THREAD_ENV, **os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    failed = {k: spec[k] for k in ("name", "data_set", "quantization", "regime")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hf_dpo.bench", "--worker", fh.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timed out after {timeout} s"}
    finally:
        os.unlink(fh.name)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {**failed, "error": " | ".join(tail)}


def line_specs(names: list[str], data_set: str, quant: str, shared: dict, work: Path) -> list[dict]:
    """One worker spec per line; a warm-cache line points at the cache directory its cold line fills."""
    specs = []
    for name in check_lines(names):
        line = LINES[name]
        cache_owner = line.warm_cache_of or name
        specs.append(
            {
                **shared,
                "name": name,
                "impl": line.impl,
                "regime": line.regime,
                "options": line.trainer_options(),
                "data_set": data_set,
                "quantization": quant,
                "output_dir": str(work / f"{data_set}-{quant}-{name}"),
                "cache_dir": str(work / f"{data_set}-{quant}-{cache_owner}-ref-cache"),
            }
        )
    return specs


def run_line(spec: dict, timeout: int, echo) -> dict:
    started = time.time()
    result = spawn(spec, timeout)
    line = LINES[spec["name"]]
    result.update(baseline=line.baseline, warm_cache_of=line.warm_cache_of)
    status = result.get("error") or f"{result['end_to_end_s']:.1f} s end to end"
    echo(
        f"  {spec['data_set']:<12}{spec['quantization']:>5}  {spec['name']:<24}{status}  ({time.time() - started:.0f} s)"
    )
    return result


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
    import transformers
    import trl

    info["transformers"], info["trl"] = transformers.__version__, trl.__version__
    return info


def matmul_rates(before: dict[str, float] | None = None) -> dict[str, float]:
    """GFLOP/s of a (512 x 2048) @ (2048 x 2048) matmul in float32 and bfloat16 (a training batch's rows), measured
    in this process between lines; the higher of this and `before` kept (a busy spell of a shared machine would
    otherwise set a floor below what the lines reached)."""
    import torch

    from hf_dpo.bench.generation import matmul_rate

    rates = {name: matmul_rate(getattr(torch, name), rows=512) / 1e9 for name in ("float32", "bfloat16")}
    return {name: max(rate, (before or {}).get(name, 0.0)) for name, rate in rates.items()}


def write_report(report: dict, out: str | None, echo) -> None:
    echo("")
    echo(report["table"])
    if report["compute_table"]:
        echo("\n" + report["compute_table"])
    if report["verdicts"]:
        echo("\n" + format_verdicts(report["verdicts"]))
    echo(f"\nload average (1, 5, 15 min) at the end: {report['machine']['load_average_end']}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        echo(f"Results written to {out}")


def run_bench(
    model: str = "smollm2-135m-instruct",
    data_sets: tuple[str, ...] = DATA_SETS,
    recipe: str | None = None,
    quantizations: tuple[str, ...] = ("4bit",),
    lines: list[str] | None = None,
    batch_size: int = 4,
    steps: int = 4,
    warmup: int = 1,
    max_length: int = 256,
    seed: int = 0,
    out: str | None = "runs/bench/bench.json",
    timeout: int = 1800,
    echo=print,
) -> dict:
    """One epoch over `batch_size * steps` pairs of each data set, every line in a fresh process.

    `recipe` (default recipes/demo.yaml) gives the LoRA settings and the demo data; `warmup` first steps are
    left out of the per-step medians (the end-to-end time counts every step)."""
    require_trl()
    lines = check_lines(lines or DEFAULT_LINES)
    check_settings(quantizations, batch_size, steps, warmup, max_length, out)
    lora, demo_path, recipe = recipe_settings(recipe)
    n_pairs = batch_size * steps
    sources = {name: load_data_set(name, n_pairs, seed, demo_path) for name in data_sets}
    machine = machine_summary()
    rates = matmul_rates()
    echo(
        f"bench: {model}, {n_pairs} pairs per data set, batch {batch_size}, {steps} steps (1 epoch), max_length "
        f"{max_length}, LoRA r {lora['r']}; load average {machine['load_average_1_5_15']}"
    )
    shared = dict(
        model=model,
        batch_size=batch_size,
        steps=steps,
        warmup=warmup,
        max_length=max_length,
        lora=lora,
        seed=seed,
    )
    results = run_all(sources, quantizations, lines, shared, timeout, echo)
    machine["load_average_end"] = os.getloadavg()
    machine["matmul_gflops_per_s"] = matmul_rates(rates)
    setup = {
        **shared,
        "recipe": recipe,
        "pairs": n_pairs,
        "data_sets": {k: src for k, (_, src) in sources.items()},
    }
    report = build_report(machine, setup, lines, results)
    write_report(report, out, echo)
    return report


def run_all(sources: dict, quantizations, lines: list[str], shared: dict, timeout: int, echo) -> list[dict]:
    """Every line on every data set and quantization, each in a fresh process; ratios added."""
    work = Path(tempfile.mkdtemp(prefix="hf_dpo_bench_"))  # output and reference-cache directories
    results = []
    for data_set, (rows, _) in sources.items():
        for quant in quantizations:
            for spec in line_specs(lines, data_set, quant, {**shared, "rows": rows}, work):
                results.append(run_line(spec, timeout, echo))
    add_ratios(results)
    return results


def build_report(machine: dict, setup: dict, lines: list[str], results: list[dict]) -> dict:
    return {
        "machine": machine,
        "setup": setup,
        "lines": {name: asdict(LINES[name]) for name in lines},
        "results": results,
        "table": format_table(results),
        # hf-dpo bench measures this CPU's matmul floor; the GPU check's lines (scripts/gpu) measure none
        "compute_table": format_compute_table(results, rates)
        if (rates := machine.get("matmul_gflops_per_s"))
        else None,
        "targets": TARGETS,
        "verdicts": verdicts(results),
    }
