"""Model architecture facts for `hf-dpo plan`, read without downloading weights.

    arch = load_arch("meta-llama/Llama-3.1-8B-Instruct")   # bundled facts: works offline, no token
    arch = load_arch("path/to/model")                      # its config.json

Order: a local directory's config.json; a built-in alias (its converted copy, else its upstream model's
bundled facts); the facts bundled in model_facts.json for the shipped recipes' models; the Hub config (only
when the Hub answers within 2 s, so offline runs never wait on timeouts); the local HF cache.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hf_dpo.errors import HfDpoError

FACTS_FILE = Path(__file__).with_name("model_facts.json")


class PlanError(HfDpoError, ValueError):
    """The plan cannot be made (unknown architecture, unsupported setting); the message says what to do."""


@dataclass
class Arch:
    """The architecture facts the estimate needs (names as in transformers' configs)."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    source: str = ""
    # size of the weight files when known (local), for the CPU load residue
    checkpoint_bytes: int | None = None

    @classmethod
    def from_config(cls, config, source: str) -> Arch:
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        text = get("text_config")  # multimodal wrappers keep the language model's config inside
        if text is not None and get("hidden_size") is None:
            return cls.from_config(text, source)
        heads = get("num_attention_heads")
        hidden = get("hidden_size")
        if not (
            hidden and heads and get("num_hidden_layers") and get("intermediate_size") and get("vocab_size")
        ):
            raise PlanError(
                f"{source}: not a decoder config with hidden_size/num_hidden_layers/intermediate_size."
            )
        return cls(
            model_type=get("model_type", "llama"),
            hidden_size=hidden,
            num_hidden_layers=get("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=get("num_key_value_heads") or heads,
            head_dim=get("head_dim") or hidden // heads,
            intermediate_size=get("intermediate_size"),
            vocab_size=get("vocab_size"),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            source=source,
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each decoder linear."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def num_params(self) -> int:
        linear = self.num_hidden_layers * sum(i * o for i, o in self.linear_shapes().values())
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return (
            linear
            + embeddings
            + self.num_hidden_layers * (2 * self.hidden_size + self.qkv_bias)
            + self.hidden_size
        )

    @property
    def qkv_bias(self) -> int:
        """Bias elements per layer (Qwen2 has q/k/v biases)."""
        if self.model_type != "qwen2":
            return 0
        return (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim


# ----------------------------------------------------------------------------- reading the architecture


def _local_arch(path: Path) -> Arch:
    arch = Arch.from_config(_read_config(path / "config.json"), str(path / "config.json"))
    weights = [f for f in path.iterdir() if f.suffix in (".safetensors", ".bin")]
    arch.checkpoint_bytes = sum(f.stat().st_size for f in weights) or None
    return arch


def _read_config(file: Path) -> dict:
    """A local model's config.json as a dict; PlanError naming the file when it is no JSON object (a file cut
    short by a failed download, saved in another encoding)."""
    try:
        config = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PlanError(f"{file}: not UTF-8 text (byte {err.start}). Save it as UTF-8.") from None
    except json.JSONDecodeError as err:
        raise PlanError(
            f"{file}: not valid JSON (line {err.lineno}: {err.msg}). Copy or download the model again."
        ) from None
    if not isinstance(config, dict):
        raise PlanError(f"{file}: not a JSON object of config keys, got {type(config).__name__}.")
    return config


def _bundled_facts() -> dict[str, dict]:
    return {k: v for k, v in json.loads(FACTS_FILE.read_text()).items() if not k.startswith("_")}


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout
        ):
            return True
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    """Path.is_file, False where the name cannot even be looked up (too long for the file system, a NUL byte):
    such a name is no local model, and the lookups after it say so."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def load_arch(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Arch:
    """Architecture facts for a model, without downloading weights.

    Order: a local directory's config.json; a built-in alias (its converted copy, else the facts of its
    upstream model); the facts bundled for the shipped recipes' models; the Hub config (only when the Hub
    answers within 2 s, so offline runs never wait); the local HF cache.
    """
    from hf_dpo.model.loading import MODEL_ALIASES, cache_dir
    from hf_dpo.model_files import MODEL_DIR_FIX, is_local_dir, model_dir_problem

    facts = _bundled_facts()
    alias = MODEL_ALIASES.get(name_or_path.lower())
    local = Path(name_or_path)
    if alias is not None:
        converted = cache_dir() / "models" / name_or_path.lower()
        if (converted / "config.json").is_file():
            return _local_arch(converted)
        # Not converted yet: the conversion writes float32 safetensors.
        arch = Arch.from_config(facts[alias[2]], f"bundled facts for {alias[2]}")
        arch.checkpoint_bytes = arch.num_params * 4
        return arch
    if _is_file(local / "config.json"):
        return _local_arch(local)
    if is_local_dir(local):  # a directory is never looked up on the Hub: say what it lacks
        problem = model_dir_problem(local, weights=False, tokenizer=False)
        raise PlanError(f"key 'model_name_or_path': {problem}. {MODEL_DIR_FIX}")
    if name_or_path in facts:
        return Arch.from_config(facts[name_or_path], f"bundled facts for {name_or_path}")
    from transformers import AutoConfig

    errors = []
    for local_only in (False, True) if _hub_reachable() else (True,):
        try:
            config = AutoConfig.from_pretrained(
                name_or_path,
                revision=revision,
                trust_remote_code=trust_remote_code,
                local_files_only=local_only,
            )
            return Arch.from_config(config, f"{name_or_path} ({'HF cache' if local_only else 'Hub'})")
        except (OSError, ValueError) as err:
            errors.append(str(err).splitlines()[0])
    raise PlanError(
        f"No architecture for '{name_or_path}': not a local directory, not among the bundled facts "
        f"({FACTS_FILE.name}), and the Hub config could not be read ({'; '.join(errors)}). Give a local path or "
        "add the model's config.json values to hf_dpo/model_facts.json."
    )
