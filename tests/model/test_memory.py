"""hf_dpo.model.memory: freed tensor memory goes back to the OS on CPU (return_freed_memory), and the switch changes
no result."""

import subprocess
import sys
import textwrap

import pytest
import torch

from hf_dpo.model.memory import peak_memory, peak_rss_mb

# A training step in miniature: 1 MiB activations interleaved with small tensors that outlive them (as optimizer
# state and metrics do), then the activations are freed. Prints how much RSS the free gave back, in MiB.
FRAGMENT = textwrap.dedent(
    """
    import sys, torch
    from hf_dpo.model.memory import return_freed_memory_to_os
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    if sys.argv[1] == "on":
        assert return_freed_memory_to_os()
    warm = torch.ones(4 << 20)  # 16 MiB, freed: glibc's dynamic threshold rises above 1 MiB
    del warm
    big, small = [], []
    for _ in range(200):
        big.append(torch.ones(1 << 18))  # 1 MiB
        small.append(torch.ones(64))
    before = rss()
    del big
    print(round(before - rss()))
    """
)


def given_back_mb(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, timeout=120, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_freed_activations_go_back_to_the_os():
    assert given_back_mb("on") >= 150  # ~200 MiB freed, ~200 MiB given back
    # The control: glibc's defaults keep them resident. This is what return_freed_memory fixes.
    assert given_back_mb("off") < 50


def test_peak_memory_reports_rss_and_no_cuda_on_cpu():
    peak = peak_memory()
    assert peak["peak_rss_mb"] >= 50 and peak["peak_rss_mb"] == pytest.approx(peak_rss_mb(), rel=0.05)
    if not torch.cuda.is_available():
        assert "peak_cuda_allocated_mb" not in peak
