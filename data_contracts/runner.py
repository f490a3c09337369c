"""Run code-defined suites on pandas frames in an ephemeral GX context and return a typed result.

``validate_frames({"header": (df, suite), "records": (df, suite)}, source=...)`` validates each frame with
``result_format="COMPLETE"``, maps failed rows (DataFrame indices) to the frame's ``line`` column, and returns a
``ContractResult``; it raises ``ContractViolation`` when an expectation of severity ``critical`` fails. A row
whose value is missing or of the wrong type is reported once, under that check, not again under its length or
pattern checks. Great Expectations is imported here only, on first use (~3 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from data_contracts.errors import ContractResult, ContractViolation, FailedExpectation

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

logger = logging.getLogger(__name__)

# Checks whose failing rows hide later failures of the same rows in the same column.
PRIMARY = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_of_type")


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(context, frame: pd.DataFrame, suite: gx.ExpectationSuite, name: str):
    """Validate ``frame`` against ``suite``; returns GX's ``ExpectationSuiteValidationResult``."""
    import great_expectations as gx

    batch = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(f"{name}_asset")
    definition = batch.add_batch_definition_whole_dataframe(f"{name}_batch")
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(gx.ValidationDefinition(data=definition, suite=suite, name=name))
    return validation.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")


def _failures(gx_result, frame: pd.DataFrame, suite_name: str, source: str) -> list[FailedExpectation]:
    lines = frame["line"].tolist() if "line" in frame.columns else None
    order = sorted(gx_result.results, key=lambda r: r.expectation_config.type not in PRIMARY)
    reported: dict[str, set[int]] = {}
    out = []
    for res in order:
        config = res.expectation_config
        if res.exception_info and res.exception_info.get("raised_exception"):
            # A suite bug, not bad input: surface it loudly instead of hiding it in a rejection.
            raise RuntimeError(f"expectation {config.type} on {config.kwargs.get('column')} raised: "
                               f"{res.exception_info.get('exception_message')}")
        if res.success:
            continue
        column = config.kwargs.get("column")
        indices = [int(i) for i in res.result.get("unexpected_index_list") or []]
        if column is not None and indices:
            seen = reported.setdefault(column, set())
            indices = [i for i in indices if i not in seen]
            if config.type in PRIMARY:
                seen.update(indices)
            if not indices:
                continue
        meta = config.meta or {}
        severity = "warning" if str(getattr(config.severity, "value", config.severity)) == "warning" else "error"
        row_lines = tuple(sorted({int(lines[i]) for i in indices})) if lines is not None else ()
        message = meta.get("message", config.type)
        observed = res.result.get("observed_value")
        if not indices and observed is not None and isinstance(observed, int | float):
            message += f" (found {observed})"
        out.append(FailedExpectation(
            source=source, suite=suite_name, expectation=config.type, field=meta.get("field", column or "table"),
            message=message, fix=meta.get("fix", "see the validation report"), severity=severity,
            lines=row_lines, count=len(indices) if indices else int(res.result.get("unexpected_count") or 0),
        ))
    return sorted(out, key=lambda f: (f.lines[:1] or (0,), f.field))


def validate_frames(
    frames: Mapping[str, tuple[pd.DataFrame, gx.ExpectationSuite]],
    *,
    source: str,
    report_dir: str | Path | None = None,
    raise_on_error: bool = True,
) -> ContractResult:
    """Validate each named ``(frame, suite)``; write a report to ``report_dir`` (JSON summary + GX HTML) if given.

    Raises ``ContractViolation`` (unless ``raise_on_error=False``) when any error-severity expectation fails.
    """
    start = time.perf_counter()
    context = _context()
    errors: list[FailedExpectation] = []
    warnings: list[FailedExpectation] = []
    gx_results = []
    stats = {"evaluated_expectations": 0, "successful_expectations": 0, "unsuccessful_expectations": 0}
    for name, (frame, suite) in frames.items():
        gx_result = run_suite(context, frame, suite, name)
        gx_results.append(gx_result)
        for key in stats:
            stats[key] += int(gx_result.statistics.get(key, 0))
        for failure in _failures(gx_result, frame, name, source):
            (warnings if failure.severity == "warning" else errors).append(failure)
    result = ContractResult(source=source, errors=tuple(errors), warnings=tuple(warnings), statistics=stats,
                            seconds=time.perf_counter() - start, suites=tuple(frames))
    if report_dir is not None:
        from data_contracts.report import write_report

        result = write_report(result, gx_results, Path(report_dir))
    logger.info("contracts on %s: %d errors, %d warnings, %.2f s", source, len(errors), len(warnings), result.seconds)
    if raise_on_error and not result.success:
        raise ContractViolation(result)
    return result
