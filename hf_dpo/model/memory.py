"""Peak memory of this process, the same measure everywhere (bench, run_info.json, planner checks)."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a worker
    would inherit its parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory() -> dict:
    """{"peak_rss_mb": ..., and on a GPU "peak_cuda_allocated_mb"/"peak_cuda_reserved_mb" of the current device}:
    the CUDA figure is what `hf-dpo plan` predicts on a GPU, the RSS what it predicts on CPU."""
    import torch

    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        out["cuda_device"] = torch.cuda.get_device_name()
    return out


# A dense (dequantized) copy of a 4-bit model's weights, for decoding, a forward-only pass or CPU training
# (`hf_dpo.model.reference.dequantized_fit`), is made only when it takes at most this share of the memory still
# free: the rest holds the KV cache, the logits, the activations and whatever else the process is doing
# (training's optimizer state, the 4-bit model). `hf-dpo plan` decides the same way.
DENSE_SHARE_OF_FREE_MEMORY = 0.5


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
RELEASE_THRESHOLD = 128 * 1024


def return_freed_memory_to_os(threshold: int = RELEASE_THRESHOLD) -> bool:
    """Make glibc give freed tensor memory back to the OS at once. Returns whether it could (Linux/glibc only).

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so the tensors
    of a training step soon come from the heap, and a heap only shrinks from its top: the freed activations of
    one step stay resident, fragmented, and the next step's allocations land beside them. Peak RSS then grows
    well past the live tensors (measured on the bench's 4-bit run: 2179 MiB vs 1743 MiB with this on). With a
    fixed 128 KiB threshold every tensor of that size or more is its own mapping, unmapped when freed, and the
    heap is trimmed above 128 KiB of free space. The price is speed: every large tensor is a fresh mapping whose
    pages fault in again (15-45% fewer pairs/s in the bench).
    Process-wide; a no-op (False) on other C libraries."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
    if ok and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    return ok
