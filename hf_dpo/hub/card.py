"""The model card of a run: model_cards/adapter_card.md rendered with huggingface_hub's ModelCard.

    card = render_card("runs/demo", repo_id="me/smollm2-dpo")   # ModelCard; card.data round-trips
    write_card("runs/demo", "me/smollm2-dpo")                    # -> runs/demo/README.md

Metadata (ModelCardData): base_model, library_name (peft for an adapter, transformers for a full fine-tune),
pipeline_tag text-generation, tags (trl, dpo, then lora and qlora when 4-bit for an adapter, hf-dpo,
base_model:adapter:<id> or base_model:finetune:<id>), datasets (Hub ids only), license, and model-index
(EvalResult) with the held-out reward accuracy, margin and judged win rate. PEFT's and transformers' own
card writers are never used: each rewrites README.md with its own metadata, dropping the other's.

The template lives at the repo root in model_cards/; hf_dpo/hub/templates/adapter_card.md is a symlink to it
that setuptools ships as package data, so an installed wheel finds it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from hf_dpo.errors import HfDpoError
from hf_dpo.files import atomic_write_text
from hf_dpo.report.rounds import ROUNDS_FILE, rounds_markdown, with_current_files

logger = logging.getLogger(__name__)


class CardError(HfDpoError, FileNotFoundError):
    """The card cannot be written: a run file or the template is missing or lacks a field."""


CARD_TEMPLATE = "adapter_card.md"
# Licenses of the built-in aliases' upstream models; anything else is "other" unless given.
KNOWN_BASE_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}
# The libraries whose versions decide what the adapter is and how it loads, in the card's "Framework versions".
FRAMEWORKS = ("hf_dpo", "transformers", "peft", "bitsandbytes", "torch", "datasets", "huggingface_hub")
DPO_BIBTEX = """@inproceedings{rafailov2023direct,
    title     = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
    author    = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and Chelsea Finn},
    booktitle = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
    year      = 2023,
    url       = {https://arxiv.org/abs/2305.18290}
}"""


def framework_versions(info: dict[str, Any]) -> dict[str, str]:
    """Versions recorded in run_info.json at training time; libraries it lacks (older runs) are read now."""
    from importlib.metadata import PackageNotFoundError, version

    recorded = info.get("framework_versions") or {}
    versions = {}
    for name in FRAMEWORKS:
        if name in recorded:
            versions[name] = recorded[name]
            continue
        try:
            versions[name] = version("hf-dpo" if name == "hf_dpo" else name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def template_path() -> Path:
    """model_cards/adapter_card.md at the repo root (source checkout, editable install), else the copy shipped
    as package data in hf_dpo/hub/templates/ (a symlink to the same file in the source tree)."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "model_cards" / CARD_TEMPLATE,
        Path(__file__).resolve().parent / "templates" / CARD_TEMPLATE,
    ):
        if candidate.is_file():
            return candidate
    raise CardError(
        f"The model card template {CARD_TEMPLATE} is missing from model_cards/ and hf_dpo/hub/templates/; "
        "reinstall hf_dpo (`pip install -e .`)."
    )


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".txt", ".arrow", ".gguf", ".safetensors", ".bin")


def _looks_like_hub_id(name: str | None) -> bool:
    """'org/name' or 'name' that is not a local path or a data file: what the Hub accepts as a repo id."""
    if not name or os.path.exists(name) or name.lower().endswith(_FILE_SUFFIXES):
        return False
    return bool(_HUB_ID.match(name)) and ".." not in name


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def public_recipe(path: Path) -> str:
    """recipe.yaml for the card and the push, with secret keys dropped even if a hand-edited file carries them."""
    from hf_dpo.config import SECRET_KEYS

    if not path.is_file():
        return "# recipe.yaml missing from the run dir\n"
    pattern = re.compile(rf"^\s*({'|'.join(map(re.escape, sorted(SECRET_KEYS)))})\s*:.*$", re.MULTILINE)
    return pattern.sub(r"# \1: (removed)", path.read_text())


