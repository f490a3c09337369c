"""Data contracts of forget requests: Great Expectations suites defined in code, run in an ephemeral context.

Great Expectations is imported only when a suite is built or run (its import takes ~3 s).

- ``header_suite(limits)``, ``records_suite(kind, limits, ...)``: the suites (``data_contracts.forget_request``).
- ``validate_frames(frames, source=..., report_dir=...)``: runs them, returns ``ContractResult`` or raises
  ``ContractViolation`` listing each failed expectation with its lines and field (``data_contracts.runner``).
- ``RequestLimits``: size limits; ``data_contracts.schema``: field names and allowed values.
"""

from data_contracts.errors import ContractResult, ContractViolation, FailedExpectation
from data_contracts.forget_request import header_suite, records_suite
from data_contracts.limits import RequestLimits
from data_contracts.runner import validate_frames

__all__ = [
    "ContractResult",
    "ContractViolation",
    "FailedExpectation",
    "RequestLimits",
    "header_suite",
    "records_suite",
    "validate_frames",
]
