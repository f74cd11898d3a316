"""What `DPOTrainer.__init__` prepares from TRL-style arguments, before `transformers.Trainer` takes over: the
datasets TRL requires and refuses, the policy and its tokenizer (a model name loaded with model_init_kwargs; a LoRA
adapter when a peft_config is given, else the whole model trains, as in TRL; pad token, dropout off), the weight of
a Mixture-of-Experts router's loss, the batch layout (padding-free packing, or the prefix-shared layout and the
attention that carries its mask), tokenized datasets (hf_dpo's column names and TRL's). Checked before the model
loads (`hf_dpo.preflight` calls them): a checkpoint to resume (`check_resume`), the report_to integrations
installed (`check_report_to`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import TrainingArguments

from hf_dpo.config import DPOConfig, RecipeError
from hf_dpo.data import tokenize_dataset
from hf_dpo.errors import HfDpoError
from hf_dpo.model.fused_lora import install_fused_lora
from hf_dpo.model.reference import quiet_peft_checkpointing_alias
from hf_dpo.model.unwrap import base_model, is_peft
from hf_dpo.model_files import trained_weights_problem
from hf_dpo.train.attention import sharing_attention

logger = logging.getLogger(__name__)


class TrainerSetupError(HfDpoError, ValueError):
    """DPOTrainer's arguments cannot work together; the message says what to pass instead."""


def as_dpo_config(args) -> DPOConfig:
    """The trainer's arguments as hf_dpo's DPOConfig, the one place that accepts another kind: None gives the
    defaults; a plain `transformers.TrainingArguments` (or TRL's DPOConfig) is converted field by field, as TRL's
    DPOTrainer converts a TrainingArguments, so every DPO key the trainer reads has its DPOConfig default."""
    if args is None:
        return DPOConfig(output_dir="runs/dpo")
    if isinstance(args, DPOConfig):
        return args
    if not isinstance(args, TrainingArguments):
        raise TrainerSetupError(
            f"args is a {type(args).__name__}; pass hf_dpo.config.DPOConfig (or a transformers.TrainingArguments)."
        )
    ours = {f.name for f in dataclasses.fields(DPOConfig) if f.init}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
    dropped = sorted(set(given) - ours)
    if dropped:
        logger.warning("%s keys hf_dpo's DPOConfig does not have, ignored: %s", type(args).__name__, dropped)
    return DPOConfig(**{k: v for k, v in given.items() if k in ours})


def check_datasets(train_dataset, eval_dataset, args: DPOConfig) -> None:
    """TRL's refusals, raised where TRL raises them (before the model loads): no train_dataset (hf_dpo also takes
    an evaluation-only trainer: eval_dataset alone), and precompute_ref_log_probs=True with a streaming dataset."""
    if train_dataset is None and eval_dataset is None:
        raise TrainerSetupError(
            "`train_dataset` is required: pass the preference pairs to train on (an evaluation-only trainer takes "
            "eval_dataset alone)."
        )
    if args.precompute_ref_log_probs is True:
        for name, dataset in [("train_dataset", train_dataset), *named_eval_datasets(eval_dataset)]:
            check_precomputable(dataset, name)


def named_eval_datasets(eval_dataset) -> list[tuple[str, object]]:
    """[(name, dataset)] of an eval_dataset that may be one dataset or a dict / DatasetDict of them."""
    if eval_dataset is None:
        return []
    if isinstance(eval_dataset, dict):  # DatasetDict and IterableDatasetDict are dicts too
        return [(f"eval_dataset['{key}']", dataset) for key, dataset in eval_dataset.items()]
    return [("eval_dataset", eval_dataset)]


