"""Everything a run will need, checked before the model loads: fail in a second, not after minutes of work.

    preflight(recipe)              # `hf-dpo train`: called by run.run_training before load_policy
    preflight_sampling(recipe)     # `hf-dpo sample`: prompts, judge, where samples and pairs go

Checks, each raising an `HfDpoError` subclass that names the file, row or key and what to do:
- recipe values (types, ranges, choices): already done when the recipe was read (hf_dpo.validate);
- the data: every split's file readable and every row well-formed (the tokenizer-free part of
  `hf_dpo.data`: columns, types, message roles, empty or identical responses), the held-out split
  non-empty, eval_fraction leaving pairs on both sides;
- the judge: `module:function` imported, `rm:<local path>` present;
- the run dir writable (created for the check and removed again: a recipe that fails leaves no run dir);
  report_to integrations installed; a token when the recipe pushes;
- the reference-log-prob cache dir: writable, else a warning and the cache is off (it is an optimisation);
- the report's numbers: when the run will compute any (held-out pairs, or judged generations;
  `hf_dpo.report.evaluation.computes_metrics` decides, for preflight and the report alike), the report's
  `evaluate` modules are loaded now, as the report will use them (they stay loaded): a setup where they cannot
  be (no writable cache nor temporary directory) fails before training;
- last, the tokenizer (no weights: about a second) and `hf_dpo.data`'s own pipeline over every row used: the
  chat template applied (a template that refuses a row names the file, row and column), tokenized and
  truncated (a split with no pair left names max_length / max_prompt_length). The tokenized data is returned,
  so the run does not tokenize it twice.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
from pathlib import Path

from hf_dpo.config import Recipe, RecipeError
from hf_dpo.data import (
    SKIP_HINT,
    BadRow,
    DataError,
    PreferenceData,
    check_columns,
    load_preference_dataset,
    normalize_row,
    read_splits,
)
from hf_dpo.errors import HfDpoError
from hf_dpo.files import why_not_writable

logger = logging.getLogger(__name__)


def preflight(recipe: Recipe) -> PreferenceData:
    """Check a training recipe end to end without loading a model's weights. Returns the tokenized train and
    held-out data (what `hf_dpo.data.load_preference_dataset` gives). Raises RecipeError / DataError /
    JudgeError."""
    args = recipe.training
    if int(os.environ.get("RANK", "0")) == 0:  # only the main process writes the run dir
        check_writable_dir(args.output_dir, "output_dir")
    check_local_path(recipe.model.model_name_or_path, "model_name_or_path")
    check_local_path(recipe.model.adapter_name_or_path, "adapter_name_or_path")
    check_model_and_adapter(recipe.model)
    check_lora_targets(recipe.model.model_name_or_path, tuple(recipe.model.lora_target_modules))
    check_attn_implementation(recipe.model.attn_implementation)
    check_resume(args)
    check_report_to(args)
    check_push(args)
    splits = read_data(recipe)
    check_data(recipe, splits)  # tokenizer-free: a malformed row is named before the tokenizer loads
    check_eval_strategy(recipe, splits)
    if recipe.sampling.judge:
        check_judge(recipe.sampling.judge)
    check_ref_cache(args)
    check_report(recipe, splits)
    check_report_prompts(recipe, splits)
    return tokenize_data(recipe, splits)


def preflight_sampling(recipe: Recipe) -> None:
    """Check a sampling recipe before the reference model loads: prompts files, judge, output places, and that no
    output file would replace another or other data."""
    from hf_dpo.pairs.formats import check_output_files, read_prompts, sampling_splits

    cfg = recipe.sampling
    if not cfg.prompts_file:
        raise RecipeError(
            "prompts_file is not set: give a .txt (one prompt a line) or a .jsonl with a prompt column."
        )
    for key in ("prompts_file", "test_prompts_file"):
        path = getattr(cfg, key)
        if path:
            read_prompts(path, recipe.data.prompt_column)
    for key in ("samples_file", "pairs_file"):
        path = getattr(cfg, key)
        if path:
            check_writable_dir(Path(path).parent, f"the directory of {key}")
    check_writable_dir(recipe.training.output_dir, "output_dir")
    check_output_files(recipe, list(sampling_splits(recipe)))
    check_local_path(recipe.model.model_name_or_path, "model_name_or_path")
    check_local_path(recipe.model.adapter_name_or_path, "adapter_name_or_path")
    check_model_and_adapter(recipe.model)
    check_attn_implementation(recipe.model.attn_implementation)
    if cfg.judge:
        check_judge(cfg.judge)


# ---------------------------------------------------------------- places


def check_local_path(value: str | None, key: str) -> None:
    """A value that is clearly a local path (starts with / ./ ../ ~) must exist; Hub ids are left to the loader."""
    if not value or not value.startswith(("/", "./", "../", "~")):
        return
    if not Path(value).expanduser().exists():
        raise RecipeError(f"key '{key}': {value} does not exist. Give an existing directory or a Hub id.")


def check_model_and_adapter(cfg) -> None:
    """A local model_name_or_path is a model, not a LoRA adapter (an SFT run's output: adapter_config.json, no
    config.json; transformers would load its base with it, and the new LoRA would go on top under the same name);
    a local adapter_name_or_path is an adapter (peft would find out only after the base model has loaded)."""
    model = Path(cfg.model_name_or_path).expanduser()
    if _is_file(model / "adapter_config.json") and not _is_file(model / "config.json"):
        base = _adapter_base(model / "adapter_config.json") or "<its base model>"
        raise RecipeError(
            f"key 'model_name_or_path': {cfg.model_name_or_path} is a LoRA adapter (adapter_config.json), not a "
            f"model. To train on from it, set adapter_name_or_path: {cfg.model_name_or_path} and "
            f"model_name_or_path: {base}; it is then the reference too."
        )
    if not cfg.adapter_name_or_path:
        return
    adapter = Path(cfg.adapter_name_or_path).expanduser()
    if os.path.exists(adapter) and not _is_file(adapter / "adapter_config.json"):  # False for no path at all
        raise RecipeError(
            f"key 'adapter_name_or_path': {cfg.adapter_name_or_path} has no adapter_config.json, so it is no LoRA "
            "adapter. Give the output_dir of a finished run (or one of its checkpoint-N directories), or a Hub id."
        )


def _is_file(path: Path) -> bool:
    """Path.is_file, False where a Hub id cannot even be looked up as a path (too long a name, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _adapter_base(config_file: Path) -> str | None:
    """The base model an adapter was trained on, as its adapter_config.json names it (None if unreadable)."""
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):  # a cut or foreign file: the message names no base then
        return None
    return base if isinstance(base, str) and base else None


