"""What a temperature search returns: the chosen tau or ``no_safe_temperature``, with all its evidence.

The evidence table has one row per scanned tau: its stage-1 teacher figures, whether it was in the stage-1
bracket (or why not), and the stage-2 figures of the longest trial it reached (every trial, rung by rung,
is in ``trials``). Everything is plain JSON through :meth:`SearchOutcome.to_dict`, for flows to log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from asu.search.halving import TrialResult
from asu.search.scan import ScanRow

Status = Literal["chosen", "no_safe_temperature"]


@dataclass
class SearchOutcome:
    """Result of ``run_search``. ``tau`` is None exactly when ``status == 'no_safe_temperature'``."""

    status: Status
    tau: float | None
    reasons: list[str]
    base: dict[str, float]  # the current model on the validation items (tau = 1, no training)
    floors: dict[str, float]  # absolute floors applied in stage 2
    scan: list[ScanRow]
    bracket: dict[float, str | None]  # tau -> None (in) or why it is out
    candidates: list[float]
    trials: list[TrialResult]
    split: dict
    config: dict
    seconds: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None

    @property
    def chosen_trial(self) -> TrialResult | None:
        """The full-length trial of the chosen tau."""
        if self.tau is None:
            return None
        last = max(t.rung for t in self.trials)
        return next(t for t in self.trials if t.tau == self.tau and t.rung == last)

    def evidence(self) -> list[dict]:
        """One row per scanned tau: stage-1 figures, bracket verdict, figures of its longest trial."""
        rows = []
        for row in self.scan:
            trials = [t for t in self.trials if t.tau == row.tau]
            last = max(trials, key=lambda t: t.rung) if trials else None
            entry = {**row.to_dict(), "in_bracket": self.bracket.get(row.tau) is None and row.tau != 1.0,
                     "bracket_reason": self.bracket.get(row.tau), "candidate": row.tau in self.candidates,
                     "chosen": row.tau == self.tau}
            if last is not None:
                entry |= {"trial_rung": last.rung, "trial_epochs": last.epochs,
                          "trial_forget_efficacy": last.forget_efficacy, "trial_retain_utility": last.retain_utility,
                          "trial_fluent_share": last.forget.fluent_share,
                          "trial_token_entropy": last.forget.token_entropy, "trial_feasible": last.feasible,
                          "trial_failures": list(last.failures)}
            rows.append(entry)
        return rows

    def to_dict(self) -> dict:
        return {
            "status": self.status, "tau": self.tau, "reasons": self.reasons, "base": self.base,
            "floors": self.floors, "candidates": self.candidates, "evidence": self.evidence(),
            "trials": [t.to_dict() for t in self.trials], "split": self.split, "config": self.config,
            "seconds": self.seconds, "plot": None if self.plot is None else str(self.plot),
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    def format_table(self) -> str:
        """Human-readable evidence table (the CLI prints it)."""
        head = (f"{'tau':>5} {'fgt NLL':>8} {'content':>8} {'function':>8} {'tch ent':>8} {'tch flu':>8} "
                f"{'ret NLL':>8} | {'stage':>9} {'ep':>3} {'FE':>6} {'RU':>6} {'fluent':>6} {'entropy':>7}")
        lines = [head, "-" * len(head)]
        for e in self.evidence():
            left = (f"{e['tau']:>5g} {e['teacher_forget_nll']:>8.3f} {e['content_nll']:>8.3f} "
                    f"{e['function_nll']:>8.3f} {e['teacher_forget_token_entropy']:>8.3f} "
                    f"{e['teacher_forget_fluent_share']:>8.2f} {e['retain_nll']:>8.3f}")
            if "trial_epochs" in e:
                mark = "CHOSEN" if e["chosen"] else ("ok" if e["trial_feasible"] else "floor")
                right = (f"{mark:>9} {e['trial_epochs']:>3} {e['trial_forget_efficacy']:>6.3f} "
                         f"{e['trial_retain_utility']:>6.3f} {e['trial_fluent_share']:>6.2f} "
                         f"{e['trial_token_entropy']:>7.3f}")
            else:
                kind = "skipped" if e["candidate"] else "bracket" if e["in_bracket"] else "out"
                kind = "base" if e["tau"] == 1.0 else kind
                right = f"{kind:>9}"
            lines.append(f"{left} | {right}")
        verdict = f"chosen tau = {self.tau:g}" if self.tau is not None else "no_safe_temperature"
        lines += ["", verdict, *[f"  - {r}" for r in self.reasons]]
        if self.plot is not None:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)
