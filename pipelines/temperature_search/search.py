"""Pipeline step: choose the settings of an ASU round (tau, strength, lambda) on a validation split.

Order of work (every bad input fails before the first model pass, except floors that need the model's
own figures, which fail right after measuring it and before the scan):

1. check the configs, split off the validation items (``split.py``), load the model;
2. measure the current model on the validation items (tau = 1) and turn the floors into absolute values;
3. stage 1: teacher-only scan over the tau grid (``asu.search.scan``), bracket, pick the candidates;
4. stage 2: real rounds scored on the validation items, by default the strength ladder (``asu.search.ladder``),
   with safety floors as hard constraints and a minimum forget-efficacy gain as the test of effect (with
   ``trial_fluency=validation_and_unseen`` the fluent share also judges forget items no trial trains on); a trial
   trains on the validation items, or with ``trial_items='round'`` on exactly the final round's items, and then
   the chosen trial's model is kept (``SearchOutcome.model_dir``): it is the final round;
5. outcome: ``chosen`` (tau, learning rate, lambda), or ``no_effect`` / ``no_safe_setting`` with reasons;
   evidence JSON and PNG in ``work_dir``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from asu.attention import enable_smoothing, num_decoder_layers, validate_layers
from asu.config import ASUConfig
from asu.data import QAItem, load_qa_file
from asu.device import AUTO, Placement
from asu.errors import UsageError
from asu.fluency import FluencyJudge
from asu.modeling import load_model_and_tokenizer
from asu.passages import scored_items
from asu.qa_file import field_values
from asu.recipes import get_recipe
from asu.search.halving import (
    Floors,
    TrialResult,
    bisect_boundary,
    rank,
    run_trial,
    rung_epochs,
    successive_halving,
    winner,
)
from asu.search.ladder import ladder_search, outcome_status
from asu.search.scan import ScanRow, bracket, scan_tau, spread
from asu.search.scores import SetFigures, forget_score, retain_score, score_set
from pipelines.temperature_search.config import SearchConfig
from pipelines.temperature_search.outcome import SearchOutcome
from pipelines.temperature_search.plot import plot_search
from pipelines.temperature_search.split import ValidationSplit, round_items, split_validation

logger = logging.getLogger(__name__)


def check_round_config(round_config: ASUConfig, config: SearchConfig) -> None:
    """Raise ``ValueError`` when the round cannot be searched with ``config``."""
    if not round_config.objective.needs_teacher:
        raise UsageError(
            f"method={round_config.method!r} has no smoothed teacher, so tau has no effect; "
            "search with an ASU objective (asu_gd or asu_kl)"
        )
    if config.stage2 == "successive_halving" and config.trial_epochs > round_config.epochs:
        raise UsageError(
            f"trial_epochs={config.trial_epochs} exceeds the round's epochs={round_config.epochs}; "
            "trials must be shorter than the round they select for"
        )


def matched_epochs(round_config: ASUConfig, final_items: int, trial_items: int) -> int:
    """Epochs over ``trial_items`` that make as many optimizer steps as the final round over ``final_items``.

    Adam moves the weights by about the learning rate per step whatever the batch holds, so for a request about
    one subject forgetting follows the number of steps more than the passes over each item: a trial on a quarter
    of the items at the round's epochs takes a quarter of the steps and forgets far less than its round
    (measured on SmolLM2, the Paris scenario: 10 steps at lr 3e-4 raised validation forget score by 0.06).
    """
    def steps(items: int) -> int:
        return math.ceil(math.ceil(items / round_config.batch_size) / round_config.grad_accum_steps)

    return max(round_config.epochs, round(round_config.epochs * steps(final_items) / steps(trial_items)))


def generation_cap(tokenizer, split: ValidationSplit, config: SearchConfig) -> int:
    """``config.max_new_tokens``, or when None 1.25 x the longest validation reference answer (tokens) + 16.

    Greedy decoding stops at EOS; an answer that has not ended a quarter past the longest reference is
    rambling, and its loops already show. The cap bounds the decode steps of answers that never end, which
    dominate the cost of scoring a degraded model.
    """
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    refs = [it["answer"] for items in (split.forget_val, split.retain_val) for it in scored_items(tokenizer, items)]
    longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in refs)
    return longest + longest // 4 + 16


def absolute_floors(config: SearchConfig, base_forget: SetFigures, base_utility: float, retain_items: int,
                    base_retain_rouge: float) -> Floors:
    """The floors as 0-1 values; raises ``ValueError`` for an absolute utility floor above the current model's.

    ``base_utility``: the current model's retain score; ``base_retain_rouge``: its retain ROUGE-L recall, of which
    ``config.retain_rouge_floor`` is always a fraction (as the gate's utility drop is relative). The fluent-share
    floor is capped at the current model's own share; the effect floors are the current model's own forget score plus
    ``config.min_forget_gain`` and ``config.forget_efficacy_floor`` (absolute).
    """
    rouge = config.retain_rouge_floor * base_retain_rouge
    if config.floor_mode == "relative":
        utility, entropy = config.utility_floor * base_utility, config.entropy_floor * base_forget.token_entropy
    else:
        utility, entropy = config.utility_floor, config.entropy_floor
        if utility > base_utility:
            raise UsageError(
                f"utility_floor={utility} (absolute) is above the current model's own retain score "
                f"{base_utility:.3f} on the {retain_items} retain validation items: no unlearned model can be "
                "expected to meet it; lower utility_floor or use floor_mode='relative'"
            )
    fluent = config.fluent_share_floor
    if fluent > base_forget.fluent_share:
        # No round can be asked to be more fluent than the model it starts from (on a handful of validation items
        # one odd answer of the current model is already 1/n of the share): the floor becomes the model's own.
        logger.warning("fluent_share_floor %.2f is above the current model's own fluent share %.2f on the forget "
                       "answers the trials are judged on; the floor is lowered to %.2f", fluent,
                       base_forget.fluent_share, base_forget.fluent_share)
        fluent = base_forget.fluent_share
    return Floors(retain_score=utility, fluent_share=fluent, token_entropy=entropy,
                  forget_score=forget_score(base_forget) + config.min_forget_gain, reference_utility=base_utility,
                  retain_rouge=rouge, forget_efficacy=config.forget_efficacy_floor)


def _choice_reasons(trials: Sequence[TrialResult], candidates: list[float], verdicts: dict[float, str | None],
                    floors: Floors) -> list[str]:
    ranked = rank(trials)
    reasons = []
    if ranked:
        best = ranked[0]
        reasons.append(
            f"{best.label()}: highest combined score {best.combined_score:.3f} among the trials that meet every floor "
            "and "
            f"forget measurably (forget score {best.forget_score:.3f} >= {floors.forget_score:.3f}, "
            f"retain score {best.retain_score:.3f}, fluent share {best.forget.fluent_share:.2f})"
        )
    for t in trials:
        if t.failures:
            reasons.append(f"{t.label()} ({t.epochs} epochs): " + "; ".join(t.failures))
        elif not t.effective:
            reasons.append(f"{t.label()} ({t.epochs} epochs): no effect, "
                           + "; ".join(floors.effect_misses(t.forget_score, t.forget)))
    untried = [tau for tau in candidates if tau not in {t.tau for t in trials}]
    if untried:
        reasons.append(
            f"candidates {', '.join(f'{tau:g}' for tau in untried)} not trialed: bisection left them out "
            "(a lower tau already broke a floor, or a higher tau met every floor)"
        )
    for tau, why in verdicts.items():
        if why is not None:
            reasons.append(f"tau={tau:g} (stage 1): {why}")
    return reasons


@dataclass(frozen=True)
class _Stage1:
    """What stage 1 hands on: the current model's figures, the floors, the scan and the candidates."""

    base: ScanRow
    base_retain: SetFigures
    floors: Floors
    rows: list[ScanRow]
    verdicts: dict[float, str | None]
    candidates: list[float]
    cap: int
    judge: FluencyJudge
    unseen: list[QAItem]  # forget items no trial trains on, whose answers' fluency every trial also judges


def _stage1(model_dir, split: ValidationSplit, round_config: ASUConfig, config: SearchConfig,
            judge: FluencyJudge | None, teacher_model_dir=None, placement: Placement = AUTO) -> _Stage1:
    """Measure the current model (floors fail here, before the scan), then scan the grid and bracket it.

    The scan rows above tau = 1 are those of the teacher: ``teacher_model_dir`` when given, else the model itself.
    """
    model, tokenizer = load_model_and_tokenizer(model_dir, trust_remote_code=round_config.trust_remote_code,
                                                placement=placement)
    # Fluency of every answer in the search (teacher scan and trials) is judged by the current model at tau = 1
    # unless the caller brings its own judge (a named fluency model).
    judge = judge or FluencyJudge(model, tokenizer, prompt_format=round_config.prompt_format)
    enable_smoothing(model)
    if round_config.layer_span != "all":
        round_config = round_config.for_depth(num_decoder_layers(model))
    validate_layers(model, round_config.layers)
    cap = generation_cap(tokenizer, split, config)
    eval_kw = {"prompt_format": round_config.prompt_format, "max_new_tokens": cap,
               "max_length": round_config.max_length}
    scan_kw = {**eval_kw, "layers": round_config.layers, "batch_size": 32, "judge": judge}
    base = scan_tau(model, tokenizer, split.forget_val, split.retain_val, 1.0, **scan_kw)
    base_retain = score_set(model, tokenizer, split.retain_val, **eval_kw)
    unseen = (split.unseen_forget(config.unseen_fluency_items, config.seed)
              if config.trial_fluency == "validation_and_unseen" else [])
    base_forget = base.forget
    if unseen:  # the fluent-share floor is capped at the current model's own share on the same pooled answers
        base_unseen = score_set(model, tokenizer, unseen, judge=judge, **eval_kw)
        pooled = ((base_forget.fluent_share * base_forget.items + base_unseen.fluent_share * base_unseen.items)
                  / (base_forget.items + base_unseen.items))
        base_forget = replace(base_forget, fluent_share=pooled)
    floors = absolute_floors(config, base_forget, retain_score(base_retain), len(split.retain_val),
                             base_retain.rouge_l_recall)
    logger.info("temperature search: %d forget / %d retain validation items, floors %s",
                len(split.forget_val), len(split.retain_val), floors)
    if teacher_model_dir is not None:
        model, tokenizer = load_model_and_tokenizer(teacher_model_dir, placement=placement,
                                                    trust_remote_code=round_config.trust_remote_code)
        enable_smoothing(model)
    rows = [base] + [scan_tau(model, tokenizer, split.forget_val, split.retain_val, tau, **scan_kw)
                     for tau in config.tau_grid if tau != 1.0]
    verdicts = bracket(rows[1:], base, config.criteria, coherence=round_config.forget_positions == "answer")
    candidates = stage2_candidates(rows[1:], base, verdicts, config) if config.stage2 == "ladder" else spread(
        [t for t, why in verdicts.items() if why is None], config.stage2_candidates)
    return _Stage1(base, base_retain, floors, rows, verdicts, candidates, cap, judge, unseen)


def stage2_candidates(rows: Sequence[ScanRow], base: ScanRow, verdicts: dict[float, str | None],
                      config: SearchConfig) -> list[float]:
    """The bracketed taus (spread); when none is bracketed, the coherent tau that moves facts most.

    "Too weak" is judged at the teacher's own strength, but the ladder can push harder: on a model that memorised
    its answers (the SmolLM2 TOFU target: answer NLL 0.009) the only coherent teacher, tau 1.5, raised content NLL
    by 0.091 nats, under the 0.1 bar, while a hand-set round at that tau forgot measurably. An incoherent teacher is
    never tried.
    """
    bracketed = [t for t, why in verdicts.items() if why is None]
    if bracketed:
        return spread(bracketed, config.stage2_candidates)
    weak = [r for r in rows if (verdicts.get(r.tau) or "").startswith("too weak") and r.content_nll > base.content_nll]
    if not weak:
        return []
    best = max(weak, key=lambda r: r.content_nll)
    logger.info("no tau bracketed; trying the coherent tau %g that moves facts most (content NLL +%.3f nats)",
                best.tau, best.content_nll - base.content_nll)
    return [best.tau]


class _BestModel:
    """Owner of the trial models under ``trial_items='round'``: keeps the folder of the best trial so far (the
    order of ``halving.rank``, the search's winner) and deletes every other one as soon as it is beaten."""

    def __init__(self) -> None:
        self.results: list[TrialResult] = []
        self.kept: TrialResult | None = None

    def add(self, result: TrialResult) -> TrialResult:
        self.results.append(result)
        ranked = rank(self.results)
        best = ranked[0] if ranked else None
        for other in (result, self.kept):
            if other is not None and other is not best and other.model_dir is not None:
                shutil.rmtree(other.model_dir, ignore_errors=True)
        self.kept = best
        return result


def _stage2(model_dir, split: ValidationSplit, round_config: ASUConfig, config: SearchConfig, stage1: _Stage1,
            work_dir: Path, forget: Sequence[QAItem], forget_validation: Sequence[QAItem] | None,
            teacher_model_dir=None, placement: Placement = AUTO) -> tuple[list[TrialResult], list[int]]:
    """The trials (ladder, bisection or successive halving) and the epochs of each rung. ``forget`` and
    ``forget_validation``: the request's items (``trial_items='round'`` trains on them as the final round will)."""
    halving = config.stage2 == "successive_halving"
    epochs = rung_epochs(config.trial_epochs, round_config.epochs, config.eta) if halving else [round_config.epochs]
    if not stage1.candidates:
        return [], epochs
    data = (split.forget_val, split.retain_rest, split.retain_val)
    score_kw = {"max_new_tokens": stage1.cap, "judge": stage1.judge, "teacher_model_dir": teacher_model_dir,
                "placement": placement, "unseen": stage1.unseen}
    if config.stage2 == "ladder":
        if config.trial_items == "round":  # the final round's own items and epochs; the best model is kept
            train_forget, retain_train = round_items(forget, split, forget_validation)
            data, trial_epochs = (split.forget_val, retain_train, split.retain_val), round_config.epochs
            keeper = _BestModel()
        else:
            final_items = len(split.forget_test) + len(split.forget_val)  # the final round trains on both
            train_forget, keeper = "scored", None
            trial_epochs = (matched_epochs(round_config, final_items, len(split.forget_val))
                            if config.trial_length == "matched_steps" else round_config.epochs)
        epochs = [trial_epochs]

        def trial(tau: float, learning_rate: float, forget_weight: float) -> TrialResult:
            trial_config = replace(round_config, learning_rate=learning_rate, forget_weight=forget_weight)
            result = run_trial(model_dir, tau, trial_epochs, 0, *data, trial_config, stage1.floors,
                               work_dir / "trials", **score_kw, train_forget=train_forget,
                               keep_model=keeper is not None)
            return result if keeper is None else keeper.add(result)

        rates = config.learning_rates(round_config.learning_rate)
        weights = config.weights(round_config.forget_weight)
        return ladder_search(trial, stage1.candidates, rates, weights, config.unsafe_tau), epochs
    args = (model_dir, stage1.candidates, *data, round_config, stage1.floors, work_dir / "trials")
    if halving:
        return successive_halving(*args, epochs=epochs, eta=config.eta, **score_kw), epochs
    return bisect_boundary(*args, epochs=round_config.epochs, **score_kw), epochs


def run_search(
    model_dir: str | Path,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    round_config: ASUConfig,
    config: SearchConfig,
    work_dir: str | Path,
    *,
    subjects: Sequence[object] | None = None,
    forget_validation: Sequence[QAItem] | None = None,
    plot: bool = True,
    judge: FluencyJudge | None = None,
    teacher_model_dir: str | Path | None = None,
    placement: Placement = AUTO,
    split: ValidationSplit | None = None,
) -> SearchOutcome:
    """Choose tau for ``round_config`` on a validation split of ``forget``/``retain``; see the module docstring.

    ``split``: the split when the caller already made it (``split_validation`` with the same arguments), so the
    pipeline computes it once per request.
    ``judge``: the ``FluencyJudge`` of every answer (default: built from ``model_dir`` at tau = 1);
    ``teacher_model_dir``: the teacher's model when it is not ``model_dir`` (``asu.trainer.run_round``);
    ``placement``: where the current model, the teacher and every trial are scored (``asu.device``; the trials
    train wherever the trainer's ``accelerate`` puts them).

    Returns a ``SearchOutcome`` (also written to ``work_dir/search.json``, the plot to ``work_dir/search.png``).
    """
    started, work_dir = time.perf_counter(), Path(work_dir)
    check_round_config(round_config, config)
    if split is None:
        split = split_validation(forget, retain, config, subjects=subjects, forget_validation=forget_validation)
    stage1 = _stage1(model_dir, split, round_config, config, judge, teacher_model_dir, placement)
    stage1_seconds = time.perf_counter() - started
    trials, epochs = _stage2(model_dir, split, round_config, config, stage1, work_dir, forget, forget_validation,
                             teacher_model_dir, placement)
    last = [t for t in trials if t.rung == len(epochs) - 1]
    best = winner(trials, len(epochs) - 1)
    status = outcome_status(last, stage1.verdicts)
    reasons = _choice_reasons(trials, stage1.candidates, stage1.verdicts, stage1.floors)
    if stage1.candidates and all(stage1.verdicts.get(t) is not None for t in stage1.candidates):
        reasons.append(f"tau={stage1.candidates[0]:g} was trialed although its teacher alone moves facts too little: "
                       "no tau was bracketed, and it is the coherent one that moves them most")
    if not stage1.candidates:
        reasons.insert(0, "no tau of the grid passed stage 1 (facts move while the teacher stays coherent)")
    elif status == "no_effect":
        efficacy = (f" with forget efficacy >= forget_efficacy_floor {config.forget_efficacy_floor:g}"
                    if config.forget_efficacy_floor > 0 else "")
        reasons.insert(0, f"no setting raised forget score by the minimum gain {config.min_forget_gain} over the "
                          f"current model{efficacy}; raise lr_multipliers or the recipe's epochs, or lower "
                          "min_forget_gain" + (" or forget_efficacy_floor" if efficacy else ""))
    elif status == "no_safe_setting":
        reasons.insert(0, "every setting that forgot measurably broke a floor (retain score or fluency); "
                          "unlearning this request at these settings would damage the model")
    base = stage1.base.forget
    outcome = SearchOutcome(
        status=status, tau=best.tau if best else None, reasons=reasons,
        setting=best.setting if best else None,
        base={"forget_score": forget_score(base), "retain_score": retain_score(stage1.base_retain),
              **{f"forget_{k}": v for k, v in base.to_dict().items()},
              **{f"retain_{k}": v for k, v in stage1.base_retain.to_dict().items()}},
        floors=vars(stage1.floors).copy(), scan=stage1.rows, bracket=stage1.verdicts,
        candidates=stage1.candidates, trials=trials, split=split.summary(),
        model_dir=Path(best.model_dir) if best is not None and best.model_dir is not None else None,
        config={"search": config.to_dict(), "round": round_config.to_dict(), "rung_epochs": epochs,
                "max_new_tokens": stage1.cap},
    )
    outcome.seconds = {"stage1": stage1_seconds, "stage2": time.perf_counter() - started - stage1_seconds}
    if plot:
        outcome.plot = plot_search(outcome, work_dir / "search.png")
    outcome.seconds["total"] = time.perf_counter() - started
    outcome.write_json(work_dir / "search.json")
    logger.info("search: %s %s in %.1f s", outcome.status, outcome.setting or "", outcome.seconds["total"])
    return outcome


def subjects_of(path: str | Path) -> list[object] | None:
    """The optional ``subject`` field of each row of a QA file (None when no row has one)."""
    return field_values(path, "subject")


def search_from_files(
    model_dir: str,
    forget_file: str,
    retain_file: str,
    work_dir: str,
    recipe: str = "embedded",
    overrides: dict[str, Any] | None = None,
    search_overrides: dict[str, Any] | None = None,
    forget_validation_file: str | None = None,
) -> SearchOutcome:
    """``run_search`` from QA files (items may carry a ``subject`` used to stratify the split)."""
    round_config = ASUConfig.from_dict({**get_recipe(recipe).to_dict(), **(overrides or {})})
    config = SearchConfig.from_dict(search_overrides or {})
    forget = load_qa_file(forget_file)
    validation = load_qa_file(forget_validation_file) if forget_validation_file else None
    return run_search(model_dir, forget, load_qa_file(retain_file), round_config, config, work_dir,
                      subjects=subjects_of(forget_file), forget_validation=validation)


__all__ = ["absolute_floors", "check_round_config", "generation_cap", "run_search", "search_from_files", "subjects_of"]
