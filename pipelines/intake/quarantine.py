"""Quarantine: the original bytes of every refused request file, kept byte for byte with the reasons beside them.

Layout: ``<work dir>/quarantine/<UTC time>-<8 hex>-<file name>`` plus ``<same>.reasons.json`` (problems: file,
lines, field, message, fix; never content). Oversized files are copied in 1 MiB chunks, skipping holes of
sparse files, so quarantining never loads a file into memory. ``purge_quarantine`` removes files older than
the retention.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from pipelines.ledger.schema import utcnow

logger = logging.getLogger(__name__)
CHUNK = 2**20
REASONS_SUFFIX = ".reasons.json"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:] or "request"


def _copy_data_segments(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` chunk by chunk, keeping holes of sparse files as holes."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd, size, pos = fin.fileno(), os.fstat(fin.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole remains
                    break
                start, end = pos, size  # no hole support: plain copy
            fin.seek(start)
            fout.seek(start)
            while start < end:
                chunk = fin.read(min(CHUNK, end - start))
                if not chunk:
                    break
                fout.write(chunk)
                start += len(chunk)
            pos = end
        fout.truncate(size)


def quarantine(source: Path, quarantine_dir: Path, problems: list[dict], *, data: bytes | None = None) -> Path:
    """Keep the original bytes of ``source`` (``data`` if already read) and the reasons; returns the copy's path."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    target = quarantine_dir / f"{stamp}-{uuid.uuid4().hex[:8]}-{_safe_name(source.name)}"
    if data is not None:
        target.write_bytes(data)
    elif source.is_file():
        _copy_data_segments(source, target)
    reasons = {"source": source.name, "quarantined_at": stamp, "problems": problems}
    Path(f"{target}{REASONS_SUFFIX}").write_text(json.dumps(reasons, indent=2), encoding="utf-8")
    logger.info("quarantined %s as %s (%d problem(s))", source.name, target.name, len(problems))
    return target


def purge_quarantine(quarantine_dir: Path, older_than: timedelta, *, now: datetime | None = None) -> list[Path]:
    """Delete quarantined files (and their reasons) modified before ``now - older_than``; returns them."""
    if not quarantine_dir.is_dir():
        return []
    cutoff = ((now or utcnow()) - older_than).timestamp()
    removed = []
    for path in sorted(quarantine_dir.iterdir()):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(path)
    return removed
