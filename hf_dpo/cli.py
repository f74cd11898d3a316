"""The `hf-dpo` command: wires config, modeling, data, trainer, evaluation and hub together.

    hf-dpo train RECIPE [--key value ...]    train a recipe (any recipe key can be overridden)
    hf-dpo plan RECIPE [--gpu-memory 24GB]   estimate peak memory before downloading anything
    hf-dpo data RECIPE [--rows N]            what training will see: data report, rows as the model gets them
    hf-dpo merge RUN_DIR OUT                 merge the adapter into a full-precision copy of the base
    hf-dpo eval RUN_DIR [--judge SPEC]       write the evaluation report of a run
    hf-dpo push RUN_DIR --repo-id ORG/NAME   push adapter (or full model), card, report and plots to the Hub
    hf-dpo bench [--quick]                   hf_dpo vs TRL's DPOTrainer, end to end: speed, memory, loss
    hf-dpo sample RECIPE [--key value ...]   on-policy pairs: sample the reference, label by the judge
    hf-dpo iterate RECIPE --rounds N         iterative DPO: sample from the last policy, label, train on, N rounds
    hf-dpo label SAMPLES.jsonl              label sampled pairs by hand in the browser

Each subcommand is one `_add_*` function (its arguments) and one `cmd_*` function (what it runs); the algorithms live in the
modules they call. Why one file over 400 lines: it is every subcommand's arguments and runner, each pair short, and
`hf-dpo --help` is built from all of them in one parser.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys

from hf_dpo.argv import numbers_read_as_values
from hf_dpo.errors import quoted
from hf_dpo.validate import EXACT_FLOAT_INT, GENERATIONS, PAIRS, ROUNDS, TOKENS

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP's default spin-waiting made every small CPU op ~10x slower on 2-core machines (a demo training step
# ~45 s instead of ~5 s); it must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

logger = logging.getLogger("hf_dpo")


def cmd_train(args: argparse.Namespace) -> int:
    from hf_dpo.run import run_training

    run_training(args.recipe, args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dpo", description="Direct Preference Optimization for Hugging Face models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_keys,
        _add_sample,
        _add_iterate,
        _add_label,
        _add_plan,
        _add_data,
        _add_merge,
        _add_eval,
        _add_push,
        _add_bench,
    ):
        add(sub)
    return numbers_read_as_values(parser)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="Train a recipe: hf-dpo train RECIPE [--key value ...]",
        description="Train a recipe. Every recipe key can be overridden as --key value; "
        "`hf-dpo keys` lists them all with their help.",
        add_help=True,
    )
    p.add_argument("recipe", nargs="?", help="Path to a YAML recipe, e.g. recipes/demo.yaml")
    p.set_defaults(func=cmd_train, takes_overrides=True)


def _add_keys(sub) -> None:
    p = sub.add_parser(
        "keys",
        help="List every recipe key by section, one line each: hf-dpo keys [WORD] (with WORD: the matching keys' "
        "whole help)",
    )
    p.add_argument("word", nargs="?", help="Show only keys whose name contains WORD, with their whole help.")
    p.set_defaults(func=cmd_keys)


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="Step 1 of DPO: sample K completions per prompt, label best vs worst: hf-dpo sample RECIPE",
        description="Sample num_samples_per_prompt completions for every prompt of prompts_file (and "
        "test_prompts_file) from the reference policy, appending to a resumable samples file; if the recipe "
        "has a judge, write chosen/rejected pairs (train.jsonl, test.jsonl) and a dataset card. "
        "Recipe keys can be overridden as --key value.",
    )
    p.add_argument("recipe", help="Path to a YAML recipe, e.g. recipes/demo_pairs.yaml")
    p.set_defaults(func=cmd_sample, takes_overrides=True)


def _add_iterate(sub) -> None:
    p = sub.add_parser(
        "iterate",
        help="Iterative (on-policy) DPO in rounds: hf-dpo iterate RECIPE --rounds N [--key value ...]",
        description="Train in rounds from one recipe holding the training keys and the sampling and labelling keys "
        "(prompts_file, test_prompts_file, num_samples_per_prompt, sampling_temperature, max_new_tokens, judge, "
        "pairs_per_prompt, min_chosen_score, ...). Round 1 trains on the recipe's dataset when it names one, else "
        "on pairs sampled from the starting model. Round k >= 2 samples from round k-1's policy (its adapter), "
        "labels the samples with the judge, and trains from round k-1's adapter with round k-1's policy as the "
        "reference, so each round's report judges what it added. Each round is a run dir output_dir/round_K/; "
        "output_dir/iterate_report.md puts the rounds side by side, and each round's card carries them. "
        "Rerunning the command resumes: finished rounds are kept, an interrupted sampling resumes, an interrupted "
        "training starts again; a finished iterate or a changed recipe is refused (overwrite_output_dir: true "
        "starts afresh). Recipe keys can be overridden as --key value.",
    )
    p.add_argument("recipe", help="Path to a YAML recipe, e.g. recipes/demo_iterate.yaml")
    p.add_argument(
        "--rounds",
        type=_int_at_least(1, ROUNDS),
        required=True,
        help="rounds to run in all (a rerun with more adds rounds to a finished iterate)",
    )
    p.set_defaults(func=cmd_iterate, takes_overrides=True)


def cmd_iterate(args: argparse.Namespace) -> int:
    from hf_dpo.iterate import run_iterate

    report = run_iterate(args.recipe, args.rounds, args.overrides)
    print(f"Rounds side by side: {report}")
    return 0


def _add_label(sub) -> None:
    p = sub.add_parser(
        "label",
        help="Label samples by hand in the browser: hf-dpo label SAMPLES.jsonl [--out PAIRS.jsonl]",
        description="Serve a local page showing each prompt with its sampled completions, two at a time side by "
        "side (every distinct answer is shown; identical ones are never paired); pick one (1/2), tie (t), skip (s), "
        "undo (u). Every decision is written to disk at once (OUT.decisions.jsonl, keyed to the answers it was made "
        "on) and OUT is rewritten from it; reopening resumes at the first unlabeled pair.",
    )
    p.add_argument("samples", help="a samples file written by `hf-dpo sample`")
    p.add_argument("--out", help="pairs file to write (default: SAMPLES with .pairs.jsonl)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: only this machine)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.set_defaults(func=cmd_label)


def _add_plan(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="Estimate a recipe's peak memory before downloading: hf-dpo plan RECIPE [--gpu-memory 24GB]",
        description="Peak-memory estimate of a recipe's training run from the model's architecture (no weights "
        "downloaded): base weights, LoRA + optimizer, activations, logits. Says whether it fits and which knob to "
        "turn if not. Recipe keys can be overridden as --key value. Exit status 1 when it does not fit.",
    )
    p.add_argument("recipe", help="Path to a YAML recipe, e.g. recipes/zephyr-7b-qlora.yaml")
    p.add_argument("--gpu-memory", help="memory to fit in, e.g. 24GB (default 24GB; --device cpu: the RAM)")
    p.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda", help="a GPU (default) or the CPU process"
    )
    p.set_defaults(func=cmd_plan, takes_overrides=True)


def _add_data(sub) -> None:
    p = sub.add_parser(
        "data",
        help="Show what training will see, without loading the model: hf-dpo data RECIPE [--rows N]",
        description="Read and tokenize the recipe's data exactly as `hf-dpo train` does, with the tokenizer only "
        "(no model weights): the data report of each split (rows, pairs, skipped rows by reason, truncation, how "
        "each prompt was found, chat template or raw text, token lengths), then the first rows of the train split "
        "(or --split eval) as the model receives them, prompt (context) and answers (trained on) marked apart, "
        "with special tokens and every cut shown. Recipe keys can be overridden as --key value.",
    )
    p.add_argument("recipe", help="Path to a YAML recipe, e.g. recipes/demo.yaml")
    p.add_argument("--rows", type=_int_at_least(0, PAIRS), default=3, help="rows to show (default 3)")
    p.add_argument(
        "--split",
        choices=["train", "eval"],
        default="train",
        help="whose rows: train (default) or the held-out eval",
    )
    p.add_argument("--tokens", action="store_true", help="show every token with its id")
    p.add_argument("--full", action="store_true", help="show long prompts and answers whole")
    p.set_defaults(func=cmd_data, takes_overrides=True)


def cmd_data(args: argparse.Namespace) -> int:
    from hf_dpo.data import check_data, read_data

    if not args.verbose:  # its per-split INFO lines are the overview's own summary; its warnings stay
        logging.getLogger("hf_dpo.data").setLevel(logging.WARNING)
    splits = None
    if args.sections.data is not None:  # a data error is named before torch and transformers are imported
        splits = read_data(args.sections)
        check_data(args.sections, splits)
    from hf_dpo.config import load_recipe
    from hf_dpo.data.view import data_overview
    from hf_dpo.model.checks import load_checked_tokenizer

    recipe = load_recipe(args.recipe, args.overrides)
    splits = splits or read_data(recipe)
    tokenizer = load_checked_tokenizer(recipe)  # files only: no weights
    print(
        data_overview(
            recipe,
            tokenizer,
            rows=args.rows,
            tokens=args.tokens,
            full=args.full,
            split=args.split,
            splits=splits,
        )
    )
    return 0


def _add_merge(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="Merge a run's LoRA adapter into a full-precision base: hf-dpo merge RUN_DIR OUT",
        description="Load the base unquantized, apply the run's adapter, merge_and_unload, save model + tokenizer. "
        "An adapter trained on a 4-bit base, merged into the full-precision base, gives slightly different "
        "outputs than the 4-bit base + adapter it was evaluated with (the NF4 rounding of the base weights).",
    )
    p.add_argument("run_dir", help="output_dir of an `hf-dpo train` run (or any peft adapter directory)")
    p.add_argument("out", help="directory for the merged model (must be new or empty)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto (float32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16",
    )
    p.set_defaults(func=cmd_merge)


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="Evaluate a finished run: hf-dpo eval RUN_DIR [--judge SPEC] [--num-generations N] "
        "[--test-prompts-file F --output-dir DIR]",
        description="Held-out preference metrics and judged generations of policy vs reference; writes "
        "eval_report.json, eval_report.md, plots/ and every judged answer (eval_generations.jsonl) into the run "
        "dir.",
    )
    p.add_argument("run_dir", help="output_dir of an `hf-dpo train` run")
    p.add_argument("--judge", help="module:function, rm:<path or hub id> (default: the recipe's judge)")
    p.add_argument(
        "--num-generations",
        type=_int_at_least(0, GENERATIONS),
        default=None,
        help="held-out prompts to generate for (0: skip); default: the recipe's eval_num_generations",
    )
    p.add_argument(
        "--max-new-tokens",
        type=_int_at_least(1, TOKENS),
        default=None,
        help="default: the recipe's eval_max_new_tokens",
    )
    p.add_argument(
        "--test-prompts-file",
        default=None,
        help="judge these prompts (one a line, or .jsonl with the recipe's prompt column; all of them unless "
        "--num-generations says) instead of the recipe's test_prompts_file; needs --output-dir",
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="write the report here (a new directory) instead of into the run dir, whose report and card then "
        "stay as they are",
    )
    p.set_defaults(func=cmd_eval)


def _int_at_least(low: int, bound: tuple[int, str]):
    """An argparse type: a whole number >= low and <= bound (value, what a value past it would mean). Below it, a
    count reached generation after the model had loaded (--max-new-tokens -5), fell back silently (0 is false to
    `or`), or was reported as 0; past it, a typo started work that would never end."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = _exponent_whole_number(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if value > bound[0]:
            raise argparse.ArgumentTypeError(
                f"{quoted(value)} is over {bound[0]} ({bound[1]}): give at most {bound[0]}"
            )
        return value

    return parse


