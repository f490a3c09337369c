"""Per-request evidence report (JSON and Markdown) under ``<work dir>/reports/<request id>/``.

The report holds ids, SHA-256 hashes, names and numbers only, never forget-request content: free-form inputs
are reduced to numbers (non-numeric figures are dropped) and to identifier-like names (anything else is
replaced by ``[redacted]``). It states that it is empirical evidence, not a formal guarantee.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asu.errors import InputFileMissing, UsageError
from pipelines.round.gate import EarlierRecheck, GateFigures, GateResult
from pipelines.tracking.runs import check_id, flatten_metrics
from pipelines.workspace import work_dir

STATEMENT = (
    "This report is empirical evidence, not a formal guarantee: the figures come from evaluations on finite "
    "question sets and attacks chosen in advance. They show how the model behaved on those tests; they do not "
    "prove that the information is gone from the weights or that no other probe can recover it."
)
REDACTED = "[redacted]"
_NAME = re.compile(r"^[A-Za-z0-9_.:\-/@]{1,128}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _name(value: Any) -> str:
    """``value`` as text if it is identifier-like (no spaces, at most 128 characters), else ``[redacted]``."""
    text = str(value)
    return text if _NAME.match(text) or text == REDACTED else REDACTED


def _opt(value: Any) -> str | None:
    return None if value is None else _name(value)


def _hashes(values: Mapping[str, str], what: str) -> dict[str, str]:
    out = {}
    for label, digest in values.items():
        if not (isinstance(digest, str) and _HEX64.match(digest)):
            raise UsageError(f"{what} {_name(label)!r} must be a SHA-256 hex digest (64 lowercase hex characters)")
        out[_name(label)] = digest
    return out


@dataclass(frozen=True)
class ValidationSummary:
    """The data-contract outcome reduced to counts and rule names (never offending values)."""

    passed: bool
    statistics: dict[str, int] = field(default_factory=dict)
    failed: tuple[str, ...] = ()  # "suite:expectation:field" of each failed rule
    warnings: int = 0

    @classmethod
    def from_result(cls, result: Any) -> ValidationSummary:
        """From ``data_contracts.ContractResult`` (or its ``to_dict()``) or a GX ``to_json_dict()`` result."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        stats = {_name(k): int(v) for k, v in (data.get("statistics") or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        failed = [":".join(_name(e.get(k, "")) for k in ("suite", "expectation", "field") if e.get(k))
                  for e in data.get("errors") or []]
        for r in data.get("results") or []:  # GX shape
            if not r.get("success", True):
                config = r.get("expectation_config") or {}
                column = (config.get("kwargs") or {}).get("column")
                failed.append(":".join(_name(x) for x in (config.get("type", "expectation"), column) if x))
        return cls(bool(data.get("success")), stats, tuple(failed), len(data.get("warnings") or []))

    def to_dict(self) -> dict[str, Any]:
        failed = [":".join(_name(p) for p in f.split(":")) for f in self.failed]
        return {"passed": bool(self.passed), "statistics": {_name(k): int(v) for k, v in self.statistics.items()},
                "failed": failed, "warnings": int(self.warnings)}


@dataclass(frozen=True)
class SearchCandidate:
    """One temperature-search candidate: its tau, numeric figures (others dropped) and whether it was chosen."""

    tau: float
    metrics: Mapping[str, Any] = field(default_factory=dict)
    chosen: bool = False
    run_id: str | None = None


@dataclass(frozen=True)
class ModelRef:
    """Where the round's model went in the registry."""

    name: str
    version: str | None
    aliases: tuple[str, ...] = ()
    parent_version: str | None = None


