"""MUSE-News evaluation files: loading, validation and digests.

The files (Shi et al. 2024, arXiv:2407.06460, CC BY 4.0; ``asu/vendor/muse/SOURCES.md``) are JSON arrays in the
MUSE-News layout under one folder:

- ``verbmem/forget.json``: ``[{prompt, gt}]``, a forget-passage prefix and its true continuation;
- ``knowmem/forget_qa.json``, ``knowmem/retain2_qa.json``: ``[{question, answer}]``;
- ``knowmem/forget_qa_icl.json``, ``knowmem/retain2_qa_icl.json``: ``[{question, answer}]`` in-context examples;
- ``privleak/forget.json``, ``privleak/holdout.json``: ``[str]`` text chunks (trained on / never trained on).

Errors name the file, the item index (0-based) and the field, and say what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing, UsageError
from asu.hashing import sha256_file, sha256_text
from asu.metrics.passes import EvaluationDataError

#: Relative path of each file of the suite, by role.
MUSE_FILES: dict[str, str] = {
    "verbmem_forget": "verbmem/forget.json",
    "knowmem_forget": "knowmem/forget_qa.json",
    "knowmem_forget_icl": "knowmem/forget_qa_icl.json",
    "knowmem_retain": "knowmem/retain2_qa.json",
    "knowmem_retain_icl": "knowmem/retain2_qa_icl.json",
    "privleak_forget": "privleak/forget.json",
    "privleak_holdout": "privleak/holdout.json",
}
_FIELDS: dict[str, tuple[str, ...]] = {
    "verbmem_forget": ("prompt", "gt"),
    "knowmem_forget": ("question", "answer"),
    "knowmem_forget_icl": ("question", "answer"),
    "knowmem_retain": ("question", "answer"),
    "knowmem_retain_icl": ("question", "answer"),
    "privleak_forget": (),  # plain strings
    "privleak_holdout": (),
}
#: Sets that ``limit`` shortens (the in-context examples are always used whole).
LIMITED_SETS = ("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak_forget", "privleak_holdout")


def vendored_muse_news_dir() -> Path:
    """Folder of the vendored MUSE-News files (``asu/vendor/muse/news``)."""
    return Path(__file__).resolve().parent.parent / "vendor" / "muse" / "news"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return sha256_file(path)


def _read_array(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileMissing(
            f"{path}: MUSE file missing; the data folder must hold the MUSE-News layout "
            f"({', '.join(MUSE_FILES.values())}), or leave data_dir unset to use the vendored copy"
        ) from None
    except UnicodeDecodeError as err:
        raise EvaluationDataError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvaluationDataError(
            f"{path}:{err.lineno}: invalid JSON ({err.msg}); MUSE files are JSON arrays, fix that line"
        ) from None
    if not isinstance(rows, list):
        raise EvaluationDataError(f"{path}: expected a JSON array of items, got a JSON {type(rows).__name__}")
    if not rows:
        raise EvaluationDataError(f"{path}: no items; an evaluation set needs at least one")
    return rows


def _check(rows: list[Any], fields: tuple[str, ...], path: Path) -> None:
    for i, row in enumerate(rows):
        where = f"{path}, item {i}"
        if not fields:
            if not isinstance(row, str) or not row.strip():
                raise EvaluationDataError(f"{where}: must be a non-empty string (a text chunk); fix or remove it")
            continue
        if not isinstance(row, dict):
            raise EvaluationDataError(f"{where}: expected an object with fields {', '.join(fields)}")
        for name in fields:
            if name not in row:
                raise EvaluationDataError(f"{where}: missing field {name!r}; every item needs {', '.join(fields)}")
            if not isinstance(row[name], str) or not row[name].strip():
                raise EvaluationDataError(f"{where}: field {name!r} must be a non-empty string; fix or remove it")


@dataclass(frozen=True)
class MuseData:
    """The MUSE-News sets (see the module docstring), where they came from and each file's sha256."""

    folder: str
    sets: dict[str, list[Any]]
    files: dict[str, str]  # relative path -> sha256 of the whole file (also when ``limit`` shortened a set)
    limit: int | None = None

    @property
    def item_counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.sets.items()}

    @property
    def digest(self) -> str:
        """sha256 over the files' digests (one value naming the exact data used)."""
        return sha256_text(json.dumps(self.files, sort_keys=True))


def load_muse_news(data_dir: str | Path | None = None, limit: int | None = None) -> MuseData:
    """Read and check every MUSE-News file; ``limit`` keeps the first ``limit`` items of each evaluated set."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be a positive integer (or None for every item), got {limit!r}")
    folder = Path(data_dir) if data_dir is not None else vendored_muse_news_dir()
    if not folder.is_dir():
        raise InputFileMissing(f"MUSE data folder {folder} does not exist; pass a folder in the MUSE-News layout")
    sets, files = {}, {}
    for name, rel in MUSE_FILES.items():
        path = folder / rel
        rows = _read_array(path)
        _check(rows, _FIELDS[name], path)
        sets[name] = rows[:limit] if limit is not None and name in LIMITED_SETS else rows
        files[rel] = file_sha256(path)
    return MuseData(folder=str(folder), sets=sets, files=files, limit=limit)


__all__ = ["LIMITED_SETS", "MUSE_FILES", "MuseData", "file_sha256", "load_muse_news", "vendored_muse_news_dir"]
