"""Typed outcome of a contract run: each failed expectation with its offending rows (line numbers, never content)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from asu.errors import UsageError

Severity = Literal["error", "warning"]
MAX_LINES_SHOWN = 10


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation that did not hold.

    ``lines`` are 1-based line numbers in the submitted file (the line where the offending row starts); empty
    for table-level expectations (row count). ``count`` is the number of offending rows. ``message`` and
    ``fix`` never quote the submitted content.
    """

    source: str
    suite: str
    expectation: str
    field: str
    message: str
    fix: str
    severity: Severity
    lines: tuple[int, ...] = ()
    count: int = 0

    def __str__(self) -> str:
        where = self.source
        if self.lines:
            shown = ", ".join(str(n) for n in self.lines[:MAX_LINES_SHOWN])
            more = f" and {len(self.lines) - MAX_LINES_SHOWN} more" if len(self.lines) > MAX_LINES_SHOWN else ""
            where += f":{shown}{more}" if len(self.lines) == 1 else f": lines {shown}{more}"
        return f"{where}: field {self.field!r}: {self.message}; fix: {self.fix}"

    def to_dict(self) -> dict:
        return {**asdict(self), "lines": list(self.lines)}


@dataclass(frozen=True)
class ContractResult:
    """Outcome of validating one request against its suites.

    ``errors`` make the request invalid; ``warnings`` are reported (e.g. records already forgotten by an earlier
    request) but do not reject it. ``statistics``: evaluated / successful / unsuccessful expectation counts.
    ``seconds``: wall time of the GX runs. Report paths are set when a report folder was given.
    """

    source: str
    errors: tuple[FailedExpectation, ...]
    warnings: tuple[FailedExpectation, ...]
    statistics: dict[str, int]
    seconds: float
    report_json: Path | None = None
    report_html: Path | None = None
    suites: tuple[str, ...] = field(default=())

    @property
    def success(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "success": self.success,
            "errors": [e.to_dict() for e in self.errors],
            "warnings": [w.to_dict() for w in self.warnings],
            "statistics": dict(self.statistics),
            "seconds": round(self.seconds, 4),
            "suites": list(self.suites),
            "report_json": str(self.report_json) if self.report_json else None,
            "report_html": str(self.report_html) if self.report_html else None,
        }


class ContractViolation(UsageError):
    """A request broke its data contract; ``result.errors`` lists every failed expectation with its lines.

    ``str(err)`` is a multi-line message: one line per failed expectation naming file, lines, field and the fix.
    """

    def __init__(self, result: ContractResult) -> None:
        self.result = result
        head = f"{result.source}: the request breaks {len(result.errors)} data-contract rule(s):"
        super().__init__("\n".join([head, *(f"  {e}" for e in result.errors)]))

    @property
    def failures(self) -> tuple[FailedExpectation, ...]:
        return self.result.errors