def _add_push(sub) -> None:
    p = sub.add_parser(
        "push",
        help="Push a run to the Hub: hf-dpo push RUN_DIR --repo-id ORG/NAME",
        description="One commit with the adapter (a full fine-tune: the model), model card, eval report, plots, recipe "
        "and tokenizer. "
        "The token comes from HF_TOKEN (or --token, or `hf auth login`) and is never printed or written.",
    )
    p.add_argument("run_dir", help="output_dir of an `hf-dpo train` run")
    p.add_argument("--repo-id", required=True, help="ORG/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to push to (created from main if missing)")
    p.add_argument("--commit-message", help="commit message")
    p.add_argument("--token", help="Hub token (prefer the HF_TOKEN environment variable)")
    p.set_defaults(func=cmd_push)


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="hf_dpo vs TRL's DPOTrainer, end to end: wall time, peak memory, first loss, per data shape",
        description="Train the same pairs with TRL's DPOTrainer (as is, and with a precomputed reference) and with "
        "hf_dpo (cold and warm reference cache), each in a fresh process, without and with activation "
        "checkpointing on both sides, on data sets of several shapes. Prints the end-to-end table and the "
        "verdict against the targets, and writes them as JSON. Needs TRL: pip install 'hf-dpo[bench]'.",
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="model alias, Hub id or local directory")
    p.add_argument(
        "--data-sets",
        nargs="+",
        default=None,
        help="demo, long_prompt, long_answer, multi_turn (generated) and/or .jsonl paths (default: all four)",
    )
    p.add_argument(
        "--steps", type=int, default=4, help="optimizer steps: one epoch over batch-size x steps pairs"
    )
    p.add_argument("--warmup", type=int, default=1, help="first steps left out of the per-step medians")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    p.add_argument(
        "--recipe", help="recipe giving LoRA settings and the demo data (default: recipes/demo.yaml)"
    )
    p.add_argument("--max-length", type=int, default=256, help="max prompt+completion tokens")
    p.add_argument("--quantization", nargs="+", default=["4bit"], help="4bit and/or none")
    p.add_argument(
        "--lines", nargs="+", help="subset of lines (default: both regimes, TRL x2 + hf_dpo x2 each)"
    )
    p.add_argument("--quick", action="store_true", help="demo pairs, no checkpointing, 4 steps")
    p.add_argument(
        "--generation",
        action="store_true",
        help="instead: tokens/s of judged decoding and sampling against model.generate on the 4-bit + LoRA demo "
        "model, and each line's FLOP/s against this machine's fp32 and bf16 matmul rates (no TRL needed)",
    )
    p.add_argument("--out", default="runs/bench/bench.json", help="JSON results file")
    p.set_defaults(func=cmd_bench)


