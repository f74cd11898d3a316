"""What a local model or LoRA adapter directory must hold, checked by name before anything loads from it.

transformers and peft report a directory that lacks a file as something else: an empty model directory as
"You need to have sentencepiece or tiktoken installed", a run dir without its adapter weights as an invalid
Hub repo id, a safetensors file cut short as "invalid header length". Each check here returns None or the
problem, naming the file (the caller adds whose key or command it is and what to do):

    model_dir_problem("models/llama")          # None, or "models/llama has no config.json ..."
    adapter_dir_problem("runs/demo")           # None, or "runs/demo/adapter_model.safetensors is cut short ..."
    trained_weights_problem("runs/demo/checkpoint-10")   # an adapter's, or a full fine-tune's model
    safetensors_problem(Path("model.safetensors"))

The checks read file names and the safetensors headers only (a few kilobytes), never the weights.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from pathlib import Path

# Any one of these gives a tokenizer: a `tokenizers` file, or the vocabulary a slow tokenizer is built from.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "tekken.json",
)
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# What to do about a local model directory a check refused.
MODEL_DIR_FIX = (
    "Give a model directory as save_pretrained writes it (config.json, tokenizer files, weights), a built-in "
    "alias (smollm2-135m-instruct) or a Hub id."
)
# The largest header a safetensors file is read with (the format's own reader refuses past 100 MB).
_MAX_HEADER_BYTES = 100_000_000


def safetensors_problem(path: Path) -> str | None:
    """None when `path` is a safetensors file whose header reads and whose tensors all fit in the file; else
    what is wrong with it. Reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path} is cut short ({size} bytes: not even the header's length)"
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, _MAX_HEADER_BYTES):
                return f"{path} is cut short or no safetensors file (a {length}-byte header in {size} bytes)"
            header = json.loads(fh.read(length).decode("utf-8"))
    except PermissionError:
        return f"{path} cannot be read (permission denied)"
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return f"{path} is damaged: its header is not the JSON a safetensors file starts with"
    if not isinstance(header, dict):
        return f"{path} is damaged: its header is not the JSON a safetensors file starts with"
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    ends = [entry.get("data_offsets", [0, 0])[-1] for entry in tensors.values() if isinstance(entry, dict)]
    if len(ends) != len(tensors) or not all(isinstance(end, int) for end in ends):
        return f"{path} is damaged: its header does not say where each tensor lies"
    if not tensors:
        return f"{path} holds no tensors"
    needed = 8 + length + max(ends)
    if size < needed:
        return f"{path} is cut short ({size} of its {needed} bytes)"
    return None


def _json_object(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object in `path`, None) or (None, what is wrong with it)."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except PermissionError:
        return None, f"{path} cannot be read (permission denied)"
    except OSError as err:
        return None, f"{path} cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, f"{path} is not valid JSON ({err}): the file is damaged or cut short"
    if not isinstance(value, dict):
        return None, f"{path} must hold a JSON object, not {type(value).__name__}"
    return value, None


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False where a Hub id cannot even be looked up as a path (too long a name, a NUL byte)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def is_local_dir(name_or_path: str | os.PathLike | None) -> bool:
    """Whether a model or adapter name is a directory here (transformers then loads it, never the Hub)."""
    return bool(name_or_path) and _is_dir(Path(name_or_path).expanduser())


def model_dir_problem(path: str | os.PathLike, *, weights: bool = True, tokenizer: bool = True) -> str | None:
    """None when the local model directory `path` holds what from_pretrained reads: config.json (a JSON object
    naming its model_type), tokenizer files (`tokenizer`), weights (`weights`: safetensors files with sound headers,
    a shard index whose shards are all there, or pytorch_model*.bin). Else the first thing missing, named."""
    path = Path(path).expanduser()
    if not _is_dir(path):
        return f"{path} is not a directory" if path.exists() else f"{path} does not exist"
    config_file = path / "config.json"
    if not config_file.is_file():
        held = sorted(n if n.isprintable() else repr(n) for n in itertools.islice(os.listdir(path), 6))
        return f"{path} has no config.json, so it is no model directory (" + (
            f"it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''})" if held else "it is empty)"
        )
    config, problem = _json_object(config_file)
    if problem:
        return problem
    if not isinstance(config.get("model_type"), str) and "auto_map" not in config:
        return f"{config_file} names no model_type, so transformers cannot tell which model it is"
    if tokenizer and (problem := tokenizer_dir_problem(path)):
        return problem
    return _weights_problem(path) if weights else None


def tokenizer_dir_problem(path: str | os.PathLike) -> str | None:
    """None when the local directory `path` holds a tokenizer's files (a run dir does, beside its adapter)."""
    path = Path(path).expanduser()
    if not _is_dir(path):
        return f"{path} is not a directory" if path.exists() else f"{path} does not exist"
    if any((path / name).is_file() for name in TOKENIZER_FILES) or any(path.glob("*.tiktoken")):
        return None
    return f"{path} has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...)"


def _weights_problem(path: Path) -> str | None:
    for index_name in WEIGHT_INDEXES:  # sharded weights: the index names every shard
        if (path / index_name).is_file():
            index, problem = _json_object(path / index_name)
            if problem:
                return problem
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                return f"{path / index_name} has no weight_map naming the shards"
            for shard in sorted(set(map(str, weight_map.values()))):
                if not (path / shard).is_file():
                    return f"{path / index_name} names {shard}, which is missing from {path}"
                if shard.endswith(".safetensors") and (problem := safetensors_problem(path / shard)):
                    return problem
            return None
    files = sorted(path.glob("*.safetensors"))
    for file in files:
        if problem := safetensors_problem(file):
            return problem
    if files or any(path.glob("pytorch_model*.bin")):
        return None
    return f"{path} has no weights (model.safetensors, model-*.safetensors or pytorch_model.bin)"


def adapter_dir_problem(path: str | os.PathLike) -> str | None:
    """None when `path` holds a LoRA adapter peft can load: adapter_config.json (a JSON object with its
    peft_type) and adapter_model.safetensors with a sound header (or adapter_model.bin). Else what is wrong."""
    path = Path(path).expanduser()
    if not _is_dir(path):
        return f"{path} is not a directory" if path.exists() else f"{path} does not exist"
    config, problem = _json_object(path / "adapter_config.json")
    if problem:
        return problem if (path / "adapter_config.json").exists() else f"{path} has no adapter_config.json"
    if not isinstance(config.get("peft_type"), str):
        return f"{path / 'adapter_config.json'} names no peft_type, so it describes no adapter"
    weights = [path / name for name in ADAPTER_WEIGHTS if (path / name).exists()]
    if not weights:
        return f"{path} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"
    if weights[0].suffix == ".safetensors":
        return safetensors_problem(weights[0])
    return None if os.access(weights[0], os.R_OK) else f"{weights[0]} cannot be read (permission denied)"


def trained_weights_problem(path: str | os.PathLike) -> str | None:
    """None when `path` (a run dir or a checkpoint-N of one) holds whole trained weights: a LoRA adapter, or, with
    a config.json and no adapter_config.json, a full fine-tune's model (`model_dir_problem`, no tokenizer needed).
    Else what is wrong, as `adapter_dir_problem` names it for a dir with neither."""
    path = Path(path).expanduser()
    if (path / "config.json").is_file() and not (path / "adapter_config.json").exists():
        return model_dir_problem(path, tokenizer=False)
    return adapter_dir_problem(path)
