"""A KV cache for decoding: transformers' `Cache` whose layers write into tensors sized once for the whole decode.

    cache = preallocated_cache(model, prompt_len + max_new_tokens)
    model(input_ids=..., cache=cache)

The default `DynamicCache` concatenates every layer's keys and values at every step: a copy of the whole cache
per token, a third of a decoding step on CPU at 96 rows. Here keys and values are views of the filled length;
finished rows leave (`batch_select_indices`) and prompts fan out to K samples (`batch_repeat_interleave`) as
with the DynamicCache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from hf_dpo.model import unwrap


class PreallocatedLayer(DynamicLayer):
    """A layer cache writing into (rows, heads, capacity, head_dim) tensors allocated at the first update; keys
    and values are views of the filled length, so no step copies the cache (DynamicLayer concatenates)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        rows, heads, _, _ = key_states.shape
        self.key_buffer = key_states.new_empty(rows, heads, self.capacity, key_states.shape[-1])
        self.value_buffer = value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > self.capacity:
            raise ValueError(
                f"the KV cache holds {self.capacity} positions; {self.length + new} were written"
            )
        self.key_buffer[:, :, self.length : self.length + new] = key_states
        self.value_buffer[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._views()
        return self.keys, self.values

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]  # (rows, heads, length, head_dim)
        self.values = self.value_buffer[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a preallocated cache is written forward only")


def preallocated_cache(model, length: int) -> Cache:
    """A KV cache for `length` positions per row (prompt + new tokens) for a model whose layers all attend to
    every earlier position; transformers' DynamicCache for any other (sliding windows, linear attention)."""
    from transformers import DynamicCache

    config = unwrap.base_model(model).config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    if any(kind != "full_attention" for kind in layer_types) or getattr(config, "sliding_window", None):
        return DynamicCache(config=config)
    return Cache(layers=[PreallocatedLayer(length) for _ in layer_types])