# How the train split's pairs reached the model, as hf_dpo.data counts them in the data report ("prompt_formats",
# "prompt_methods"); named here as strings so the card needs no torch.
RAW_TEXT = "raw text"
HH_TRANSCRIPT = "transcript split at the last assistant turn"
RENDERED_CHAT = "rendered chat split after its last assistant header"
USAGE_QUESTION = "What is the capital of France?"


def _recipe_system_prompt(recipe: Path) -> str | None:
    import yaml

    try:
        values = yaml.safe_load(recipe.read_text()) if recipe.is_file() else None
    except yaml.YAMLError:
        return None
    prompt = values.get("system_prompt") if isinstance(values, dict) else None
    return prompt if isinstance(prompt, str) and prompt else None


def usage_example(info: dict[str, Any], recipe: Path) -> str:
    """The lines of the card's "How to use" that build the prompt and generate, in the form the model was trained
    on: its chat template (with the recipe's system prompt; also for text that came rendered in a chat format), an
    Anthropic HH transcript, or plain text. A run whose data report does not say (older runs) gets the chat
    template."""
    train = (info.get("data_report") or {}).get("train") or {}
    formats = train.get("prompt_formats") or {}
    methods = train.get("prompt_methods") or {}
    rendered = methods.get(RENDERED_CHAT, 0) > sum(methods.values()) / 2  # raw text, but in a chat format
    raw = formats.get(RAW_TEXT, 0) > sum(formats.values()) / 2 and not rendered
    if not raw:
        system = _recipe_system_prompt(recipe)
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": USAGE_QUESTION}
        ]
        return "\n".join(
            [
                f"messages = {json.dumps(turns, ensure_ascii=False)}",
                'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
                "return_dict=True)",
            ]
        )
    if methods.get(HH_TRANSCRIPT, 0) > sum(methods.values()) / 2:
        prompt = f"\\n\\nHuman: {USAGE_QUESTION}\\n\\nAssistant:"
        why = "# trained on raw Anthropic HH transcripts, without a chat template: prompt in that form"
    else:
        prompt = USAGE_QUESTION
        why = "# trained on plain-text prompts, without a chat template: prompt with the text as it is"
    return "\n".join([why, f'inputs = tokenizer("{prompt}", return_tensors="pt")'])


def headline_metrics(report: dict[str, Any] | None) -> list[tuple[str, str, float]]:
    """(metric type, metric name, value) of the card's results: the one list behind both the card's
    model-index and the `.eval_results/` entries, so the two can never disagree."""
    if report is None:
        return []
    metrics = []  # (metric_type, metric_name, estimate)
    judged, pairs = _not_held_out(report, "judged_prompts"), _not_held_out(report, "eval_pairs")
    verdict = report.get("verdict")
    if verdict:  # the primary criterion first: the very numbers of the verdict line
        name = verdict["criterion"]
        metrics.append(
            (f"{name}_rate", f"Judged {name} rate of the policy's answers{judged}", verdict["policy"])
        )
        metrics.append(
            (f"{name}_rate_reference", f"Judged {name} rate of the reference{judged}", verdict["reference"])
        )
        metrics.append(
            (
                f"{name}_rate_difference",
                f"{name} rate, policy - reference (verdict: {verdict['label']}){judged}",
                verdict["difference"],
            )
        )
    if report.get("preference"):
        pref = report["preference"]["metrics"]
        held = "Eval-split" if pairs else "Held-out"
        metrics.append(("accuracy", f"{held} reward accuracy{pairs}", pref["reward_accuracy"]))
        metrics.append(("reward_margin", f"{held} mean reward margin{pairs}", pref["rewards/margins"]))
    if report.get("behaviour"):
        win = report["behaviour"]["win_rate"]
        metrics.append(("win_rate", f"Judged win rate vs reference (ties = 1/2){judged}", win))
        if "length_controlled_win_rate" in report["behaviour"]:
            lc = report["behaviour"]["length_controlled_win_rate"]
            metrics.append(
                ("length_controlled_win_rate", f"Length-controlled win rate vs reference{judged}", lc)
            )
    return [(kind, name, round(est["value"], 4)) for kind, name, est in metrics]


