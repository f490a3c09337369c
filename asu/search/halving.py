"""Stage 2 of the temperature search: short ASU rounds at the stage-1 candidates.

Each trial is a real ``asu.trainer.run_round`` from the original model at one tau, trained on the forget
*validation* items only (a quarter of the request by default, so a full-length trial costs about a quarter
of the final round) or on every item the final round trains on (``train_forget``), paired with retain training
items, then scored on the forget validation items (forget efficacy, fluency) and on the held-out retain
validation items (utility). Floors are hard constraints.

Two strategies:

- :func:`bisect_boundary` (the default of the pipeline): full-length trials that halve the sorted candidate
  list around the feasibility boundary and stop early once it is found;
- :func:`successive_halving` (Jamieson & Talwalkar 2016; Li et al., Hyperband, 2018): rung 0 trains every
  candidate for a few epochs, each later rung keeps the best ``1/eta`` feasible ones and retrains them for
  more epochs, the last rung at full length. On the embedded model its short rungs mislead: a round cut to
  fewer epochs (its own warm-up and decay) shows more forgetting and more damage than the full round at the
  same tau, which then recovers. Measured (default model, forget authors 1 and 4, 10 validation items,
  recipe ``embedded``): at tau 2.0 forget score 0.55 after 3 epochs, 0.47 after 5, 0.37 after 10; at
  tau 2.3 answer token entropy 0.815 after 5 epochs (below a 0.866 floor) but 0.899 after 10; at tau 4.0
  retain score 0.85 after 5 epochs, 0.92 after 10. Short-rung rankings and floor checks therefore do not
  carry over to full length, and a strategy that drops floor-breakers early drops the wrong taus.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from asu.config import ASUConfig
from asu.data import QAItem
from asu.device import AUTO, Placement
from asu.errors import UsageError
from asu.modeling import load_model_and_tokenizer
from asu.search.scores import SetFigures, combined_score, forget_score, retain_score, score_items
from asu.trainer import run_round

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Floors:
    """What a trial must reach (all on a 0-1 scale).

    Safety floors: ``retain_score`` and ``retain_rouge`` (ROUGE-L recall of the greedy answers: what the gate's
    utility check reads) on the retain validation items; ``fluent_share`` (``asu.fluency``) and
    ``token_entropy`` of the greedy answers to the forget validation questions. Effect: ``forget_score`` is
    the least forget score that counts as forgetting (the current model's own plus the configured minimum
    gain) and ``forget_efficacy`` the least share of the forget answers' facts that must be gone
    (:attr:`SetFigures.efficacy`, what the pipeline's gate reads); a trial below either is *ineffective*, which is
    not a safety failure. ``reference_utility`` is the current model's retain score, the denominator of the
    relative utility in the combined score.
    """

    retain_score: float
    fluent_share: float
    token_entropy: float = 0.0
    forget_score: float = 0.0
    reference_utility: float = 1.0
    retain_rouge: float = 0.0
    forget_efficacy: float = 0.0

    def effect_misses(self, score: float, forget: SetFigures) -> list[str]:
        """The effect floors that a trial's forget ``score`` and figures miss, with the values (empty = effective)."""
        out = []
        if score < self.forget_score:
            out.append(f"forget score {score:.3f} < {self.forget_score:.3f} (the current model's plus the minimum "
                       "gain)")
        if forget.efficacy < self.forget_efficacy:
            out.append(f"forget efficacy {forget.efficacy:.3f} < floor {self.forget_efficacy:.3f}")
        return out

    def failures(self, forget: SetFigures, utility: float, retain: SetFigures | None = None) -> list[str]:
        """The safety floors that the figures miss, each with the measured value (empty = feasible).

        ``retain``: the retain validation figures (their ROUGE-L recall is held to ``retain_rouge``; None: not
        checked)."""
        out = []
        if utility < self.retain_score:
            out.append(f"retain score {utility:.3f} < floor {self.retain_score:.3f}")
        if retain is not None and retain.rouge_l_recall < self.retain_rouge:
            out.append(f"retain ROUGE-L {retain.rouge_l_recall:.3f} < floor {self.retain_rouge:.3f}")
        if forget.fluent_share < self.fluent_share:
            out.append(f"fluent share of forget answers {forget.fluent_share:.2f} < floor {self.fluent_share:.2f}")
        if forget.token_entropy < self.token_entropy:
            out.append(f"token entropy of forget answers {forget.token_entropy:.3f} < floor {self.token_entropy:.3f}")
        return out

    def combined_score(self, efficacy: float, utility: float, forget: SetFigures) -> float:
        """Combined score: hmean(forget score, utility relative to the current model (capped at 1), fluent share)."""
        return combined_score(efficacy, utility / self.reference_utility if self.reference_utility > 0 else 1.0,
                              forget.fluent_share)


@dataclass(frozen=True)
class TrialResult:
    """One real round at ``tau``, ``learning_rate`` and ``forget_weight`` for ``epochs`` epochs (rung ``rung``).

    ``effective``: the forget figures reached the effect floors (it forgot measurably); ``feasible``: no safety
    floor broken; ``score``: the combined score (:meth:`Floors.combined_score`) the search ranks by.
    """

    tau: float
    rung: int
    epochs: int
    forget: SetFigures
    retain: SetFigures
    forget_score: float
    retain_score: float
    failures: tuple[str, ...]
    seconds: float
    learning_rate: float
    forget_weight: float
    effective: bool
    combined_score: float
    unseen_fluent_share: float | None = None  # None: no unseen forget items judged (``run_trial``'s ``unseen``)
    #: the trained model's folder (``run_trial``'s ``keep_model``); the search deletes a beaten trial's folder, so
    #: only ``SearchOutcome.model_dir`` names one that is sure to exist
    model_dir: str | None = None

    @property
    def feasible(self) -> bool:
        return not self.failures

    @property
    def setting(self) -> dict[str, float]:
        """The round settings this trial tried (ASUConfig field names)."""
        return {"tau": self.tau, "learning_rate": self.learning_rate, "forget_weight": self.forget_weight}

    def label(self) -> str:
        return f"tau={self.tau:g} lr={self.learning_rate:.3g} lambda={self.forget_weight:g}"

    def to_dict(self) -> dict:
        return {
            **self.setting, "rung": self.rung, "epochs": self.epochs, "forget_score": self.forget_score,
            "retain_score": self.retain_score, "combined_score": self.combined_score, "effective": self.effective,
            "feasible": self.feasible, "failures": list(self.failures), "seconds": self.seconds,
            "unseen_fluent_share": self.unseen_fluent_share,
            **{f"forget_{k}": v for k, v in self.forget.to_dict().items()},
            **{f"retain_{k}": v for k, v in self.retain.to_dict().items()},
        }


def rung_epochs(first: int, full: int, eta: int = 2) -> list[int]:
    """Epochs per rung: ``first``, ``first * eta``, ... while below ``full``, then ``full`` (e.g. 3, 6, 10)."""
    if not 1 <= first <= full or eta < 2:
        raise UsageError(f"need 1 <= first ({first}) <= full ({full}) epochs and eta ({eta}) >= 2")
    out = []
    while first < full:
        out.append(first)
        first *= eta
    return [*out, full]


def run_trial(
    model_dir: str | Path,
    tau: float,
    epochs: int,
    rung: int,
    forget: Sequence[QAItem],
    retain_train: Sequence[QAItem],
    retain_val: Sequence[QAItem],
    config: ASUConfig,
    floors: Floors,
    work_dir: Path,
    *,
    max_new_tokens: int = 200,
    keep_model: bool = False,
    judge=None,
    teacher_model_dir: str | Path | None = None,
    placement: Placement = AUTO,
    unseen: Sequence[QAItem] = (),
    train_forget: Sequence[QAItem] | Literal["scored"] = "scored",
) -> TrialResult:
    """Train ``config`` at ``tau`` for ``epochs`` on ``forget`` from ``model_dir``, score it, drop the model.

    ``train_forget``: the forget items the trial trains on: ``"scored"`` (``forget``, the items it is scored on) or
    a list (the final round's items, of which ``forget`` is a part: ``SearchConfig.trial_items='round'``);
    ``keep_model``: keep the trained folder (its path in the result's ``model_dir``) for the caller to use or drop;

    ``judge``: the ``asu.fluency.FluencyJudge`` of the model the trial starts from (fluency of its answers);
    ``teacher_model_dir``: the teacher's model when it is not ``model_dir`` (``asu.trainer.run_round``);
    ``placement``: where the trained trial model is scored (``asu.device``);
    ``unseen``: forget items of the request the trial does not train on. When given, the fluent share that the
    floors and the combined score use is pooled over the answers to ``forget`` and to these: a trial that
    trained many steps on a few items answers *those* like its coherent teacher, while the damage shows first on
    the subject's other questions, which is what the final round is tested on.
    """
    if isinstance(train_forget, str) and train_forget != "scored":
        raise UsageError(f"train_forget={train_forget!r}: use 'scored' or a list of forget items")
    started = time.perf_counter()
    out = Path(work_dir) / f"trial-r{rung}-tau{tau:g}-lr{config.learning_rate:.3g}-w{config.forget_weight:g}"
    shutil.rmtree(out, ignore_errors=True)  # a trial never resumes an old folder's checkpoint
    # A trial is short and thrown away: crash-resume checkpoints would only cost writes.
    trial_config = replace(config, tau=tau, epochs=epochs, checkpoint_every="never")
    trained = forget if isinstance(train_forget, str) else train_forget
    run_round(model_dir, trained, retain_train, trial_config, out, progress=False, teacher_model_dir=teacher_model_dir)
    model, tokenizer = load_model_and_tokenizer(out, placement=placement)
    sets = {"forget": forget, "retain": retain_val, **({"unseen": unseen} if unseen else {})}
    figures = score_items(model, tokenizer, sets, prompt_format=config.prompt_format,
                          max_new_tokens=max_new_tokens, max_length=config.max_length, judge=judge)
    forget_figures, retain_figures = figures["forget"].mean(), figures["retain"].mean()
    unseen_share = None
    if unseen:
        unseen_share = figures["unseen"].mean().fluent_share
        pooled = figures["forget"].fluent + figures["unseen"].fluent
        forget_figures = replace(forget_figures, fluent_share=sum(pooled) / len(pooled))
    if not keep_model:
        shutil.rmtree(out, ignore_errors=True)
    fe, ru = forget_score(forget_figures), retain_score(retain_figures)
    result = TrialResult(tau, rung, epochs, forget_figures, retain_figures, fe, ru,
                         tuple(floors.failures(forget_figures, ru, retain_figures)), time.perf_counter() - started,
                         config.learning_rate, config.forget_weight, not floors.effect_misses(fe, forget_figures),
                         floors.combined_score(fe, ru, forget_figures), unseen_share,
                         str(out) if keep_model else None)
    logger.info("trial %s epochs=%d: FS %.3f RS %.3f fluent %.2f%s score %.3f %s%s", result.label(), epochs, fe, ru,
                forget_figures.fluent_share, "" if unseen_share is None else f" (unseen items {unseen_share:.2f})",
                result.combined_score, list(result.failures) or "safe",
                "" if result.effective else ", ineffective")
    return result


def rank(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Feasible and effective results, best first: highest combined score, then forget score, then the gentler
    setting (lower tau, then lower learning rate)."""
    return sorted((r for r in results if r.feasible and r.effective),
                  key=lambda r: (-r.combined_score, -r.forget_score, r.tau, r.learning_rate))


def successive_halving(
    model_dir: str | Path,
    candidates: Sequence[float],
    forget: Sequence[QAItem],
    retain_train: Sequence[QAItem],
    retain_val: Sequence[QAItem],
    config: ASUConfig,
    floors: Floors,
    work_dir: Path,
    *,
    epochs: Sequence[int],
    eta: int = 2,
    max_new_tokens: int = 200,
    judge=None,
    teacher_model_dir: str | Path | None = None,
    placement: Placement = AUTO,
    unseen: Sequence[QAItem] = (),
) -> list[TrialResult]:
    """Every trial run, rung after rung. ``epochs`` lists the epochs of each rung (see :func:`rung_epochs`).

    Rung r + 1 trains the best ``ceil(n_r / eta)`` feasible candidates of rung r (a candidate that breaks a
    floor is dropped at once). Stops early when no candidate is feasible. When no survivor meets the floors
    at the last rung, the next-best feasible candidates of the previous rung are tried there one by one
    (backfill). The winner is the best feasible result of the last rung (see :func:`winner`).
    """
    def trial(tau: float, rung: int) -> TrialResult:
        return run_trial(model_dir, tau, epochs[rung], rung, forget, retain_train, retain_val, config, floors,
                         work_dir, max_new_tokens=max_new_tokens, judge=judge, teacher_model_dir=teacher_model_dir,
                         placement=placement, unseen=unseen)

    alive, trials, previous = sorted(candidates), [], []
    for rung in range(len(epochs)):
        results = [trial(tau, rung) for tau in alive]
        trials += results
        ranked = rank(results)
        if rung == len(epochs) - 1:
            # Backfill: when every survivor breaks a floor at full length, try the next-best feasible
            # candidates of the previous rung, best first, until one holds.
            backlog = [r.tau for r in previous if r.tau not in alive]
            while not ranked and backlog:
                trials.append(trial(backlog.pop(0), rung))
                ranked = rank(trials[-1:])
            break
        if not ranked:
            break
        previous, alive = ranked, sorted(r.tau for r in ranked[: math.ceil(len(alive) / eta)])
    return trials


def bisect_boundary(
    model_dir: str | Path,
    candidates: Sequence[float],
    forget: Sequence[QAItem],
    retain_train: Sequence[QAItem],
    retain_val: Sequence[QAItem],
    config: ASUConfig,
    floors: Floors,
    work_dir: Path,
    *,
    epochs: int,
    max_new_tokens: int = 200,
    judge=None,
    teacher_model_dir: str | Path | None = None,
    placement: Placement = AUTO,
    unseen: Sequence[QAItem] = (),
) -> list[TrialResult]:
    """Full-length trials that halve the sorted candidates around the feasibility boundary (all at rung 0).

    Rests on what the ASU temperature ablation and our scans show: forget score rises with tau while
    fluency and utility fall, so the best feasible tau is the highest feasible one. A trial at the upper
    middle of the remaining interval either meets every floor (every lower tau forgets less: continue above
    it) or breaks one (continue below it); it stops as soon as the interval is empty, after at most
    ``ceil(log2(n + 1))`` trials. The winner is still the feasible trial of highest forget score.
    """
    taus, trials = sorted(candidates), []
    low, high = 0, len(taus) - 1
    while low <= high:
        mid = (low + high + 1) // 2
        trials.append(run_trial(model_dir, taus[mid], epochs, 0, forget, retain_train, retain_val, config, floors,
                                work_dir, max_new_tokens=max_new_tokens, judge=judge,
                                teacher_model_dir=teacher_model_dir, placement=placement, unseen=unseen))
        low, high = (mid + 1, high) if trials[-1].feasible else (low, mid - 1)
    return trials


def winner(trials: Sequence[TrialResult], last_rung: int) -> TrialResult | None:
    """The best feasible trial of ``last_rung`` (the full-length rung), or None when there is none."""
    ranked = rank([t for t in trials if t.rung == last_rung])
    return ranked[0] if ranked else None


__all__ = [
    "Floors",
    "TrialResult",
    "bisect_boundary",
    "rank",
    "rung_epochs",
    "run_trial",
    "successive_halving",
    "winner",
]
