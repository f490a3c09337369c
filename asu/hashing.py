"""The one content hasher: hex SHA-256 of bytes, canonical JSON, files, folders and QA items.

Logs, MLflow, reports and caches refer to content by these digests, never by the content itself. Canonical JSON:
sorted keys, no whitespace, non-ASCII kept as UTF-8, anything else by ``str``. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(obj: Any) -> str:
    """Digest of ``obj``'s canonical JSON (equal data, equal digest, whatever the key order)."""
    return sha256_text(canonical_json(obj))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_dir(path: str | Path, exclude: Sequence[str] = (), files: Iterable[Path] | None = None) -> str:
    """Digest of a folder: each file's relative path and content digest, in path order.

    ``exclude``: relative paths skipped; ``files``: hash only these files of the folder. The model registry
    stores this digest per version (``asu.model_sha256``) and checks every download against it.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file())):
        rel = file.relative_to(root).as_posix()
        if rel not in exclude:
            digest.update(f"{rel}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def qa_items_sha256(items: Iterable[Mapping[str, str]]) -> str:
    """Digest of QA items in order (question and answer of each, a passage's text; other fields ignored)."""
    return sha256_json([[item["question"], item["answer"]] if "question" in item else [item["text"]]
                        for item in items])


def qa_item_sha256(item: Mapping[str, str]) -> str:
    """Digest of one QA item (question and answer) or passage (``{"text"}``: its text)."""
    return sha256_json([item["question"], item["answer"]] if "question" in item else [item["text"]])


__all__ = ["canonical_json", "qa_item_sha256", "qa_items_sha256", "sha256_bytes", "sha256_dir", "sha256_file",
           "sha256_json", "sha256_text"]