def check_precomputable(dataset, name: str) -> None:
    """precompute_ref_log_probs=True stores one value per row by index: a streaming dataset has no index (TRL's
    error, word for word in its first sentence)."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        raise TrainerSetupError(
            f"`precompute_ref_log_probs=True` is not supported with IterableDataset ({name}). Please use a map-style "
            "Dataset or set `precompute_ref_log_probs=False` (or auto)."
        )


def prepare_policy(model, processing_class, peft_config, args: DPOConfig, quantization_config=None):
    """(policy, tokenizer) from TRL-style arguments: a model or its name (loaded with model_init_kwargs and, as
    TRL 1.x does, the trainer's `quantization_config`), a tokenizer or none, a LoRA config or none. With a
    peft_config (or a PeftModel) the LoRA adapter trains; without, every weight does (full fine-tuning, TRL's
    default), which a k-bit model cannot. Dropout off unless disable_dropout is false."""
    init_kwargs = dict(args.model_init_kwargs or {})
    init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    # TRL loads a model given by name in float32 unless model_init_kwargs says otherwise (transformers: the
    # checkpoint's dtype); "auto" keeps the checkpoint's
    dtype = init_kwargs.get("dtype", "float32")
    init_kwargs["dtype"] = getattr(torch, dtype) if dtype in ("float32", "bfloat16", "float16") else dtype
    if quantization_config is not None:
        if not isinstance(model, str):
            raise TrainerSetupError(
                "quantization_config was passed to DPOTrainer but the model is already loaded: quantization applies "
                "when the model is loaded from its name. Pass the model's name (a str), or load it with "
                "quantization_config yourself and omit it here."
            )
        if "quantization_config" in init_kwargs:
            raise TrainerSetupError(
                "quantization_config is set both as a DPOTrainer argument and in DPOConfig.model_init_kwargs; "
                "set it in one place (as TRL, preferably the trainer argument)."
            )
        init_kwargs["quantization_config"] = quantization_config
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model, **init_kwargs)
    elif args.model_init_kwargs:
        logger.warning("model_init_kwargs ignored: the model is already loaded.")
    if processing_class is None:
        from transformers import AutoTokenizer

        processing_class = AutoTokenizer.from_pretrained(
            model.config._name_or_path,
            revision=init_kwargs.get("revision"),
            trust_remote_code=init_kwargs["trust_remote_code"],
        )
    pad_token = args.pad_token or processing_class.pad_token or processing_class.eos_token
    if args.pad_token and pad_token not in processing_class.get_vocab():
        raise TrainerSetupError(
            f"pad_token '{pad_token}' is not in the tokenizer's vocabulary; choose one of its tokens."
        )
    processing_class.pad_token = pad_token
    if peft_config is not None and not is_peft(model):
        from peft import get_peft_model
        from transformers import set_seed

        set_seed(args.seed)  # the LoRA initialisation is part of the run: make `seed` govern it
        with quiet_peft_checkpointing_alias():
            model = get_peft_model(model, peft_config)
    if not is_peft(model) and is_quantized(model):
        raise TrainerSetupError(
            f"{type(model).__name__} is loaded in 4-bit or 8-bit, whose weights cannot be trained: full fine-tuning "
            "needs a model in float32/bfloat16/float16. Pass peft_config=LoraConfig(...) to train a LoRA adapter "
            "on the quantized base (QLoRA)."
        )
    if args.disable_dropout:  # TRL's default: policy and reference see the same, deterministic network
        disable_dropout(model)
    if is_peft(model):
        fused = install_fused_lora(model)
        logger.info("LoRA forward: the adapter's product added by one fused matmul on %d layers.", fused)
    model.add_model_tags(list(MODEL_TAGS))
    return model, processing_class


MODEL_TAGS = (
    "trl",
    "dpo",
    "hf-dpo",
)  # TRL's tags (its scripts and the Hub filter by them) and this project's


def is_quantized(model) -> bool:
    inner = base_model(model)
    return bool(getattr(inner, "is_loaded_in_4bit", False) or getattr(inner, "is_loaded_in_8bit", False))


def disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def warn_unused_settings(args: DPOConfig) -> None:
    """TRL settings a script may carry that hf_dpo takes but does not use: each one warned about once, at start."""
    if (args.dataset_num_proc or 0) > 1:
        logger.warning(
            "dataset_num_proc=%d has no effect: hf_dpo tokenizes the pairs in this one process (it checks and "
            "counts every row as it goes; the tokens are the same). Leave dataset_num_proc unset.",
            args.dataset_num_proc,
        )


def router_aux_coef(model, args: DPOConfig) -> float:
    """The weight of a Mixture-of-Experts router's load-balancing loss (0: none), as TRL resolves it."""
    text_config = model.config.get_text_config()
    has_router = hasattr(text_config, "output_router_logits")
    coef = args.router_aux_loss_coef
    if coef and not has_router:
        raise TrainerSetupError(
            f"router_aux_loss_coef is {coef} but {type(base_model(model)).__name__} is not a Mixture-of-Experts "
            "model with router logits: there is no auxiliary loss to weight. Leave router_aux_loss_coef unset."
        )
    if not has_router:
        return 0.0
    return float(getattr(text_config, "router_aux_loss_coef", 0.0) if coef is None else coef)


# hf_dpo's tokenized columns and TRL's names for the same token ids
TRL_COLUMNS = {
    "prompt_input_ids": "prompt_ids",
    "chosen_input_ids": "chosen_ids",
    "rejected_input_ids": "rejected_ids",
}


def tokenize(dataset, tokenizer, data_config, args):
    """Tokenized pairs (one dataset, or a dict of them), under hf_dpo's column names (which its collator reads) and
    TRL's (`prompt_ids`, `chosen_ids`, `rejected_ids`: what a TRL script reads back). A dataset tokenized already,
    under either set of names, is kept as it is."""
    if dataset is None:
        return None
    if isinstance(dataset, dict):  # a dict of datasets, or a DatasetDict: each split on its own
        return {name: tokenize(ds, tokenizer, data_config, args) for name, ds in dataset.items()}
    columns = getattr(dataset, "column_names", None) or []
    if all(name in columns for name in TRL_COLUMNS.values()) and not all(
        name in columns for name in TRL_COLUMNS
    ):
        dataset = with_column_aliases(dataset, {trl: ours for ours, trl in TRL_COLUMNS.items()})
    return with_column_aliases(tokenize_dataset(dataset, tokenizer, data_config, args), TRL_COLUMNS)


def with_column_aliases(dataset, aliases: dict[str, str]):
    """`dataset` plus, for each (existing: alias) pair, a column `alias` holding the same values; the Arrow buffers
    are shared, not copied."""
    import datasets

    table = dataset.data  # a datasets Table: its append_column keeps the memory-mapped or in-memory kind
    for name, alias in aliases.items():
        if alias not in table.column_names:
            table = table.append_column(alias, table.column(name))
    return datasets.Dataset(table, split=dataset.split)


def padding_free_on(args: DPOConfig) -> bool:
    """`padding_free`: the pairs of a batch packed into one row, no padding (checked on the first batch)."""
    if args.padding_free:
        logger.info(
            "padding_free: each batch is one row of its sequences back to back, positions restarting per sequence "
            "(no padding; attention never crosses sequences). Pays off with flash/flex attention on a GPU; on CPU "
            "SDPA attends over the whole row."
        )
    return bool(args.padding_free)


def prefix_sharing_on(model, args: DPOConfig, aux_coef: float, packed: bool = False) -> str | None:
    """The attention the prefix-shared layout will use (`hf_dpo.train.attention`: mask4d or flex), or None: the plain
    layout (checked again on the first batch); every "no" is logged."""
    if not args.prefix_sharing:
        return None
    if packed:
        logger.info(
            "Prefix sharing off: padding_free packs the plain layout (prompt+chosen, prompt+rejected)."
        )
        return None
    if aux_coef:
        logger.info("Prefix sharing off: the router's load-balancing loss counts every token of both rows.")
        return None
    return sharing_attention(model, args.prefix_sharing_attention, args.device.type)


def return_freed_memory(args: DPOConfig) -> None:
    """`return_freed_memory`: CPU training hands freed tensor memory back to the OS at once."""
    if args.return_freed_memory and (args.use_cpu or not torch.cuda.is_available()):
        from hf_dpo.model.memory import return_freed_memory_to_os

        if return_freed_memory_to_os():
            logger.info("Freed tensor memory goes back to the OS at once (return_freed_memory).")


# ---------------------------------------------------------------- checked before the model loads


def _complete_checkpoint(path: Path) -> bool:
    """A checkpoint the Trainer can resume: saved to the end (trainer_state.json is written last), its adapter
    (or a full fine-tune's model) whole."""
    return (path / "trainer_state.json").is_file() and trained_weights_problem(path) is None


def check_resume(args) -> None:
    """`resume_from_checkpoint`: a checkpoint dir that exists and was saved to the end; `true` (or yes): the
    last complete checkpoint in output_dir, skipping one cut short by a kill while saving."""
    resume = args.resume_from_checkpoint
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
    if not (path / "trainer_state.json").is_file():
        raise RecipeError(
            f"key 'resume_from_checkpoint': {text} has no trainer_state.json: it is not a checkpoint, or it was "
            "cut short while saving. Give an earlier checkpoint-N, or true for the last complete one."
        )
    if problem := trained_weights_problem(path):
        raise RecipeError(
            f"key 'resume_from_checkpoint': {problem}. Give an earlier checkpoint-N, or true for the last complete "
            "one."
        )


# What a run leaves in its output_dir: at the end, the adapter (or a full fine-tune's model) and run_info.json; on
# the way, checkpoint-N.
FINISHED_RUN_FILES = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "model.safetensors",
    "run_info.json",
)


