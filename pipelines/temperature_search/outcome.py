"""What a search returns: the chosen settings, or ``no_effect`` / ``no_safe_setting``, with all its evidence.

The evidence table has one row per scanned tau: its stage-1 teacher figures, whether it was in the stage-1
bracket (or why not), and the stage-2 figures of its best trial (every trial, with its learning rate, lambda and
rung, is in ``trials``). Everything is plain JSON through :meth:`SearchOutcome.to_dict`, for flows to log.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from asu.errors import UsageError
from asu.search.halving import TrialResult, rank
from asu.search.scan import ScanRow

Status = Literal["chosen", "no_effect", "no_safe_setting"]


@dataclass
class SearchOutcome:
    """Result of ``run_search``. ``tau`` and ``setting`` are None exactly when ``status != 'chosen'``.

    ``setting``: the chosen round settings as ASUConfig fields (tau, learning_rate, forget_weight).
    """

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
    setting: dict[str, float] | None = None
    #: the chosen trial's trained model when the trials train on the final round's items (``trial_items='round'``):
    #: that trial *is* the final round (None otherwise, or when nothing was chosen)
    model_dir: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    plot: Path | None = None

    @property
    def chosen_trial(self) -> TrialResult | None:
        """The full-length trial of the chosen settings (None for a setting no trial tried: :meth:`gentler`)."""
        if self.setting is None:
            return None
        last = max(t.rung for t in self.trials)
        return next((t for t in self.trials if t.setting == self.setting and t.rung == last), None)

    def runner_ups(self) -> list[SearchOutcome]:
        """The other safe and effective settings of the longest rung, best first (``halving.rank``), each as an
        outcome that chose it (no trained model kept: its round trains afresh). What the pipeline trains next when
        the chosen setting's round fails the gate (``PipelineSettings.gate_retries``); empty when nothing was chosen.
        """
        if self.setting is None:
            return []
        last = max(t.rung for t in self.trials)
        seen, out = [self.setting], []
        for trial in rank([t for t in self.trials if t.rung == last]):
            if trial.setting not in seen:
                seen.append(trial.setting)
                out.append(replace(self, tau=trial.tau, setting=trial.setting, model_dir=None,
                                   reasons=[*self.reasons, f"runner-up {trial.label()} (score "
                                            f"{trial.combined_score:.3f}) after the chosen setting failed the gate"]))
        return out

    def gentler(self, learning_rates) -> SearchOutcome | None:
        """The chosen tau and lambda at the strongest of ``learning_rates`` (the search's strength ladder) below the
        chosen learning rate, as an outcome that chose it (an untried setting: no trial, no trained model); None when
        nothing was chosen or the chosen rate is the gentlest."""
        if self.setting is None:
            return None
        rate = self.setting["learning_rate"]
        lower = [r for r in learning_rates if r < rate * (1 - 1e-9)]
        if not lower:
            return None
        setting = {**self.setting, "learning_rate": max(lower)}
        return replace(self, setting=setting, model_dir=None,
                       reasons=[*self.reasons, f"gentler strength: learning rate {max(lower):.3g} at tau "
                                f"{setting['tau']:g} after the round at {rate:.3g} damaged the model at the gate"])

    def round_config(self, config):  # (ASUConfig) -> ASUConfig
        """``config`` with the chosen settings; ``ValueError`` when nothing was chosen."""
        if self.setting is None:
            raise UsageError(f"the search chose no setting ({self.status}); nothing to unlearn with")
        return replace(config, **self.setting)

    def take_model(self, out_dir: Path) -> Path:
        """Move the chosen trial's model (:attr:`model_dir`) to ``out_dir`` (created, or an empty folder) and
        return ``out_dir``; ``UsageError`` when the search kept none (``trial_items='validation'``)."""
        if self.model_dir is None:
            raise UsageError("the search kept no trained model (trial_items='validation' or nothing chosen): "
                             "run the final round with round_config()")
        out_dir = Path(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()):
            raise UsageError(f"{out_dir} is not empty; the chosen trial's model goes to a new or empty folder")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists():
            out_dir.rmdir()
        shutil.move(str(self.model_dir), str(out_dir))
        self.model_dir = out_dir
        return out_dir

    def evidence(self) -> list[dict]:
        """One row per scanned tau: stage-1 figures, bracket verdict, figures of its longest trial."""
        rows = []
        for row in self.scan:
            trials = [t for t in self.trials if t.tau == row.tau]
            chosen = self.chosen_trial
            # The chosen trial when it is at this tau, else the best-scoring of the longest rung reached.
            last = (chosen if chosen in trials else
                    max(trials, key=lambda t: (t.rung, t.feasible and t.effective, t.combined_score))
                    ) if trials else None
            entry = {**row.to_dict(), "in_bracket": self.bracket.get(row.tau) is None and row.tau != 1.0,
                     "bracket_reason": self.bracket.get(row.tau), "candidate": row.tau in self.candidates,
                     "chosen": row.tau == self.tau}
            if last is not None:
                entry |= {"trial_rung": last.rung, "trial_epochs": last.epochs,
                          "trial_learning_rate": last.learning_rate, "trial_forget_weight": last.forget_weight,
                          "trial_combined_score": last.combined_score, "trial_effective": last.effective,
                          "trial_forget_score": last.forget_score, "trial_retain_score": last.retain_score,
                          "trial_fluent_share": last.forget.fluent_share,
                          "trial_token_entropy": last.forget.token_entropy, "trial_feasible": last.feasible,
                          "trial_failures": list(last.failures)}
            rows.append(entry)
        return rows

    def to_dict(self) -> dict:
        return {
            "status": self.status, "tau": self.tau, "setting": self.setting, "reasons": self.reasons,
            "base": self.base,
            "floors": self.floors, "candidates": self.candidates, "evidence": self.evidence(),
            "trials": [t.to_dict() for t in self.trials], "split": self.split, "config": self.config,
            "seconds": self.seconds, "plot": None if self.plot is None else str(self.plot),
            "model_dir": None if self.model_dir is None else str(self.model_dir),
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    def format_table(self) -> str:
        """Human-readable evidence: the stage-1 scan, then every trial (the CLI prints both)."""
        head = (f"{'tau':>5} {'fgt NLL':>8} {'content':>8} {'function':>8} {'tch ent':>8} {'tch flu':>8} "
                f"{'ret NLL':>8}  stage 1")
        lines = [head, "-" * len(head)]
        for e in self.evidence():
            kind = ("base" if e["tau"] == 1.0 else "candidate" if e["candidate"] else
                    "bracket" if e["in_bracket"] else f"out: {e['bracket_reason']}")
            lines.append(f"{e['tau']:>5g} {e['teacher_forget_nll']:>8.3f} {e['content_nll']:>8.3f} "
                         f"{e['function_nll']:>8.3f} {e['teacher_forget_token_entropy']:>8.3f} "
                         f"{e['teacher_forget_fluent_share']:>8.2f} {e['retain_nll']:>8.3f}  {kind}")
        if self.trials:
            head = (f"{'tau':>5} {'lr':>9} {'lambda':>6} {'ep':>3} {'FS':>6} {'RS':>6} {'fluent':>6} {'score':>6}"
                    "  stage 2")
            lines += ["", head, "-" * len(head)]
            for t in self.trials:
                mark = ("CHOSEN" if t.setting == self.setting and t is self.chosen_trial else "floor" if t.failures
                        else "ok" if t.effective else "no effect")
                lines.append(f"{t.tau:>5g} {t.learning_rate:>9.3g} {t.forget_weight:>6g} {t.epochs:>3} "
                             f"{t.forget_score:>6.3f} {t.retain_score:>6.3f} {t.forget.fluent_share:>6.2f} "
                             f"{t.combined_score:>6.3f}  {mark}")
        if self.setting is not None:
            verdict = "chosen: " + ", ".join(f"{k} {v:g}" for k, v in self.setting.items())
        else:
            verdict = self.status
        lines += ["", verdict, *[f"  - {r}" for r in self.reasons]]
        if self.plot is not None:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)