def _exponent_whole_number(text: str) -> int:
    """A whole number written as a float (`1e3`), as a recipe's int key takes it (`eval_num_generations: 1e3`);
    one with a fraction, not finite or past 2^53 (where floats skip whole numbers) is refused."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and abs(number) <= EXACT_FLOAT_INT):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {quoted(text)}")
    return int(number)


def cmd_eval(args: argparse.Namespace) -> int:
    from hf_dpo.run import evaluate_run

    report = evaluate_run(
        args.run_dir,
        judge=args.judge,
        num_generations=args.num_generations,
        max_new_tokens=args.max_new_tokens,
        test_prompts_file=args.test_prompts_file,
        output_dir=args.output_dir,
    )
    from hf_dpo.report.markdown import console_summary

    print(console_summary(report, args.run_dir, args.output_dir))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from hf_dpo.hub.push import push_run

    url = push_run(
        args.run_dir,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    if url:
        print(f"Pushed {args.run_dir} to {args.repo_id}: {url}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_dpo.data import check_data, read_data

    data = args.sections.data
    if data is not None and data.dataset_name and Path(data.dataset_name).exists():
        # local data, which the plan measures: a data error is named before torch and transformers are imported
        check_data(args.sections, read_data(args.sections))
    from hf_dpo.config import load_recipe
    from hf_dpo.plan.fit import parse_size, plan_recipe

    memory = parse_size(args.gpu_memory, what="--gpu-memory") if args.gpu_memory is not None else None
    plan = plan_recipe(load_recipe(args.recipe, args.overrides), device=args.device, memory=memory)
    print(plan.report(args.recipe))
    return 0 if plan.fits else 1


def cmd_merge(args: argparse.Namespace) -> int:
    from hf_dpo.model.merge import merge_run

    out = merge_run(args.run_dir, args.out, dtype=args.dtype)
    print(f"Merged model written to {out} (load it with AutoModelForCausalLM.from_pretrained('{out}')).")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from hf_dpo.config import load_recipe
    from hf_dpo.pairs.labelling import no_pair_account
    from hf_dpo.pairs.sampling import run_sampling
    from hf_dpo.preflight import preflight_sampling

    recipe = load_recipe(args.recipe, args.overrides)
    preflight_sampling(recipe)  # prompts, judge, output files and places: before the reference model loads
    report = run_sampling(recipe, outputs_checked=True)  # the preflight checked the output files
    for split, st in report["splits"].items():
        line = f"{split}: {st['prompts']} prompts ({st['sampled_now']} sampled now in {st['seconds']:.0f} s, "
        print(line + f"{st['resumed']} resumed) -> {st['samples_file']}")
        if "pairs" in st:  # labelled: what became of every prompt, every reason counted
            print(
                f"  {st['pairs']} pair{'' if st['pairs'] == 1 else 's'} from {st['prompts_with_pairs']} of "
                f"{st['prompts']} prompts -> {st['pairs_file']}; prompts without a pair: "
                f"{no_pair_account(st, zeros=True)}; pairs dropped below min_chosen_score: "
                f"{st['below_min_chosen']}"
            )
    if "card" in report:
        print(f"Dataset card: {report['card']}")
    else:
        samples = report["splits"]["train"]["samples_file"]
        print(f"No judge in the recipe: label by hand with `hf-dpo label {samples}`")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from hf_dpo.pairs.label_server import serve

    serve(args.samples, args.out, host=args.host, port=args.port)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hf_dpo.bench import QUICK_LINES, run_bench
    from hf_dpo.bench.data_shapes import DATA_SETS

    if args.generation:
        import json
        from pathlib import Path

        from hf_dpo.bench.generation import format_generation_table, run_generation_bench

        report = run_generation_bench(model_name=args.model)
        print(format_generation_table(report))
        if args.out:
            out = Path(args.out).with_name("generation.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2))
            print(f"Results written to {out}")
        return 0
    data_sets = args.data_sets or (["demo"] if args.quick else list(DATA_SETS))
    if args.quick:
        args.steps, args.lines = min(args.steps, 4), args.lines or QUICK_LINES
    run_bench(
        model=args.model,
        data_sets=tuple(data_sets),
        recipe=args.recipe,
        quantizations=tuple(args.quantization),
        lines=args.lines,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        max_length=args.max_length,
        out=args.out,
    )
    return 0


# The end of a help text's first sentence: a full stop before a capital, not the one in "e.g." or "i.e.".
FIRST_SENTENCE = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`])")


def cmd_keys(args: argparse.Namespace) -> int:
    from hf_dpo.config.keys import recipe_key_sections

    width = shutil.get_terminal_size((120, 24)).columns
    for title, keys in recipe_key_sections():
        shown = [key for key in keys if not args.word or args.word.lower() in key.name.lower()]
        if not shown:
            continue
        print(f"# {title}")
        for key in shown:
            text = key.help if args.word else FIRST_SENTENCE.split(key.help, maxsplit=1)[0].rstrip(".")
            line = f"  {key.name:<32} {key.default:<14} {text}"
            # One line a key: the first sentence, cut to the terminal; `hf-dpo keys WORD` gives it whole.
            print(line if args.word or len(line) <= width else line[: width - 1] + "…")
        print()
    return 0


NO_RECIPE = "\0no-recipe"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _reads_as_option(sub: argparse.ArgumentParser, token: str) -> bool:
    """Whether subcommand `sub` reads `token` as an option: one of its own, also as `--opt=value`, abbreviated
    (`--priv` for `--private`) or with a value stuck on (`-hx`), or, for a command that takes recipe overrides,
    any `--key` (a recipe key, checked later by the recipe loader)."""
    name = token.split("=", 1)[0]
    if name in sub._option_string_actions:
        return True
    if not name.startswith("--"):
        return token[:2] in sub._option_string_actions  # -hx: -h with x stuck on; -5GB names nothing
    if sub.get_default("takes_overrides"):
        return True
    return sub.allow_abbrev and any(option.startswith(name) for option in sub._option_string_actions)


def _attach_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--gpu-memory -5GB` -> `--gpu-memory=-5GB`: argparse takes a value that starts with '-' (and is not a
    plain number) for an option and says only "expected one argument"; attached, the value reaches the command,
    whose check names the option and says what is wrong with it. A token the command reads as an option
    (`_reads_as_option`) is never taken as a value: `--commit-message --revision=dev` stays an error."""
    commands = _subcommands(parser)
    start = next((i for i, token in enumerate(argv) if token in commands), None)
    if start is None:
        return argv
    sub = commands[argv[start]]
    takes_one_value = {
        option for action in sub._actions if action.nargs is None for option in action.option_strings
    }
    out, i = argv[: start + 1], start + 1
    while i < len(argv):
        token, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if token == "--":  # everything after it is positional already
            return out + argv[i:]
        if (
            token in takes_one_value
            and nxt is not None
            and nxt.startswith("-")
            and nxt != "--"
            and not _reads_as_option(sub, nxt)
        ):
            out.append(f"{token}={nxt}")
            i += 2
        else:
            out.append(token)
            i += 1
    return out


def _mark_missing_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`hf-dpo train --key value` (no recipe): stop argparse from taking `value` as the recipe path."""
    commands = _subcommands(parser)
    for i, token in enumerate(argv):
        if token in commands:
            takes = commands[token].get_default("takes_overrides")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if takes and nxt is not None and nxt.startswith("--") and nxt != "--help":
                return argv[: i + 1] + [NO_RECIPE] + argv[i + 1 :]
            break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Subcommands that take recipe overrides keep unknown --key value pairs for the recipe loader,
    # which checks them against every recipe key and names the nearest one on a typo.
    argv = _mark_missing_recipe(parser, _attach_dash_values(parser, argv))
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "recipe", None) == NO_RECIPE:
        args.recipe = None
    if getattr(args, "takes_overrides", False):
        args.overrides = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from hf_dpo.errors import HfDpoError

    try:
        if getattr(args, "takes_overrides", False):
            from hf_dpo.config.early import check_recipe_early

            # The recipe's YAML, keys and hf_dpo's own values, before the command imports torch and transformers
            # (many seconds)
            args.sections = check_recipe_early(args.recipe, args.overrides)
        return args.func(args)
    except HfDpoError as err:  # anything else is a bug in hf_dpo and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
