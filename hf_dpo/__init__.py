"""hf_dpo: Direct Preference Optimization for the Hugging Face stack.

YAML recipe -> LoRA adapter trained with DPO on a 4-bit base -> evaluation report -> Hub repo.
"""

from hf_dpo.model.hub_kernels import install as _no_hub_kernels

__version__ = "0.1.0"

_no_hub_kernels()  # importing bitsandbytes asks no Hub endpoint for a kernel (hf_dpo.model.hub_kernels)

__all__ = ["DPOConfig", "DPOTrainer", "dpo_loss", "load_policy", "load_preference_dataset", "push_run"]


def __getattr__(name):
    # Lazy imports: `import hf_dpo` stays cheap and never pulls torch/bitsandbytes until needed.
    if name == "DPOConfig":
        from hf_dpo.config import DPOConfig

        return DPOConfig
    if name == "DPOTrainer":
        from hf_dpo.train.trainer import DPOTrainer

        return DPOTrainer
    if name == "dpo_loss":
        from hf_dpo.train.loss import dpo_loss

        return dpo_loss
    if name == "load_policy":
        from hf_dpo.model.loading import load_policy

        return load_policy
    if name == "load_preference_dataset":
        from hf_dpo.data import load_preference_dataset

        return load_preference_dataset
    if name == "push_run":
        from hf_dpo.hub.push import push_run

        return push_run
    raise AttributeError(f"module 'hf_dpo' has no attribute {name!r}")
