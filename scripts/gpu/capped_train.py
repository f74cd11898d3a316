"""`hf-dpo train` under a GPU memory cap, with `hf-dpo plan`'s estimate for the same recipe and overrides beside the
peak it measured: the check that a recipe's plan holds on a card of that size.

    python scripts/gpu/capped_train.py --cap-gb 24 RECIPE [--key value ...]

The cap is torch.cuda.set_per_process_memory_fraction: the caching allocator refuses to grow past it, so a run that
would not fit a 24 GB card fails here with a CUDA out-of-memory error, on any larger GPU. Without CUDA (the CPU
rehearsal of scripts/gpu/run_checks.sh) there is no cap: the run trains on the CPU and its peak RSS is printed
beside the CPU plan. Exit status: the training's."""

import argparse
import sys

import torch

from hf_dpo.cli import main as hf_dpo_main
from hf_dpo.config import load_recipe
from hf_dpo.model.memory import peak_rss_mb
from hf_dpo.plan.estimate import GB, fmt
from hf_dpo.plan.fit import plan_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap-gb", type=float, default=24.0, help="memory the run may use, in GiB")
    parser.add_argument("recipe")
    args, overrides = parser.parse_known_args()
    if not torch.cuda.is_available():
        print("no CUDA: training on the CPU without a cap (the rehearsal of the GPU check)", flush=True)
        plan = plan_recipe(load_recipe(args.recipe, overrides), device="cpu")
        print(plan.report(args.recipe), flush=True)
        status = hf_dpo_main(["train", args.recipe, *overrides])
        rss = int(peak_rss_mb() * 2**20)
        print(
            f"no cap (CPU) | measured peak RSS {fmt(rss)} (the interpreter and libraries included) | "
            f"planned allocated {fmt(plan.peak_allocated)}, planned total {fmt(plan.total)} | train exit {status}"
        )
        return status
    cap = int(args.cap_gb * GB)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    plan = plan_recipe(load_recipe(args.recipe, overrides), device="cuda", memory=cap)
    print(plan.report(args.recipe), flush=True)
    status = hf_dpo_main(["train", args.recipe, *overrides])
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    print(
        f"cap {fmt(cap)} of {fmt(total)} | measured peak allocated {fmt(allocated)}, reserved {fmt(reserved)} | "
        f"planned allocated {fmt(plan.peak_allocated)}, planned total {fmt(plan.total)} | "
        f"allocated / planned {allocated / plan.peak_allocated:.3f} (goal: within 0.85-1.15) | train exit {status}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
