"""Content-addressed storage of evaluation results.

A result is keyed by the model's content hash, the evaluated data's digests, the suite, the metric settings and
this module's ``METRICS_VERSION``: an unchanged evaluation is read back instead of recomputed, and any change (new
weights, other items, another setting, a formula fix) gives a new key, so a stale result is never reused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing
from asu.hashing import sha256_dir, sha256_json
from asu.metrics.results import SuiteResult

logger = logging.getLogger(__name__)

#: Bump when a metric's computation changes: every stored result then goes stale.
METRICS_VERSION = 1
#: Files that change nothing the model computes (training metadata), left out of the model hash.
METADATA_FILES = frozenset({"round.json", "embedded.json", "README.md"})


_DIGESTS: dict[tuple, str] = {}  # (folder, files' (name, size, mtime)) -> digest: one hash per model per process


def model_digest(model_dir: str | Path) -> str:
    """sha256 (16 hex digits) over the relative path and bytes of every file in the model folder but metadata.

    Remembered for the process while no file's size or modification time changes (a round, its measurement and the
    benchmarks ask for the same folder's digest several times; hashing 0.5 GB takes seconds).
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise InputFileMissing(f"{root}: no such model folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in METADATA_FILES)
    signature = (str(root.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if signature in _DIGESTS:
        return _DIGESTS[signature]
    _DIGESTS[signature] = sha256_dir(root, files=files)[:16]
    return _DIGESTS[signature]


def result_key(suite: str, model_hash: str, data_digests: dict[str, str], settings: dict[str, Any]) -> str:
    """Key (24 hex digits) of one evaluation: suite, model hash, data digests, settings, METRICS_VERSION."""
    payload = {
        "suite": suite, "model": model_hash, "data": data_digests, "settings": settings, "metrics": METRICS_VERSION,
    }  # fmt: skip
    return sha256_json(payload)[:24]


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


def cached_figures(store_dir: str | Path, key: str, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Plain figures (a JSON object) stored under ``key``, computed and saved when absent or unreadable."""
    path = Path(store_dir) / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            logger.warning("stored figures %s are unreadable; recomputing", path)
    figures = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file under a key
    return figures


__all__ = ["METRICS_VERSION", "cached", "cached_figures", "model_digest", "result_key"]
