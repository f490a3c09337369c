"""Content-addressed storage of evaluation results.

A result is keyed by the model's content hash, the evaluated data's digests, the suite, the metric settings and
this module's ``METRICS_VERSION``: an unchanged evaluation is read back instead of recomputed, and any change (new
weights, other items, another setting, a formula fix) gives a new key, so a stale result is never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asu.metrics.results import SuiteResult

logger = logging.getLogger(__name__)

#: Bump when a metric's computation changes: every stored result then goes stale.
METRICS_VERSION = 1
#: Files that change nothing the model computes (training metadata), left out of the model hash.
METADATA_FILES = frozenset({"round.json", "embedded.json", "README.md"})


def model_digest(model_dir: str | Path, chunk_mb: int = 8) -> str:
    """sha256 (16 hex digits) over the relative path and bytes of every file in the model folder but metadata."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such model folder")
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in METADATA_FILES):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(chunk_mb << 20):
                h.update(block)
    return h.hexdigest()[:16]


def result_key(suite: str, model_hash: str, data_digests: dict[str, str], settings: dict[str, Any]) -> str:
    """Key (24 hex digits) of one evaluation: suite, model hash, data digests, settings, METRICS_VERSION."""
    payload = {
        "suite": suite, "model": model_hash, "data": data_digests, "settings": settings, "metrics": METRICS_VERSION,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cached(store_dir: str | Path | None, key: str, compute: Callable[[], SuiteResult]) -> tuple[SuiteResult, bool]:
    """(result, reused): the stored result under ``key`` if any, else ``compute()`` saved under ``key``.

    ``store_dir=None`` always computes and stores nothing.
    """
    if store_dir is None:
        return compute(), False
    path = Path(store_dir) / f"{key}.json"
    if path.is_file():
        try:
            result = SuiteResult.load(path)
            logger.info("evaluation %s reused from %s", key, path)
            return result, True
        except ValueError:
            logger.warning("stored evaluation %s is unreadable; recomputing", path)
    result = compute()
    result.info["key"] = key
    result.save(path)
    return result, False


__all__ = ["METRICS_VERSION", "cached", "model_digest", "result_key"]
