"""The one owner of the on-disk model cache: where it is and how a finished build is put in place.

``<cache>`` is ``$ASU_CACHE_DIR`` or ``~/.cache/asu``. Builds (the embedded model, converted real models, TOFU
target/retain fine-tunes) are written to a temporary sibling folder and renamed into place once complete, with a
marker file written last: a folder without its marker is never taken for a finished build.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$ASU_CACHE_DIR``, else ``~/.cache/asu``."""
    return Path(cache_dir or os.environ.get("ASU_CACHE_DIR") or Path.home() / ".cache" / "asu")


def publish(staging: Path, target: Path, marker: str) -> None:
    """Rename the finished build ``staging`` to ``target``; a ``target`` without ``marker`` is incomplete, replaced."""
    if target.exists() and not (target / marker).is_file():
        logger.warning("replacing incomplete build folder %s", target)
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not (target / marker).is_file():  # a concurrent build that finished first is fine
            raise


def build_once(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """``target`` if it holds ``marker``; else ``build(staging)`` into a temporary sibling, then publish it."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        publish(staging, target, marker)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


__all__ = ["build_once", "cache_root", "publish"]
