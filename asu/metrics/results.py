"""The result of an evaluation suite: aggregates, per-item values, and what was not computed (and why).

Every suite (TOFU, ASU paper, MUSE, WMDP) returns a ``SuiteResult``. It is plain data, saved as JSON: the
per-item values of a retain model's result are what forget quality and privleak read later, so they are kept
whole (generations included).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing, UsageError

SCHEMA_VERSION = 1


@dataclass
class SuiteResult:
    """Figures of one suite on one model.

    ``aggregates``: metric name -> value (0-1 scale unless the name says otherwise, e.g. ``privleak`` in %).
    ``per_item``: metric name -> list of per-item values (floats, or dicts with generations), item order of the
    data. ``not_computed``: metric name -> the reason it was not computed (a missing reference, an optional
    model not configured). ``info``: item counts, data digests, settings.
    """

    suite: str
    aggregates: dict[str, float] = field(default_factory=dict)
    per_item: dict[str, list[Any]] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteResult:
        return cls(
            suite=data["suite"],
            aggregates=dict(data.get("aggregates", {})),
            per_item=dict(data.get("per_item", {})),
            not_computed=dict(data.get("not_computed", {})),
            info=dict(data.get("info", {})),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    @classmethod
    def load(cls, path: str | Path) -> SuiteResult:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputFileMissing(f"{path}: no such evaluation result; run `asu eval` on that model first") from None
        except json.JSONDecodeError as err:
            msg = f"{path}: not an evaluation result (invalid JSON at line {err.lineno}); re-run `asu eval`"
            raise UsageError(msg) from err
        if not isinstance(data, dict) or "suite" not in data or "per_item" not in data:
            raise UsageError(f"{path}: not an evaluation result (no 'suite'/'per_item' keys); pass an `asu eval` file")
        return cls.from_dict(data)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


__all__ = ["SCHEMA_VERSION", "SuiteResult"]
