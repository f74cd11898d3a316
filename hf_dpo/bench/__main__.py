"""`python -m hf_dpo.bench --worker SPEC.json`: one bench line (the runner spawns this); else see `hf-dpo bench`."""

import sys

from hf_dpo.bench.worker import worker_main

if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.exit(worker_main(sys.argv[2]))
print("usage: hf-dpo bench [--quick] [--data-sets ...] [--lines ...] [--steps N] ...", file=sys.stderr)
sys.exit(2)