@functools.lru_cache(maxsize=16)
def _linear_layer_names(model_dir: str) -> tuple[str, ...] | None:
    """Dotted names of the linear layers of a local model, from its config alone (built on the meta device: no
    weights read). None when that cannot be done; the loader then reports what is wrong."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        # a Hub id: its cached config only, never the network (offline, the Hub's retries took ~30 s)
        config = AutoConfig.from_pretrained(model_dir, local_files_only=not Path(model_dir).is_dir())
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return tuple(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    except Exception:  # noqa: BLE001 - a best-effort early check; loading the model names real problems
        logger.debug("Could not list the layers of %s before loading it", model_dir, exc_info=True)
        return None


def check_lora_targets(model: str, targets: tuple[str, ...]) -> None:
    """Every `lora_target_modules` name matches a linear layer of the model, checked from its config (a local
    or built-in model's, or a Hub model's when the Hub cache holds it) before any weight is read. A config that
    is not at hand or cannot be built (custom code) leaves the check to the loader."""
    if not targets or "all-linear" in targets:
        return
    from hf_dpo.model.loading import MODEL_ALIASES, resolve_model_path

    if model.lower() in MODEL_ALIASES:
        path = resolve_model_path(model)
    elif Path(model).expanduser().is_dir():
        path = str(Path(model).expanduser())
    else:
        path = model  # a Hub id: peft would find a wrong name only after the download and the load
    names = _linear_layer_names(path)
    if not names:
        return
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise RecipeError(
            f"key 'lora_target_modules': {', '.join(missing)} matches no linear layer of {model} "
            f"(its layers: {', '.join(leaves)}; or all-linear)."
        )


def check_attn_implementation(name: str | None) -> None:
    """An attention kernel transformers knows, and, for flash attention, its package (or the kernels library it
    falls back to) installed. transformers checks both only once the model's weights are fetched, and raises a
    ValueError / ImportError. A Hub kernel ('org/repo') is left to transformers."""
    if not name:
        return
    import transformers.utils
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name in known or "/" in name:
        version = re.fullmatch(r"flash_attention_(\d)", name)
        available = (
            getattr(transformers.utils, f"is_flash_attn_{version.group(1)}_available", None)
            if version
            else None
        )
        if available is not None and not available() and not transformers.utils.is_kernels_available():
            raise RecipeError(
                f"key 'attn_implementation': {name} needs the flash-attn package on a CUDA GPU, which this "
                "machine lacks (pip install flash-attn, or pip install kernels for the Hub build). Set "
                "attn_implementation: sdpa (or leave it unset for transformers' default)."
            )
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    raise RecipeError(
        f"key 'attn_implementation': '{name}' is not one of {', '.join(known)} (or a Hub kernel 'org/repo')."
        + (f" Did you mean '{close[0]}'?" if close else "")
    )


def check_writable_dir(directory: str | os.PathLike, what: str) -> Path:
    """Prove `directory` takes a file, leaving the disk as it was (`hf_dpo.files.why_not_writable`). RecipeError
    naming `what` otherwise. Returns the path, `~` expanded."""
    problem = why_not_writable(directory)
    if problem is not None:
        raise RecipeError(
            f"{what} {directory} cannot be written to ({problem}). Choose a writable directory."
        )
    return Path(directory).expanduser()


def _complete_checkpoint(path: Path) -> bool:
    """A checkpoint the Trainer can resume: saved to the end (trainer_state.json is written last)."""
    return (path / "trainer_state.json").is_file()


def check_resume(args) -> None:
    """`resume_from_checkpoint`: a checkpoint dir that exists and was saved to the end; `true` (or yes): the
    last complete checkpoint in output_dir, skipping one cut short by a kill while saving."""
    resume = getattr(args, "resume_from_checkpoint", None)
    if resume is None or resume is False or (isinstance(resume, str) and not resume.strip()):
        return
    text = str(resume).strip()
    if resume is True or text.lower() in ("true", "yes", "1", "last"):
        out = Path(args.output_dir)
        found = sorted(
            (p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
        )
        complete = [p for p in found if _complete_checkpoint(p)]
        if not complete:
            raise RecipeError(
                f"key 'resume_from_checkpoint': no complete checkpoint-N in {out} to resume from"
                + (f" ({', '.join(p.name for p in found)} were cut short)" if found else "")
                + ". Drop resume_from_checkpoint to start afresh."
            )
        if complete[-1] != found[-1]:
            logger.warning("%s was cut short while saving; resuming from %s.", found[-1], complete[-1])
        args.resume_from_checkpoint = str(complete[-1])
        return
    path = Path(text).expanduser()
    if not path.is_dir():
        raise RecipeError(
            f"key 'resume_from_checkpoint': {text} is not a directory. Give a checkpoint-N directory of "
            f"a run (e.g. {args.output_dir}/checkpoint-100), or true for the last one."
        )
    if not _complete_checkpoint(path):
        raise RecipeError(
            f"key 'resume_from_checkpoint': {text} has no trainer_state.json: it is not a checkpoint, or it was "
            "cut short while saving. Give an earlier checkpoint-N, or true for the last complete one."
        )


def check_report_to(args) -> None:
    """Every `report_to` integration installed (transformers would fail only when the Trainer is built)."""
    wanted = args.report_to or []
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    wanted = [w for w in wanted if w not in ("none", "all")]
    if not wanted:
        return
    from transformers.integrations import get_available_reporting_integrations

    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    except ImportError:  # pragma: no cover - older transformers
        INTEGRATION_TO_CALLBACK = {}
    available = set(get_available_reporting_integrations())
    for name in wanted:
        if INTEGRATION_TO_CALLBACK and name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(
                f"key 'report_to': '{name}' is not a reporting integration "
                f"(known: {', '.join(sorted(INTEGRATION_TO_CALLBACK))}, or none)."
            )
        if name not in available:
            raise RecipeError(
                f"key 'report_to': '{name}' is not installed (pip install {name}), or set report_to: none."
            )


def check_push(args) -> None:
    """A recipe that pushes needs a valid repo id and a token before training starts, not after it ends."""
    if not getattr(args, "push_to_hub", False):
        return
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = args.hub_model_id or Path(args.output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise RecipeError(f"key 'hub_model_id': '{repo_id}' is not a valid Hub repo id ({err}).") from None
    if not (getattr(args, "hub_token", None) or os.environ.get("HF_TOKEN") or get_token()):
        raise RecipeError(
            "push_to_hub is on but there is no Hub token: set HF_TOKEN (or run `hf auth login`), or set "
            "push_to_hub: false and push later with `hf-dpo push`."
        )


def check_ref_cache(args) -> None:
    """The on-disk reference cache is an optimisation: an unwritable directory turns it off, with a warning."""
    from hf_dpo.train import ref_cache

    if getattr(args, "precompute_ref_log_probs", False) is False:
        return
    root = ref_cache.cache_root(getattr(args, "ref_logps_cache_dir", None))
    if root is None:
        return
    try:
        check_writable_dir(root, "ref_logps_cache_dir")
    except RecipeError as err:
        logger.warning("%s The reference log-probs are kept in memory only for this run.", err)
        args.ref_logps_cache_dir = "none"


def check_report(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """The report's `evaluate` modules loaded now, when the report will compute numbers with them (the report's
    own decision, `hf_dpo.report.evaluation.computes_metrics`; about a second, taken from the end of the run:
    they stay loaded). EvaluationError when they cannot be (no writable cache nor temporary directory), before
    training rather than after it."""
    from hf_dpo.report.evaluate_metrics import preload_report_modules
    from hf_dpo.report.evaluation import computes_metrics

    cfg, sampling = recipe.data, recipe.sampling
    # check_data has made sure a held-out split it finds, or eval_fraction's share, is not empty.
    has_eval = bool(cfg.dataset_test_split and cfg.dataset_test_split in splits) or cfg.eval_fraction > 0
    if computes_metrics(has_eval, sampling.test_prompts_file, sampling.judge, sampling.eval_num_generations):
        preload_report_modules()


def check_report_prompts(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """test_prompts_file, read as the report will read it when it judges generations on it (its own decision,
    `hf_dpo.report.evaluation.behaviour_skip_reason`): a missing, broken or empty file is named now, not after
    training, when the card and the push are still to come."""
    cfg, sampling = recipe.data, recipe.sampling
    has_eval = bool(cfg.dataset_test_split and cfg.dataset_test_split in splits) or cfg.eval_fraction > 0
    check_judged_prompts(
        sampling.test_prompts_file, sampling.judge, sampling.eval_num_generations, has_eval, cfg.prompt_column
    )


def check_judged_prompts(
    path: str | None, judge, num_generations: int, has_eval: bool = True, prompt_column: str = "prompt"
) -> None:
    """The report's prompt file (test_prompts_file) read as the report reads it, when it will judge on it."""
    from hf_dpo.pairs.formats import read_prompts
    from hf_dpo.report.evaluation import behaviour_skip_reason

    if not path or behaviour_skip_reason(has_eval, path, judge, num_generations):
        return
    try:
        read_prompts(path, prompt_column)  # as hf_dpo.report.prompts.prompts_from_file reads it
    except HfDpoError as err:
        raise RecipeError(f"key 'test_prompts_file' (the report's judged prompts): {err}") from None