def check_no_run_replaced(args) -> None:
    """A run is never replaced silently: an output_dir holding a finished run (its adapter, run_info.json) or the
    checkpoints of one that stopped is refused, naming `overwrite_output_dir`, unless the recipe sets that or
    resumes (resume_from_checkpoint). `make demo` re-runs because recipes/demo.yaml sets overwrite_output_dir."""
    if args.overwrite_output_dir or args.resume_from_checkpoint:
        return
    out = Path(args.output_dir).expanduser()
    finished = [name for name in FINISHED_RUN_FILES if (out / name).is_file()]
    if finished:
        raise RecipeError(
            f"key 'output_dir': {args.output_dir} holds a finished run ({', '.join(finished)}): training into it "
            "would replace its adapter, report and card. Give another output_dir (e.g. --output_dir "
            f"{args.output_dir.rstrip('/')}-2), or set overwrite_output_dir: true to train over it."
        )
    # a checkpoint-N holding files is work; an empty one (a save that never began) is not
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir() and any(p.iterdir()))
    if checkpoints:
        raise RecipeError(
            f"key 'output_dir': {args.output_dir} holds {', '.join(checkpoints)} of a run that stopped before its "
            "end. Resume it with resume_from_checkpoint: true, give another output_dir, or set "
            "overwrite_output_dir: true to start afresh over it."
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
