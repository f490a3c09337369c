"""What processing one forget request produced: one :class:`RoundRecord`, rendered for every audience.

``process_request`` builds it; the flow's result (:meth:`RoundRecord.to_dict`), the MLflow parameters and metrics
(:meth:`mlflow_params`, :meth:`mlflow_metrics`), the evidence report (``steps.write_evidence``), the ledger's
outcome detail (:meth:`ledger_outcome`) and the CLI and demo tables all read this record, so they cannot
disagree. It holds ids, hashes and numbers only, never request content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.round.gate import EarlierRecheck, GateResult
from pipelines.round.steps import Measurement
from pipelines.temperature_search.outcome import SearchOutcome

#: ``registered``: the candidate passed the gate; ``gate_failed``: it did not, or the search chose no setting.
RoundStatus = Literal["registered", "gate_failed"]


@dataclass
class RoundRecord:
    """One request's round: the champion it started from, the search, the figures, the gate and the new version.

    ``settings``: the chosen round settings (ASUConfig fields: tau, learning_rate, forget_weight, ...), None when
    the search chose none; then ``before``/``after``/``gate``/``version`` are None too.
    ``seconds``: wall time per step (search, round, measure_before, measure_after, ...).
    """

    request_id: str
    forget_sha256: str
    champion_version: str
    search: SearchOutcome
    settings: dict[str, Any] | None = None
    before: Measurement | None = None
    after: Measurement | None = None
    gate: GateResult | None = None
    rechecks: list[EarlierRecheck] = field(default_factory=list)
    version: str | None = None
    promoted: bool = False
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: which setting the figures are of: 1 = the search's choice, 2.. = a gate retry (gentler strength or runner-up)
    attempt: int = 1
    #: the attempts that failed the gate before this one: attempt, settings, model_version, failed_checks, after
    failed_attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> RoundStatus:
        return "registered" if self.gate is not None and self.gate.passed else "gate_failed"

    @property
    def tau(self) -> float | None:
        return None if self.settings is None else float(self.settings["tau"])

    @property
    def failed_checks(self) -> list[str]:
        if self.gate is None:
            return ["temperature_search"]
        return [c.name for c in self.gate.failed]

    def to_dict(self) -> dict[str, Any]:
        """The flow's result: plain JSON (ids, numbers, the report's path)."""
        out: dict[str, Any] = {"request_id": self.request_id, "status": self.status, "tau": self.tau,
                               "parent_version": self.champion_version, "failed_checks": self.failed_checks,
                               "search": self.search.status, "seconds": dict(self.seconds),
                               "table": self.table_row()}
        if self.gate is None:
            return out | {"reason": self.search.status}
        return out | {
            "model_version": self.version, "promoted": self.promoted, "settings": dict(self.settings or {}),
            "before": self.before.to_dict(), "after": self.after.to_dict(), "gate": self.gate.to_dict(),
            "report": None if self.report is None else str(self.report),
            "attempt": self.attempt, "failed_attempts": list(self.failed_attempts),
        }

    def mlflow_params(self) -> dict[str, Any]:
        """The chosen settings as the request run's parameters (none when nothing was chosen)."""
        if self.settings is None:
            return {"search_outcome": self.search.status}
        s = self.settings
        return {"tau": s["tau"], "lambda": s.get("forget_weight"), "lr": s.get("learning_rate"),
                "seeds": s.get("seed"), "search_outcome": self.search.status}

    def mlflow_metrics(self) -> dict[str, Any]:
        """Before/after figures, nested (the tracker flattens them to ``before/forget_efficacy``, ...)."""
        if self.before is None or self.after is None:
            return {}
        return {"before": self.before.to_dict(), "after": self.after.to_dict()}

    def ledger_outcome(self) -> dict[str, Any]:
        """The round's outcome as the ledger stores it: settings, version and headline figures (numbers only)."""
        out: dict[str, Any] = {"search": self.search.status, "champion_version": self.champion_version}
        if self.gate is None:
            return out | {"reasons": self.search.reasons[:5]}
        return out | {
            "settings": {k: v for k, v in (self.settings or {}).items() if isinstance(v, int | float | str)},
            "model_version": self.version, "gate": "passed" if self.gate.passed else "failed",
            "failed_checks": self.failed_checks,
            "before": self.before.headline(), "after": self.after.headline(),
            "attempt": self.attempt, "failed_attempts": list(self.failed_attempts),
        }

    def table_row(self) -> dict[str, Any]:
        """The figures the CLI and demo tables show for this round (plain JSON; :func:`format_rounds` renders)."""
        b = self.before.to_dict() if self.before else {}
        a = self.after.to_dict() if self.after else {}
        return {"request_id": self.request_id, "status": self.status, "search": self.search.status, "tau": self.tau,
                "model_version": self.version, "promoted": self.promoted,
                "forget_efficacy": [b.get("forget_efficacy"), a.get("forget_efficacy")],
                "retain_rouge": [b.get("retain_rouge"), a.get("retain_rouge")], "fluency_after": a.get("fluency"),
                "earlier_efficacy_after": a.get("earlier", {}), "failed_checks": self.failed_checks,
                "verbmem": [b.get("forget_verbmem"), a.get("forget_verbmem")],
                "report": None if self.report is None else str(self.report),
                "seconds": round(sum(self.seconds.values()), 1), "attempt": self.attempt,
                "failed_attempts": [{"tau": a["settings"].get("tau"), "failed_checks": a["failed_checks"],
                                     "model_version": a["model_version"]} for a in self.failed_attempts]}