@dataclass(frozen=True)
class EvidenceReport:
    """Everything the evidence report states about one request (ids, hashes, names and numbers only).

    content_hashes: label -> SHA-256 (e.g. ``request``, ``forget_set``); config_digests likewise (``asu_config``,
    ``gate_thresholds``). metrics_before/after: optional nested evaluation figures, flattened with '/'.
    """

    request_id: str
    content_hashes: Mapping[str, str]
    validation: ValidationSummary
    method: str
    tau: float
    search: Sequence[SearchCandidate]
    before: GateFigures
    after: GateFigures
    gate: GateResult
    earlier: Sequence[EarlierRecheck]
    model: ModelRef
    code_version: str
    config_digests: Mapping[str, str]
    metrics_before: Mapping[str, Any] = field(default_factory=dict)
    metrics_after: Mapping[str, Any] = field(default_factory=dict)
    #: attempts that failed the gate before this model (``RoundRecord.failed_attempts``: settings, version, checks)
    failed_attempts: Sequence[Mapping[str, Any]] = ()
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def __post_init__(self) -> None:
        check_id(self.request_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema ``asu.evidence/1``)."""
        return {
            "schema": "asu.evidence/1",
            "statement": STATEMENT,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "content_hashes": _hashes(self.content_hashes, "content hash"),
            "validation": self.validation.to_dict(),
            "method": _name(self.method),
            "tau": float(self.tau),
            "search": [{"tau": float(c.tau), "chosen": bool(c.chosen), "run_id": _name(c.run_id) if c.run_id else None,
                        "metrics": flatten_metrics(c.metrics)} for c in self.search],
            "figures": {"before": _figures(self.before), "after": _figures(self.after)},
            "metrics": {"before": flatten_metrics(self.metrics_before), "after": flatten_metrics(self.metrics_after)},
            "gate": self.gate.to_dict(),
            "failed_attempts": [{"attempt": int(a["attempt"]), "model_version": _opt(a["model_version"]),
                                 "settings": {_name(k): float(v) for k, v in a["settings"].items()},
                                 "failed_checks": [_name(c) for c in a["failed_checks"]],
                                 "after": {_name(k): v for k, v in a["after"].items()}}
                                for a in self.failed_attempts],
            "earlier_requests": [{"request_id": r.request_id, "forget_efficacy_before": r.forget_efficacy_before,
                                  "forget_efficacy_after": r.forget_efficacy_after} for r in self.earlier],
            "model": {"name": _name(self.model.name), "version": _opt(self.model.version),
                      "aliases": [_name(a) for a in self.model.aliases],
                      "parent_version": _opt(self.model.parent_version)},
            "code_version": _name(self.code_version),
            "config_digests": _hashes(self.config_digests, "config digest"),
        }

    def to_markdown(self) -> str:
        """The Markdown form, rendered from ``to_dict()`` (so both say the same)."""
        return render_markdown(self.to_dict())


def _figures(f: GateFigures) -> dict[str, float | None]:
    return {"forget_efficacy": f.forget_efficacy, "utility": f.utility, "fluency": f.fluency, "mia_auc": f.mia_auc,
            "verbmem": f.verbmem, "retain_verbmem": f.retain_verbmem}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def render_markdown(d: Mapping[str, Any]) -> str:
    """Markdown of a report dict (``EvidenceReport.to_dict()`` or a saved ``report.json``)."""
    verdict = "PASSED" if d["gate"]["passed"] else "FAILED"
    out = [f"# Evidence report: request {d['request_id']}", "", f"> {d['statement']}", "",
           f"Created {d['created_at']} · code `{d['code_version']}` · gate **{verdict}**", "",
           "## Request content (SHA-256; the content itself is never stored here)", ""]
    out += _table(["item", "SHA-256"], list(d["content_hashes"].items()))
    for section in (_md_validation, _md_search, _md_figures, _md_verbatim, _md_robustness, _md_gate, _md_attempts,
                    _md_earlier, _md_model):
        out += ["", *section(d)]
    return "\n".join(out) + "\n"


def _md_validation(d: Mapping[str, Any]) -> list[str]:
    v = d["validation"]
    stats = ", ".join(f"{k}: {n}" for k, n in v["statistics"].items())
    out = ["## Validation", "", f"Data contract {'passed' if v['passed'] else 'failed'}"
           f"{'; ' + stats if stats else ''}; warnings: {v['warnings']}."]
    return out + [f"- failed rule: `{f}`" for f in v["failed"]]


def _md_search(d: Mapping[str, Any]) -> list[str]:
    out = ["## Method and temperature", "", f"Method `{d['method']}`, chosen tau **{_fmt(d['tau'])}**.", ""]
    if not d["search"]:
        return [*out, "No temperature search was run."]
    keys = sorted({k for c in d["search"] for k in c["metrics"]})
    rows = [[c["tau"], *(c["metrics"].get(k) for k in keys), c["chosen"]] for c in d["search"]]
    return out + _table(["tau", *keys, "chosen"], rows)


def _md_figures(d: Mapping[str, Any]) -> list[str]:
    checks = {c["name"]: c for c in d["gate"]["checks"] if not c["subject"]}
    rows = []
    for figure, name in (("forget_efficacy", "forget_efficacy"), ("utility", "utility_drop"), ("fluency", "fluency"),
                         ("mia_auc", "mia_auc")):
        c = checks.get(name, {})
        rows.append([figure, d["figures"]["before"][figure], d["figures"]["after"][figure], name, c.get("value"),
                     f"{c.get('comparator', '')} {_fmt(c.get('threshold'))}", c.get("status", "-")])
    out = ["## Figures before and after, against the gate", ""]
    out += _table(["figure", "before", "after", "check", "value", "threshold", "result"], rows)
    out += ["", "Fluency is the share of forget answers that `asu.fluency` judges fluent: none empty, looping, a run "
            "of punctuation or letters, symbols or an echo of the prompt, and each about as likely under the model "
            "the round started from as fluent reference text. Refusals count as fluent; their share is "
            f"{_fmt(d['metrics']['before'].get('refusal'))} before and {_fmt(d['metrics']['after'].get('refusal'))} "
            "after."]
    before, after = d["metrics"]["before"], d["metrics"]["after"]
    if before or after:
        out += ["", "Other evaluation figures:", ""]
        rows = [[k, before.get(k), after.get(k)] for k in sorted({*before, *after})
                if not k.startswith("robustness/")]
        out += _table(["metric", "before", "after"], rows)
    return out


def _md_verbatim(d: Mapping[str, Any]) -> list[str]:
    before, after = d["figures"]["before"], d["figures"]["after"]
    out = ["## Verbatim memorisation (text requests)", ""]
    knowmem = [d["metrics"]["before"].get("forget_knowmem"), d["metrics"]["after"].get("forget_knowmem")]
    if knowmem[1] is not None:
        out += ["KnowMem: ROUGE-L F1 of the greedy answers to the request's knowledge questions (never trained or "
                "searched on), against their answers.", "",
                *_table(["questions", "KnowMem before", "after"], [["knowledge questions", *knowmem]]), ""]
    if after.get("verbmem") is None:
        return [*out, "The request holds no passages."]
    checks = {c["subject"]: c for c in d["gate"]["checks"] if c["name"] == "verbatim"}
    rows = [["forget passages", before.get("verbmem"), after.get("verbmem"),
             checks.get("forget", {}).get("status", "-")],
            ["retain passages", before.get("retain_verbmem"), after.get("retain_verbmem"),
             checks.get("retain", {}).get("status", "not measured")]]
    out += ["VerbMem: ROUGE-L F1 of the greedy continuation of each reported passage's first 32 tokens against its "
            "next 48 (MUSE's verbatim memorisation; the passages themselves are never stored here).", ""]
    return out + _table(["passages", "VerbMem before", "after", "gate"], rows)


def _md_robustness(d: Mapping[str, Any]) -> list[str]:
    attacks: dict[str, dict[str, float]] = {}
    for key, value in d["metrics"]["after"].items():  # flattened: robustness/<attack>/<figure>
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "robustness":
            attacks.setdefault(parts[1], {})[parts[2]] = value
    out = ["## Robustness of the forgetting", ""]
    if not attacks:
        return [*out, "No attack was run (pipeline settings: robustness.attacks)."]
    checks = {c["subject"]: c for c in d["gate"]["checks"] if c["name"] == "attack_recovery"}
    rows = [[name, a.get("baseline_fact_recall"), a.get("fact_recall"), a.get("recovery"),
             checks.get(name, {}).get("status", "not required")] for name, a in sorted(attacks.items())]
    out += ["Share of the forget answers' facts the candidate states, plainly and under each attack "
            "(`asu.robustness`); recovery = under attack - plainly.", ""]
    return out + _table(["attack", "fact recall", "under attack", "recovery", "gate"], rows)


def _md_gate(d: Mapping[str, Any]) -> list[str]:
    rows = [[c["name"], c["subject"], c["value"], f"{c['comparator']} {_fmt(c['threshold'])}", c["status"],
             c["reason"]] for c in d["gate"]["checks"]]
    return ["## Gate checks", "", *_table(["check", "request", "value", "threshold", "result", "reason"], rows)]


def _md_attempts(d: Mapping[str, Any]) -> list[str]:
    attempts = d.get("failed_attempts") or []  # reports written before gate retries have none
    if not attempts:
        return []
    out = ["## Earlier attempts", "", "Settings whose round failed the gate before the search's next-best one was "
           "trained (each registered as a failed candidate):", ""]
    rows = [[a["attempt"], a["settings"].get("tau"), a["settings"].get("learning_rate"),
             a["settings"].get("forget_weight"), a["model_version"], ", ".join(a["failed_checks"]),
             a["after"].get("forget_efficacy"), a["after"].get("retain_rouge"), a["after"].get("fluency")]
            for a in attempts]
    return out + _table(["attempt", "tau", "lr", "lambda", "version", "failed checks", "forget efficacy",
                         "retain ROUGE-L", "fluent"], rows)


def _md_earlier(d: Mapping[str, Any]) -> list[str]:
    if not d["earlier_requests"]:
        return ["## Earlier requests re-checked", "", "None: no request was forgotten before this one."]
    rows = [[r["request_id"], r["forget_efficacy_before"], r["forget_efficacy_after"],
             None if None in (r["forget_efficacy_before"], r["forget_efficacy_after"])
             else r["forget_efficacy_before"] - r["forget_efficacy_after"]] for r in d["earlier_requests"]]
    return ["## Earlier requests re-checked", "", *_table(["request", "forget efficacy then", "now", "resurgence"],
                                                          rows)]


def _md_model(d: Mapping[str, Any]) -> list[str]:
    m = d["model"]
    aliases = ", ".join(f"`{a}`" for a in m["aliases"]) or "none"
    return ["## Model", "", f"Registered model `{m['name']}` version **{_fmt(m['version'])}**, aliases {aliases}, "
            f"built from version {_fmt(m['parent_version'])}.", "", "## Code and configuration", "",
            f"Code version `{d['code_version']}`.", "", *_table(["configuration", "SHA-256"],
                                                                list(d["config_digests"].items()))]


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def report_dir(request_id: str, work: str | Path | None = None) -> Path:
    """``<work dir>/reports/<request id>``."""
    return work_dir(work) / "reports" / check_id(request_id)


def write_report(report: EvidenceReport, work: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` (each atomically); returns their paths."""
    folder = report_dir(report.request_id, work)
    folder.mkdir(parents=True, exist_ok=True)
    data = _finite(report.to_dict())
    paths = []
    for name, text in (("report.json", json.dumps(data, indent=2, allow_nan=False)),
                       ("report.md", render_markdown(data))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
        paths.append(folder / name)
    return paths[0], paths[1]


def load_report(request_id: str, work: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """The saved report of ``request_id``: (JSON dict, Markdown text)."""
    folder = report_dir(request_id, work)
    json_path, md_path = folder / "report.json", folder / "report.md"
    if not json_path.is_file():
        raise InputFileMissing(f"no evidence report for request {request_id!r} in {folder}; it is written when the "
                                "request finishes processing (check the work dir: --work-dir or ASU_WORK_DIR)")
    data = json.loads(json_path.read_text())
    return data, md_path.read_text() if md_path.is_file() else render_markdown(data)
