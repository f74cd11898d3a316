"""Fixtures of the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def read_splits_of():
    """read_splits_of(path, **data_config) -> the splits hf_dpo.data.read_splits reads from `path`."""
    from hf_dpo.config import DataConfig
    from hf_dpo.data import read_splits

    def read(path, **cfg):
        return read_splits(DataConfig(dataset_name=str(path), **cfg))

    return read
