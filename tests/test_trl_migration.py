"""A TRL 1.x DPO script runs on hf_dpo by changing its import line (README, "Migrating a TRL 1.x DPO script"): the
same DPOConfig defaults, the same reading of the rows when no hf_dpo `data_config` is given, and the metrics TRL
logs under TRL's names. The objective itself is compared in test_trl_parity.py."""

from hf_dpo.config import DPOConfig


def test_dpoconfig_defaults_are_trls(tmp_path):
    """A TRL script that leaves learning_rate / logging_steps unset trains at TRL's 1e-6 and logs every 10 steps
    (was transformers' 5e-5 and 500: a 50x larger step, silently)."""
    from trl import DPOConfig as TRLConfig

    ours = DPOConfig(output_dir=str(tmp_path / "ours"), use_cpu=True)
    trl = TRLConfig(output_dir=str(tmp_path / "trl"), use_cpu=True)
    for key in ("learning_rate", "logging_steps", "beta", "max_length", "loss_type", "disable_dropout"):
        assert getattr(ours, key) == getattr(trl, key), key
