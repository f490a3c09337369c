"""Fixtures of the temperature-search tests: the tiny embedded model, small configs, one shared search."""

from __future__ import annotations

import json

import pytest
from search_helpers import TINY_ROUND, TINY_SEARCH

from pipelines.temperature_search import run_search


@pytest.fixture(scope="session")
def tiny_search(tiny_model_dir, tiny_sets, tmp_path_factory):
    """One complete search on the tiny model (shared by the tests that only read its outcome)."""
    forget, retain = tiny_sets
    work = tmp_path_factory.mktemp("search")
    return run_search(tiny_model_dir, forget, retain, TINY_ROUND, TINY_SEARCH, work), work


@pytest.fixture
def files(tiny_sets, tmp_path):
    """The tiny forget and retain sets as JSONL files: [forget, retain]."""
    paths = []
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("\n".join(json.dumps(it) for it in items))
    return paths
