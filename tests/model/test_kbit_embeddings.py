"""A 4-bit base with a half-precision compute dtype keeps its embeddings and LM head in that dtype (peft upcasts
them to float32), norms in float32; the planner counts what the loaded model holds; float32 runs are untouched.
bfloat16 on CPU stands in for the GPU's compute dtype (bitsandbytes' CPU kernels take it)."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from hf_dpo.config import ModelConfig
from hf_dpo.model.loading import load_base_model
from hf_dpo.plan import estimate as planmod
from hf_dpo.plan.arch import load_arch
from hf_dpo.train.trainer import DPOTrainer
from tests.fast_path_fixtures import ROWS, args, lora
from tests.plan.test_plan import cpu_settings

pytest.importorskip("bitsandbytes")


def load(tiny_model_dir, **kw):
    torch.manual_seed(0)
    return load_base_model(ModelConfig(model_name_or_path=tiny_model_dir, quantization="4bit", **kw))


def unquantized(model) -> dict[str, torch.dtype]:
    return {n: p.dtype for n, p in model.named_parameters() if type(p).__name__ != "Params4bit"}


def plan_settings(**kw):
    """The plan of the 4-bit GPU setting these tests load: bf16 compute under autocast, batch 1, no dropout."""
    gpu = dict(device="cuda", batch_size=1, lora_dropout=0.0, compute_bytes=2, autocast=True)
    return cpu_settings(**{**gpu, **kw})


def test_half_compute_dtype_keeps_embeddings_half_and_the_plan_counts_it(tiny_model_dir):
    model = load(tiny_model_dir, torch_dtype="bfloat16")
    dtypes = unquantized(model)
    assert dtypes.pop("model.embed_tokens.weight") == torch.bfloat16  # tied: the LM head is the same tensor
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert dtypes and set(dtypes.values()) == {torch.float32}  # the norms
    held = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n in unquantized(model))
    _, planned = planmod.weight_bytes(load_arch(tiny_model_dir), plan_settings())
    assert planned == held == 49_152 * 64 * 2 + (2 * 2 * 64 + 64) * 4
    upcast = load(tiny_model_dir, torch_dtype="bfloat16", float32_embeddings=True)
    assert set(unquantized(upcast).values()) == {torch.float32}
    _, planned_upcast = planmod.weight_bytes(
        load_arch(tiny_model_dir), plan_settings(float32_embeddings=True)
    )
    assert planned_upcast == sum(
        p.numel() * 4 for n, p in upcast.named_parameters() if n in unquantized(upcast)
    )


def test_float32_compute_changes_nothing(tiny_model_dir):
    assert set(unquantized(load(tiny_model_dir)).values()) == {torch.float32}


@pytest.mark.parametrize("sharing", [False, True])
def test_a_dpo_step_runs_without_autocast_on_half_embeddings(tmp_path, tiny_model_dir, sharing):
    """No autocast: the LM head casts the float32 final norm's output to its dtype, and the prefix-shared 4D mask
    takes the float32 queries' dtype (the norms are float32), not the embeddings'."""
    model = load(tiny_model_dir, torch_dtype="bfloat16")
    trainer = DPOTrainer(
        model=model,
        args=args(tmp_path, prefix_sharing=sharing, logps_chunk_size=0),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=lora(),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and trainer._prefix_sharing == sharing
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.fixture(scope="module")
def biased_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny Llama with q/k/v biases, as Qwen2 has: the 4-bit layers whose bias dtype misled the mask."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir, attention_bias=True)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-biased")
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("model_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("compute_dtype", DTYPES, ids=str)
def test_every_mix_of_model_and_4bit_compute_dtype_runs_a_step(
    tmp_path, biased_model_dir, model_dtype, compute_dtype
):
    """A model loaded in any dtype with any bnb_4bit_compute_dtype (TRL's way: the model, then peft_config): the
    prefix-shared mask takes the queries' dtype, not the dtype of a 4-bit layer's bias (stored in the compute
    dtype, while the layer returns its input's), and the step equals the plain layout's."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    def loss_of(sharing):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(
            biased_model_dir,
            dtype=model_dtype,
            quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype),
        )
        trainer = DPOTrainer(
            model=model,
            args=args(tmp_path, prefix_sharing=sharing, logps_chunk_size=0),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=AutoTokenizer.from_pretrained(biased_model_dir),
            peft_config=lora(),
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        assert trainer._prefix_sharing == sharing and torch.isfinite(loss)
        return loss.item()

    shared, plain = loss_of(True), loss_of(False)
    assert shared == pytest.approx(
        plain, abs=2e-2 if torch.float32 not in (model_dtype, compute_dtype) else 5e-3
    )
