"""The one strict-configuration helper: unknown keys are errors with "did you mean", the file and the line.

Every typed config (``ASUConfig``, ``SearchConfig``, ``PipelineSettings``, ``GateThresholds``, the TOFU fine-tune
spec) is built from a plain mapping through :func:`check_keys`, and YAML files are read with
:func:`read_yaml_mapping`, which keeps each top-level key's line so errors can say ``settings.yaml:7``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing, UsageError


def where(source: str, lines: Mapping[str, int] | None, key: Any) -> str:
    """``source:line`` of ``key`` when its line is known, else ``source``."""
    return f"{source}:{lines[key]}" if lines and key in lines else source


def check_keys(values: Mapping[str, Any], known: Iterable[str] | type, *, what: str, source: str | None = None,
               lines: Mapping[str, int] | None = None) -> None:
    """Raise ``UsageError`` on the first key of ``values`` that ``known`` (names, or a dataclass) lacks.

    The message names ``source:line`` (when given), the key, the closest known name and every known name.
    """
    if not isinstance(values, Mapping):
        raise UsageError(f"{source or what}: the {what} must be a mapping of field names to values, got "
                         f"{type(values).__name__}")
    names = [f.name for f in fields(known)] if is_dataclass(known) else list(known)
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            prefix = f"{where(source, lines, key)}: " if source else ""
            raise UsageError(f"{prefix}unknown {what} field {key!r}{hint}; known fields: {', '.join(sorted(names))}")


def read_yaml_mapping(path: str | Path, what: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(mapping, {top-level key: line}) of a YAML file whose top level is a mapping (an empty file: ``{}``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileMissing(f"{what} {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the {what} must be a mapping of field names to values, got "
                         f"{type(data).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}
    return data, lines


__all__ = ["check_keys", "read_yaml_mapping", "where"]
