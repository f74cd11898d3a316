"""bitsandbytes without its Hub kernel lookup.

On a CPU with AVX512-BF16, importing bitsandbytes (peft and transformers import it) calls
`kernels.get_kernel("kernels-community/quantization-bitsandbytes")`: a request to the Hub endpoint for the
publisher's organisation, on every command, and (where that fails: offline, an untrusted publisher, a local
HF_ENDPOINT) a warning no user can act on. That kernel would be code fetched from the Hub at run time; hf_dpo
runs without it (bitsandbytes' own CPU path, as when the lookup fails). `install()` (called by `hf_dpo`'s
`__init__`) makes that one import see no `kernels` package, so no request is sent and no warning is printed;
every other import of `kernels` is untouched.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys

BNB_CPU_OPS = "bitsandbytes.backends.cpu.ops"  # the module whose import asks the Hub for the kernel
_FAILED_LOOKUP = "Failed to load CPU gemm_4bit_forward"  # what it logs when the lookup cannot run


class _DropFailedLookup(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_FAILED_LOOKUP)


class _WithoutHubKernels(importlib.abc.Loader):
    """Runs bitsandbytes' CPU ops module with `kernels` absent, and without the warning about it."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        missing = object()
        kernels = sys.modules.get("kernels", missing)
        sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ImportError, which it catches
        quiet = _DropFailedLookup()
        logging.getLogger(BNB_CPU_OPS).addFilter(quiet)
        try:
            self.loader.exec_module(module)
        finally:
            logging.getLogger(BNB_CPU_OPS).removeFilter(quiet)
            if kernels is missing:
                del sys.modules["kernels"]
            else:
                sys.modules["kernels"] = kernels


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != BNB_CPU_OPS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutHubKernels(spec.loader)
        return spec


def install() -> None:
    """From now on, bitsandbytes imports without the Hub lookup (once per process; a no-op where bitsandbytes
    was imported already)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
