"""The pipeline's work dir: the one place that decides where the ledger, MLflow store, rounds and reports live.

``path`` when given (``--work-dir``), else ``$ASU_WORK_DIR``, else ``./asu-work``; always absolute, so a process
that changes directory later still writes to the same place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WORK_DIR_ENV, DEFAULT_WORK_DIR = "ASU_WORK_DIR", "asu-work"


def work_dir(path: str | Path | None = None) -> Path:
    """The work dir (absolute): ``path``, else ``$ASU_WORK_DIR``, else ``./asu-work``."""
    return Path(path or os.environ.get(WORK_DIR_ENV) or DEFAULT_WORK_DIR).expanduser().resolve()


@contextmanager
def using_work_dir(path: str | Path | None) -> Iterator[Path]:
    """Within the block, ``path`` (when given) is the work dir of this process and of the flows it runs."""
    previous = os.environ.get(WORK_DIR_ENV)
    if path is not None:
        os.environ[WORK_DIR_ENV] = str(work_dir(path))
    try:
        yield work_dir()
    finally:
        if path is not None:
            if previous is None:
                os.environ.pop(WORK_DIR_ENV, None)
            else:
                os.environ[WORK_DIR_ENV] = previous


__all__ = ["DEFAULT_WORK_DIR", "WORK_DIR_ENV", "using_work_dir", "work_dir"]
