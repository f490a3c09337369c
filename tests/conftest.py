"""Shared fixtures: offline environment and a tiny model that has really memorised a few TOFU authors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports transformers, datasets, MLflow or Prefect: tests never touch the network
# (the `asu` command's own offline settings; cli.main imports nothing heavy).
from cli.main import OFFLINE_ENV  # noqa: E402

for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)
# Hermetic Prefect state (its database and results) per test run, outside the home directory.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="asu-test-prefect-"))


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """``asu`` main() configures root logging on the (captured, later closed) stderr: drop what a test added."""
    import logging

    handlers = list(logging.root.handlers)
    yield
    logging.root.handlers[:] = handlers


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the "tiny" embedded model (4 TOFU authors memorised), built once per test session."""
    from asu.embedded import ensure_embedded_model

    return ensure_embedded_model("tiny", cache_dir=tmp_path_factory.mktemp("asu_cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer (byte-level BPE with a chat template, EOS and padding tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_sets() -> tuple[list[dict], list[dict]]:
    """(forget, retain) QA items of the tiny model: its first author, and the other three."""
    from asu.embedded import EMBEDDED_SPECS, tofu_items

    authors = EMBEDDED_SPECS["tiny"].authors
    return tofu_items(authors[:1]), tofu_items(authors[1:])


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (temporary API server and database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def tiny_search(tiny_model_dir, tiny_sets, tmp_path_factory):
    """One complete settings search on the tiny model (shared by the tests that only read its outcome)."""
    from search_helpers import TINY_ROUND, TINY_SEARCH

    from pipelines.temperature_search import run_search

    forget, retain = tiny_sets
    work = tmp_path_factory.mktemp("search")
    return run_search(tiny_model_dir, forget, retain, TINY_ROUND, TINY_SEARCH, work), work


@pytest.fixture
def files(tiny_sets, tmp_path):
    """The tiny forget and retain sets as JSONL files: [forget, retain]."""
    import json

    paths = []
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("\n".join(json.dumps(it) for it in items))
    return paths
