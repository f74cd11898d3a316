"""`hf-dpo train` with observers, for tests/cli/test_distributed.py (run under `accelerate launch` or alone).

    python tests/distributed_worker.py REPORT_DIR RECIPE [--key value ...]

Runs the real pipeline (`hf_dpo.cli.main(["train", ...])`) and writes REPORT_DIR/rank{R}.json with what this
process saw: world size, its own per-step DPO losses (before any gather), the logged (gathered) losses,
how many reference forward passes it ran, a checksum of its LoRA weights after training, and every path
under output_dir it opened for writing, created, renamed or removed (from Python audit events).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    report_dir, recipe, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    from hf_dpo.config import load_recipe

    output_dir = Path(load_recipe(recipe, overrides).training.output_dir).resolve()
    writes: list[str] = []

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if not any(c in mode for c in "wax+") and not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                return
        elif event not in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.rmtree"):
            return
        # an atomic write (temp file + rename) writes its destination: the rename's second argument
        targets = args[:2] if event in ("os.rename", "os.replace") else args[:1]
        for target in targets:
            if isinstance(target, (str, os.PathLike)):
                path = Path(os.fspath(target)).resolve()
                if path == output_dir or output_dir in path.parents:
                    writes.append(str(path.relative_to(output_dir)))

    sys.addaudithook(audit)

    import torch

    from hf_dpo.train import trainer as trainer_module

    seen: dict = {"local_losses": [], "trainer": None}
    original_init = trainer_module.DPOTrainer.__init__
    original_loss = trainer_module.DPOTrainer.compute_loss

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        seen["trainer"] = self

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original_loss(self, model, inputs, *args, **kwargs)
        if model.training:
            value = loss[0] if isinstance(loss, tuple) else loss
            seen["local_losses"].append(float(value.detach()))
        return loss

    trainer_module.DPOTrainer.__init__ = init
    trainer_module.DPOTrainer.compute_loss = compute_loss

    from hf_dpo.cli import main as cli_main

    rc = cli_main(["train", recipe, *overrides])
    trainer = seen["trainer"]
    lora = {n: p.detach().float() for n, p in trainer.model.named_parameters() if "lora_" in n}
    rank = int(os.environ.get("RANK", "0"))
    report = {
        "rc": rc,
        "rank": rank,
        "world_size": trainer.args.world_size,
        "local_losses": seen["local_losses"],
        "logged_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "reference_forward_passes": trainer.reference_forward_passes,
        "train_pairs": len(trainer.train_dataset),
        "ref_chosen_logps": list(trainer.train_dataset["ref_chosen_logps"])
        if "ref_chosen_logps" in trainer.train_dataset.column_names
        else None,
        "lora_sum": float(sum(t.sum() for t in lora.values())),
        "lora_abs_sum": float(sum(t.abs().sum() for t in lora.values())),
        "lora": {n: t.flatten()[:64].tolist() for n, t in sorted(lora.items())},
        "writes": sorted(set(writes)),
        "torch_threads": torch.get_num_threads(),
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"rank{rank}.json").write_text(json.dumps(report))
    return rc


if __name__ == "__main__":
    sys.exit(main())
