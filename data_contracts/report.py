"""Validation report of one request: ``validation.json`` (our summary + GX's result) and ``validation.html`` (GX).

Both are free of request content: GX's lists of unexpected and observed values are removed before anything is
written or rendered (rows are identified by line number), and large value sets (SHA-256 keys of the retain set and of
earlier requests) are replaced by their size. GX's HTML loads its CSS from CDNs, so offline it shows unstyled
but complete.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from data_contracts.errors import ContractResult

logger = logging.getLogger(__name__)

CONTENT_KEYS = (
    "unexpected_list",
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "unexpected_index_list",
    "partial_unexpected_index_list",
    "unexpected_index_query",
    "unexpected_rows",
    "details",
)
MAX_VALUE_SET = 20


def sanitise(gx_result) -> None:
    """Strip content from a GX ``ExpectationSuiteValidationResult`` in place (values, indices, big value sets)."""
    for res in gx_result.results:
        for key in CONTENT_KEYS:
            res.result.pop(key, None)
        observed = res.result.get("observed_value")
        if isinstance(observed, list | tuple | set | dict):  # e.g. the distinct values of a column
            res.result["observed_value"] = f"<{len(observed)} values>"
        kwargs = res.expectation_config.kwargs
        values = kwargs.get("value_set")
        if isinstance(values, list | tuple | set) and len(values) > MAX_VALUE_SET:
            kwargs["value_set"] = [f"<{len(values)} values>"]
    gx_result.meta.pop("batch_parameters", None)


def _merged(gx_results):
    from great_expectations.core import ExpectationSuiteValidationResult

    results = [r for g in gx_results for r in g.results]
    evaluated = len(results)
    ok = sum(1 for r in results if r.success)
    stats = {
        "evaluated_expectations": evaluated,
        "successful_expectations": ok,
        "unsuccessful_expectations": evaluated - ok,
        "success_percent": 100.0 * ok / evaluated if evaluated else 100.0,
    }
    return ExpectationSuiteValidationResult(
        success=all(g.success for g in gx_results), results=results, suite_name="forget_request",
        statistics=stats, meta=dict(gx_results[0].meta) if gx_results else {},
    )


def write_report(result: ContractResult, gx_results: list, out_dir: Path) -> ContractResult:
    """Write ``validation.json`` and ``validation.html`` under ``out_dir``; returns ``result`` with their paths."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    out_dir.mkdir(parents=True, exist_ok=True)
    for gx_result in gx_results:
        sanitise(gx_result)
    merged = _merged(gx_results)
    html_path, json_path = out_dir / "validation.html", out_dir / "validation.json"
    html_path.write_text(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(merged)),
                         encoding="utf-8")
    result = replace(result, report_json=json_path, report_html=html_path)
    summary = {**result.to_dict(), "great_expectations": [g.to_json_dict() for g in gx_results]}
    json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    logger.info("validation report written to %s", out_dir)
    return result