def _not_held_out(report: dict[str, Any], key: str) -> str:
    """' (not held out: k of n ... are training prompts)' when eval_report.json's training_overlap counted any for
    `key` (judged_prompts | eval_pairs), else "": the metadata must not call trained-on numbers held-out."""
    overlap = report.get("training_overlap") or {}
    if not overlap.get(key):
        return ""
    what = "judged prompts" if key == "judged_prompts" else "eval pairs"
    return f" (not held out: {overlap[key]} of {overlap.get(key + '_of', '?')} {what} are training prompts)"


def eval_result_files(run_dir: str | Path) -> dict[str, str]:
    """`.eval_results/<metric>.yaml` texts (huggingface_hub's EvalResultEntry format) from the same numbers as
    the card's model-index. The dataset is the run's Hub dataset id, or its local name (named in `notes`)."""
    import yaml
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    run_dir = Path(run_dir)
    info = _read_json(run_dir / "run_info.json") or {}
    report = _read_json(run_dir / "eval_report.json")
    dataset = info.get("dataset")
    hub_dataset = dataset if _looks_like_hub_id(dataset) else None
    dataset_id = hub_dataset or (Path(str(dataset)).name if dataset else "held-out")
    notes = None if hub_dataset else "held-out split of a local dataset (not on the Hub)"
    date = (report or {}).get("created_at")
    files = {}
    for kind, name, value in headline_metrics(report):
        entry = EvalResultEntry(
            dataset_id=dataset_id,
            task_id=kind,
            value=value,
            date=date,
            # a metric on training prompts says so in its name: the notes then carry it, not "held-out split"
            notes=name if (notes is None or "not held out" in name) else notes,
        )
        # A judge names its criteria freely ('helpful/harmless'): a '/' would make a subfolder, which is not pushed.
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", kind).strip("._") or "metric"
        files[f".eval_results/{stem}.yaml"] = yaml.safe_dump(
            eval_result_entries_to_yaml([entry]), sort_keys=False
        )
    return files


def is_full_finetune(info: dict[str, Any]) -> bool:
    """Whether run_info.json records a full fine-tune (use_peft: false): the run is a whole model, no adapter."""
    return info.get("use_peft", True) is False


