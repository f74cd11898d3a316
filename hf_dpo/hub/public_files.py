"""What one push sends: which files of the run dir go (`files_to_push`: the adapter, or a full fine-tune's model,
with card, report, recipe and tokenizer), and their public form (`public_files`): `adapter_config.json` names the
base model's Hub id, and absolute paths of this machine in the
pushed text files (recipe, card, report) become names relative to the run dir or the base name of the model /
data directory. Binary and tokenizer files go byte-exact."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from hf_dpo.hub.card import public_recipe
from hf_dpo.hub.errors import PushError
from hf_dpo.model_files import WEIGHT_INDEXES, adapter_dir_problem, model_dir_problem
from hf_dpo.report.generations_file import GENERATIONS_FILE
from hf_dpo.report.rounds import ROUNDS_FILE

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# A full fine-tune's model as save_pretrained writes it; its weights: model.safetensors, or shards and their index.
MODEL_FILES = ("config.json", "generation_config.json")
REPORT_FILES = ("eval_report.json", "eval_report.md", "evaluate_results.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
# Text files whose absolute local paths are rewritten on the way out (tokenizer.json / vocab stay byte-exact).
SCRUBBED_SUFFIXES = (".md", ".yaml", ".yml")
SCRUBBED_JSON = (
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "eval_report.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def files_to_push(run_dir: str | Path) -> list[Path]:
    """The files of one push, relative to run_dir: adapter (or a full fine-tune's model: config, weights), card,
    report (with every judged answer, when the report names them), `hf-dpo iterate`'s rounds table, plots, recipe,
    tokenizer."""
    run_dir = Path(run_dir)
    names = [
        *weight_files(run_dir),
        "README.md",
        *REPORT_FILES,
        *files_named_by_report(run_dir),
        ROUNDS_FILE,
        "recipe.yaml",
    ]
    names += TOKENIZER_FILES
    found = [Path(n) for n in names if (run_dir / n).is_file()]
    found += sorted(p.relative_to(run_dir) for p in (run_dir / "plots").glob("*.png"))
    found += sorted(p.relative_to(run_dir) for p in (run_dir / ".eval_results").glob("*.yaml"))
    # The push also writes (and clears) .eval_results/ and the card's record: a link there would reach outside.
    written = [Path(n) for n in (".eval_results", ".hf_dpo_card.sha256") if (run_dir / n).is_symlink()]
    _refuse_links_out(run_dir, found + written)
    return found


def is_full_model_dir(run_dir: Path) -> bool:
    """A full fine-tune's run dir: the model's config.json and no adapter (a LoRA run holds adapter_config.json)."""
    return (run_dir / "config.json").is_file() and not (run_dir / "adapter_config.json").exists()


def weight_files(run_dir: Path) -> list[str]:
    """The trained weights' files of a run dir, checked whole: the adapter's, or a full fine-tune's config and
    weights (model.safetensors, or its shards and their index). PushError naming what is missing or cut short."""
    if is_full_model_dir(run_dir):
        if problem := model_dir_problem(run_dir, tokenizer=False):
            raise PushError(
                f"{problem}: refusing to push a broken model. Copy the run dir again from where it was trained, "
                "or train it again.",
                "invalid",
            )
        shards = sorted(p.name for p in run_dir.glob("model*.safetensors"))
        return [*MODEL_FILES, *shards, *(name for name in WEIGHT_INDEXES if name.startswith("model."))]
    missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
    if missing:
        raise PushError(
            f"{run_dir} has no {', '.join(missing)}: push a finished `hf-dpo train` run (its output_dir).",
            "invalid",
        )
    if problem := adapter_dir_problem(run_dir):  # a cut-short file would be published as the adapter
        raise PushError(
            f"{problem}: refusing to push a broken adapter. Copy the run dir again from where it was trained, or "
            "train it again.",
            "invalid",
        )
    return list(ADAPTER_FILES)


def _refuse_links_out(run_dir: Path, found: list[Path]) -> None:
    """PushError naming each file that is a link to (or under a linked folder of) a place outside run_dir: the
    upload reads through links, so it would publish that outside file, and writing the card would overwrite it."""
    root = run_dir.resolve()
    outside = [(rel, (run_dir / rel).resolve()) for rel in found]
    outside = [(rel, target) for rel, target in outside if not target.is_relative_to(root)]
    if outside:
        named = "; ".join(f"{run_dir / rel} -> {target}" for rel, target in outside)
        raise PushError(
            f"{named}: link(s) to a file outside the run dir {run_dir}; a push sends only the run's own files. "
            "Replace each link with a copy of the file if it belongs to the run, or delete it, then push again.",
            "invalid",
        )


def files_named_by_report(run_dir: Path) -> list[str]:
    """[eval_generations.jsonl] when the run's eval_report.json names it, else []. It goes byte-exact, the rows
    that report's numbers were counted from; a file left beside a report that judged nothing (a copied run dir,
    an `hf-dpo eval` stopped before its report) belongs to no report and is not pushed."""
    try:
        report = json.loads((run_dir / "eval_report.json").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # missing or damaged: names nothing
        return []
    named = report.get("generations_file") if isinstance(report, dict) else None
    return [GENERATIONS_FILE] if named == GENERATIONS_FILE else []


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """run_info.json of a finished run, checked: PushError naming the file when missing, corrupt or incomplete."""
    path = run_dir / "run_info.json"
    fix = f"Re-run `hf-dpo train` into {run_dir} (overwrite_output_dir: true), or restore run_info.json from a copy."
    if not path.is_file():
        raise PushError(f"{path} is missing: is {run_dir} a finished `hf-dpo train` run? {fix}", "invalid")
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PushError(f"{path} is not valid JSON ({err}): the file is damaged. {fix}", "invalid") from None
    if not isinstance(info, dict):
        raise PushError(f"{path} must hold a JSON object, not {type(info).__name__}. {fix}", "invalid")
    base = info.get("base_model")
    if not isinstance(base, str) or not base.strip():
        raise PushError(f"{path} has no 'base_model' (the base model's Hub id or path). {fix}", "invalid")
    return info


def _local_roots(run_dir: Path, info: dict[str, Any]) -> list[tuple[str, str]]:
    """(absolute local prefix, public replacement), longest first: the run dir, the model and data dirs, then
    places any path of this machine lives under (home, temp, cwd, caches)."""

    def absolute(p) -> str | None:
        try:
            return str(Path(p).expanduser().resolve()) if p and str(p).startswith(("/", "~", ".")) else None
        except (OSError, RuntimeError, ValueError):
            return None

    base = str(info.get("base_model") or "")
    hub_base = base if _is_hub_id(base) else None
    pairs: list[tuple[str, str]] = []
    for path in {run_dir.resolve().as_posix(), str(run_dir.absolute())}:
        pairs.append((path, "."))
    model = info.get("model_name_or_path") or base
    for path in {absolute(model), absolute(base)} - {None}:
        pairs.append((path, hub_base or Path(path).name))
    dataset = info.get("dataset")
    if absolute(dataset):
        pairs.append((absolute(dataset), Path(absolute(dataset)).name))
    cache = os.environ.get("HF_DPO_CACHE") or str(Path.home() / ".cache" / "hf_dpo")
    for root in (
        cache,
        os.environ.get("HF_HOME"),
        tempfile.gettempdir(),
        os.getcwd(),
        str(Path.home()),
        sys.prefix,
    ):
        if absolute(root) and absolute(root) != "/":
            pairs.append((absolute(root), ""))
    return sorted(set(pairs), key=lambda kv: -len(kv[0]))


def scrub_local_paths(text: str, roots: list[tuple[str, str]]) -> str:
    """Absolute paths under `roots` -> their public names: `run/x` -> `x`, `<model dir>/f` -> `<hub id>/f`,
    anything else of this machine -> its last component."""

    def public(match: re.Match) -> str:
        path = match.group(0)
        for prefix, name in roots:
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix) :].lstrip("/")
                if name == ".":
                    return rest or "."
                if name:
                    return f"{name}/{rest}" if rest else name
                return Path(path).name or path
        return path

    return re.sub(r"(?<![\w.:/~-])/[^\s\"'`|()<>\[\]{},;*]+", public, text)


def _is_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", name or "")) and not os.path.exists(
        name
    )


def public_files(run_dir: str | Path, paths: list[Path] | None = None) -> dict[str, Path | bytes]:
    """What one push sends: {path in repo: local file, or the bytes to send instead}.

    adapter_config.json names the base model's Hub id (not a local cache path); the recipe, card, report and
    the other small text files carry no absolute path of this machine. Binary and tokenizer files go byte-exact."""
    run_dir = Path(run_dir)
    paths = files_to_push(run_dir) if paths is None else paths
    info = read_run_info(run_dir)
    roots = _local_roots(run_dir, info)
    base = str(info["base_model"])
    out: dict[str, Path | bytes] = {}
    for rel in paths:
        local = run_dir / rel
        if rel.name == "adapter_config.json":
            out[rel.as_posix()] = _public_adapter_config(local, base, roots)
        elif rel.suffix in SCRUBBED_SUFFIXES or rel.name in SCRUBBED_JSON:
            original = local.read_bytes()
            text = original.decode("utf-8", errors="surrogateescape")
            if rel.as_posix() == "recipe.yaml":  # a hand-edited or older recipe may carry hub_token
                text = public_recipe(local)
            text = scrub_local_paths(text, roots)
            data = text.encode("utf-8", errors="surrogateescape")
            out[rel.as_posix()] = local if data == original else data  # unchanged: sent from the file
        else:
            out[rel.as_posix()] = local
    return out


def _public_adapter_config(local: Path, base: str, roots: list[tuple[str, str]]) -> bytes:
    """adapter_config.json naming the base model by its Hub id (or, without one, its directory's name)."""
    config = json.loads(local.read_text(encoding="utf-8"))
    named = config.get("base_model_name_or_path")
    if _is_hub_id(base):
        config["base_model_name_or_path"] = base
    elif named:
        config["base_model_name_or_path"] = Path(str(named)).name
        logger.warning(
            "The base model %s has no Hub id: the pushed adapter_config.json names it '%s'; loaders need "
            "the base under that name.",
            named,
            config["base_model_name_or_path"],
        )
    return scrub_local_paths(json.dumps(config, indent=2, sort_keys=True) + "\n", roots).encode("utf-8")