# ---------------------------------------------------------------- judge


def check_judge(spec: str) -> None:
    """Import a `module:function` judge; for `rm:<path>`, the path must exist when it is a local one, and its
    config must load (a directory that holds no model, a Hub id mistyped or out of reach)."""
    from hf_dpo.pairs.judges import JudgeError, check_reward_model_config, load_judge, reward_model_location

    spec = str(spec).strip()
    if spec.startswith("rm:"):
        target = spec[3:].strip()
        if not target:
            raise JudgeError(
                f"judge '{spec}': give the reward model after 'rm:' (a Hub id or a local directory)."
            )
        if target.startswith(("/", "./", "../", "~")) and not Path(target).expanduser().exists():
            raise JudgeError(f"judge '{spec}': {target} does not exist.")
        from transformers import AutoConfig

        location = reward_model_location(target)
        try:  # its config alone (no weights), as the judge reads it: it loads only after training, in the report
            try:  # the Hub cache (or the directory) first: offline, the Hub's retries take ~30 s
                config = AutoConfig.from_pretrained(location, local_files_only=True)
            except (OSError, ValueError):
                config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
            raise JudgeError(
                f"judge '{spec}': cannot be loaded ({reason}). Give a reward model's local directory or a Hub id "
                "reachable from here (or already in the Hub cache)."
            ) from None
        check_reward_model_config(config, spec)  # as RewardModelJudge will, now rather than after training
        return
    judge = load_judge(spec)
    fn = getattr(judge, "fn", None)
    if fn is not None:
        import inspect

        try:
            inspect.signature(fn).bind("prompt", "completion")
        except TypeError as err:
            raise JudgeError(
                f"judge '{spec}' cannot be called as {spec.split(':')[-1]}(prompt, completion) ({err}). A judge "
                "takes the prompt and one completion and returns a score."
            ) from None
        except ValueError:  # a builtin without a signature: it is called, and checked, at the first score
            pass


