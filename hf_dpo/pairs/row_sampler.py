"""Sampling with one random stream per completion: what a completion is depends on its seed alone, not on which
other prompts share its batch, so a resumed run reproduces an uninterrupted one.

`sample_seed(seed, index, k)` is the seed of sample k of prompt `index`; `PerRowSampler` is the logits
processor that draws each row's next token from that row's own generator (generate() then takes its argmax).
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor

from hf_dpo.pairs.formats import SamplingError


def sample_seed(seed: int, index: int, k: int) -> int:
    """The seed of sample k of prompt `index`: independent of batching, so resuming reproduces a full run."""
    digest = hashlib.sha256(f"{seed}:{index}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class PerRowSampler(LogitsProcessor):
    """Temperature + top-p sampling with one random stream per row; generate() then takes the argmax.

    Each step draws one uniform u per row from that row's generator and picks the token where the row's
    cumulative probability first reaches u (inverse-CDF sampling: exact, and one random number per row
    instead of a vocabulary's worth). The chosen token is returned as the only finite score.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        if not (temperature >= 0 and temperature != float("inf")):  # NaN fails both
            raise SamplingError(
                f"sampling_temperature must be a finite number >= 0 (0: greedy), got {temperature}."
            )
        if not 0 < top_p <= 1:  # top_p <= 0 would drop every token, and token 0 would be picked at every step
            raise SamplingError(f"sampling_top_p must be in (0, 1], got {top_p}.")
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()  # (B, V)
        if self.temperature <= 0:
            return scores  # greedy
        probs = (scores / self.temperature).softmax(dim=-1)  # (B, V)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
            # Drop a token when the tokens ranked above it already cover top_p (the first one always stays).
            drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= self.top_p
            probs = probs.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), 0.0)
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).clamp_min(1e-12)  # (B,)
        cdf = probs.cumsum(dim=-1)  # (B, V)
        target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
        token = torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)