def refused_outcome(request_id: str, reason: str) -> dict[str, Any]:
    """The outcome of a request the round refused as it stands (ledger state ``rejected``): the same shape as
    ``RoundRecord.to_dict()``'s keys the tables read, no figures."""
    table = {"request_id": request_id, "status": "rejected", "search": "not run", "tau": None,
             "model_version": None, "promoted": False, "forget_efficacy": [None, None], "retain_rouge": [None, None],
             "fluency_after": None, "earlier_efficacy_after": {}, "failed_checks": [], "verbmem": [None, None],
             "report": None, "seconds": 0.0, "reason": reason}
    return {"request_id": request_id, "status": "rejected", "reason": reason, "table": table}


def _figure(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def format_rounds(rows: list[dict[str, Any]], urgent: dict[str, bool] | None = None) -> str:
    """The per-round table of ``RoundRecord.table_row`` rows: what ``asu run``, ``asu urgent`` and ``asu demo``
    print. Forget efficacy is 1 - fact recall of the forget answers; retain is ROUGE-L recall; before -> after."""
    if not rows:
        return "queue empty: nothing to process"
    head = f"{'request':<18}{'urgent  ' if urgent is not None else ''}{'tau':>5}  {'forget efficacy':>15}  " \
           f"{'retain ROUGE-L':>14}  {'fluent':>6}  {'gate':<7}{'version':>7}"
    lines = [head]
    for r in rows:
        tau = "  -" if r["tau"] is None else f"{r['tau']:5.2f}"
        gate = {"registered": "passed", "rejected": "REFUSED"}.get(r["status"], "FAILED")
        flag = "" if urgent is None else f"{'yes' if urgent.get(r['request_id']) else 'no':<8}"
        (fb, fa), (rb, ra) = r["forget_efficacy"], r["retain_rouge"]
        lines.append(f"{r['request_id']:<18}{flag}{tau:>5}  {_figure(fb):>6} -> {_figure(fa):<5}  "
                     f"{_figure(rb):>5} -> {_figure(ra):<5}  {_figure(r['fluency_after']):>6}  {gate:<7}"
                     f"{r['model_version'] or '-':>7}")
        if r["status"] == "rejected":
            lines.append(f"{'':<18}refused as it stands: {r.get('reason', '')}")
        verbmem = r.get("verbmem") or [None, None]
        if verbmem[1] is not None:  # a text request: how much of its passages the model still continues verbatim
            lines.append(f"{'':<18}passages: VerbMem {_figure(verbmem[0]).strip()} -> {_figure(verbmem[1]).strip()} "
                         "(ROUGE-L F1 of greedy continuations; forget efficacy above is on the passages' pieces)")
        for failed in r.get("failed_attempts") or ():  # gate retries: the settings tried before this one
            lines.append(f"{'':<18}earlier attempt: tau {failed['tau']:g} failed {', '.join(failed['failed_checks'])}"
                         f" (version {failed['model_version']}); this row is the gate retry")
        if r["failed_checks"]:
            lines.append(f"{'':<18}failed checks: {', '.join(r['failed_checks'])}"
                         + (f" (search: {r['search']})" if r["search"] != "chosen" else ""))
    return "\n".join(lines)


__all__ = ["RoundRecord", "RoundStatus", "format_rounds", "refused_outcome"]