def card_data(info: dict[str, Any], report: dict[str, Any] | None, repo_id: str, license: str | None = None):
    """ModelCardData: base_model, library_name (peft, or transformers for a full fine-tune), tags, datasets (Hub
    ids only), license, model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    base = info.get("base_model")
    if not base:
        raise CardError("run_info.json has no 'base_model'; the card needs the base model's Hub id.")
    quant = str(info.get("quantization") or "none")
    # The Hub only accepts Hub ids as base_model; a local base is named in the card's body instead.
    hub_base = base if _looks_like_hub_id(base) else None
    if hub_base is None:
        logger.warning(
            "base model %s is not a Hub id: the card names it in its text but not as base_model.", base
        )
    # TRL's tags ("trl", "dpo": what its trainers add and the Hub filters on), then this project's
    full = is_full_finetune(info)
    adapter_tags = [] if full else ["lora"] + (["qlora"] if quant == "4bit" else [])
    tags = ["trl", "dpo", *adapter_tags, "hf-dpo"]
    tags += [f"base_model:{'finetune' if full else 'adapter'}:{hub_base}"] if hub_base else []
    dataset = info.get("dataset")
    hub_dataset = dataset if _looks_like_hub_id(dataset) else None
    # The split is held out only if eval_report.json found none of its prompts in the training data.
    trained_on = report is not None and any(
        _not_held_out(report, k) for k in ("judged_prompts", "eval_pairs")
    )
    where = dict(
        task_type="text-generation",
        dataset_type=hub_dataset or "local",
        dataset_name=Path(str(dataset)).name if dataset else "held-out",
        dataset_split="eval (not held out)" if trained_on else "held-out",
    )
    results = [
        EvalResult(**where, metric_type=kind, metric_name=name, metric_value=value)
        for kind, name, value in headline_metrics(report)
    ]
    return ModelCardData(
        base_model=hub_base,
        library_name="transformers" if full else "peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=[hub_dataset] if hub_dataset else None,
        license=license or info.get("license") or KNOWN_BASE_LICENSES.get(base, "other"),
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )


def render_card(run_dir: str | Path, repo_id: str | None = None, license: str | None = None):
    """The ModelCard of a run dir (run_info.json, recipe.yaml, eval_report.json and `hf-dpo iterate`'s
    iterate_rounds.json if present)."""
    from huggingface_hub import ModelCard

    from hf_dpo.report import markdown as report_md

    run_dir = Path(run_dir)
    info = _read_json(run_dir / "run_info.json")
    if info is None:
        raise CardError(
            f"{run_dir / 'run_info.json'} is missing: is {run_dir} a finished `hf-dpo train` run?"
        )
    report = _read_json(run_dir / "eval_report.json")
    rounds = _read_json(run_dir / ROUNDS_FILE)  # `hf-dpo iterate`'s rounds up to this one
    repo_id = repo_id or f"<your-namespace>/{run_dir.name}"
    data = card_data(info, report, repo_id, license)
    recipe = run_dir / "recipe.yaml"
    empty = {
        "preference_skipped": "not evaluated yet (run `hf-dpo eval RUN_DIR`)",
        "behaviour_skipped": "not evaluated",
    }
    rep = report or empty
    # A plot the report names but the run dir lacks (deleted, a copied run) is not pushed: no broken image.
    plots = [rel for rel in rep.get("plots") or [] if isinstance(rel, str) and (run_dir / rel).is_file()]
    beh = rep.get("behaviour")
    n_eval = (rep.get("preference") or {}).get("n")
    return ModelCard.from_template(
        data,
        template_path=str(template_path()),
        model_name=data.model_name,
        repo_id=repo_id,
        base_model=info["base_model"],
        base_model_md=(
            f"[`{data.base_model}`](https://huggingface.co/{data.base_model})"
            if data.base_model
            else f"`{info['base_model']}` (a local model)"
        ),
        license=data.license,
        full_finetune=is_full_finetune(info),
        quantized=str(info.get("quantization")) in ("4bit", "8bit"),
        quantization=info.get("quantization"),
        hf_dpo_version=info.get("hf_dpo_version", ""),
        verdict_line=report_md.verdict_line(rep),
        warnings_text=report_md.warnings_text(rep),
        summary_table=report_md.summary_table(rep),
        behaviour_text=report_md.behaviour_text(rep),
        plots_markdown=report_md.plots_markdown({**rep, "plots": plots}),
        samples_table=report_md.samples_table(rep),
        training_table=report_md.training_table(info, rep),
        rounds_table=rounds_markdown(with_current_files(rounds, info, report)) if rounds else "",
        recipe_yaml=public_recipe(recipe),
        usage_example=usage_example(info, recipe),
        framework_versions="\n".join(f"- {name}: {v}" for name, v in framework_versions(info).items()),
        citation_bibtex=DPO_BIBTEX,
        judge_note=f"judge `{beh.get('judge')}`" if beh else "no judge was run",
        n_note=(
            f"The {'eval' if _not_held_out(rep, 'eval_pairs') else 'held-out'} set has {n_eval} pairs and {beh['n'] if beh else 0} judged prompts; the intervals show "
            "how much these numbers could move on another sample of the same size."
            if n_eval
            else "There was no held-out evaluation for this run."
        ),
    )


def write_card(run_dir: str | Path, repo_id: str | None = None, license: str | None = None) -> Path:
    path = Path(run_dir) / "README.md"
    render_card(run_dir, repo_id, license).save(path)
    return path


def write_eval_results(run_dir: str | Path) -> list[Path]:
    """Write the `.eval_results/*.yaml` entries into the run dir (replacing older ones); return their paths."""
    run_dir = Path(run_dir)
    folder = run_dir / ".eval_results"
    for old in folder.glob("*.yaml"):
        old.unlink()
    written = []
    for name, text in eval_result_files(run_dir).items():
        atomic_write_text(run_dir / name, text)
        written.append(run_dir / name)
    return written