# ---------------------------------------------------------------- data


def read_data(recipe: Recipe) -> dict[str, tuple[str, list[dict]]]:
    """Every split's rows ({split: (source, rows)}, as `hf_dpo.data.read_splits`), read errors made DataError."""
    cfg = recipe.data
    try:
        return read_splits(cfg)
    except (DataError, RecipeError):
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"{cfg.dataset_name}: not UTF-8 text ({err}). Save the data as UTF-8.") from None
    except OSError as err:
        raise DataError(f"{cfg.dataset_name}: cannot be read ({err.strerror or err}).") from None


def check_data(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> dict[str, int]:
    """Check every row of `read_data`'s splits as `hf_dpo.data` will, without tokenizing. {split: usable rows}."""
    cfg = recipe.data
    counts = {}
    for split, (source, rows) in splits.items():
        counts[split] = _check_rows(source, rows, cfg)
    train = cfg.dataset_train_split
    if counts[train] == 0:
        source = splits[train][0]
        raise DataError(
            f"{source}: no usable pairs ({len(splits[train][1])} rows read, none valid). {SKIP_HINT}"
        )
    test = cfg.dataset_test_split
    if test and test in counts and counts[test] == 0:
        raise DataError(
            f"{splits[test][0]}: the held-out split '{test}' has no usable pairs. Add pairs to it, or set "
            "dataset_test_split: null (and eval_fraction: 0) to train without one."
        )
    if not (test and test in counts) and cfg.eval_fraction > 0:
        n = counts[train]
        n_eval = max(1, round(n * cfg.eval_fraction))
        if n - n_eval < 1:
            raise DataError(
                f"{splits[train][0]}: eval_fraction {cfg.eval_fraction} of {n} usable pairs leaves none to train "
                "on. Lower eval_fraction or add pairs."
            )
    return counts


def check_eval_strategy(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """An `eval_strategy` other than no needs a held-out split; transformers' Trainer refuses it only once it is
    built, after the model has loaded."""
    cfg, strategy = recipe.data, recipe.training.eval_strategy
    strategy = getattr(strategy, "value", strategy)  # an IntervalStrategy once TrainingArguments has run
    has_eval = bool(cfg.dataset_test_split and cfg.dataset_test_split in splits) or cfg.eval_fraction > 0
    if strategy in (None, "no") or has_eval:
        return
    where = (
        f"no split '{cfg.dataset_test_split}' in {cfg.dataset_name}"
        if cfg.dataset_test_split
        else "dataset_test_split is null"
    )
    raise RecipeError(
        f"key 'eval_strategy': {strategy} evaluates on the held-out split during training, but there is no "
        f"held-out split ({where}, eval_fraction 0). Set eval_strategy: no, or give one: dataset_test_split naming "
        "a split of the dataset, or eval_fraction (e.g. 0.1) to hold out a share of the train split."
    )


def _check_rows(source: str, rows: list, cfg) -> int:
    check_columns(source, rows, cfg)
    usable = 0
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{source}, row {index}: expected an object with prompt/chosen/rejected keys, got "
                f"{type(row).__name__}."
            )
        try:
            normalize_row(row, cfg)
        except BadRow as bad:
            if cfg.on_bad_rows == "skip":
                continue
            raise bad.error(source, index) from None
        usable += 1
    return usable


def load_checked_tokenizer(recipe: Recipe):
    """The run's tokenizer (files only, no weights); one that cannot be loaded is a RecipeError naming the key."""
    from hf_dpo.model.loading import load_tokenizer

    try:
        return load_tokenizer(recipe.model)
    except (HfDpoError, OSError, ValueError) as err:
        reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
        raise RecipeError(
            f"key 'model_name_or_path': {reason} Give a built-in alias (smollm2-135m-instruct), a local model "
            "directory, or a Hub id (reachable, or already in the Hub cache)."
        ) from None
    except (
        TypeError,
        AttributeError,
    ) as err:  # transformers on a config.json that is valid JSON but no mapping
        raise RecipeError(
            f"key 'model_name_or_path': the tokenizer or config.json of {recipe.model.model_name_or_path} cannot be "
            f"read ({type(err).__name__}: {err}). Copy or download the model again."
        ) from None


def tokenize_data(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> PreferenceData:
    """Every row the run will use through `hf_dpo.data`'s pipeline (chat template, tokenizer, truncation), with
    the run's tokenizer: a row the template refuses, or a split that truncation empties, is named now."""
    return load_preference_dataset(
        recipe.data, load_checked_tokenizer(recipe), recipe.training, splits=splits
    )
