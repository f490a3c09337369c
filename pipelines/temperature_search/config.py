"""Typed, validated configuration of the automatic temperature search (issue 5).

Every bad value raises ``ValueError`` at construction, naming the field and the fix, before any model is
loaded. Checks that need the data (validation sizes) or the model (floors above what the current model
achieves) run in ``run_search`` before the scan starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from asu.errors import UsageError
from asu.passages import CONTINUATION_TOKENS, PREFIX_TOKENS
from asu.search.ladder import UnsafeTau
from asu.search.scan import BracketCriteria
from asu.strict import check_keys

FloorMode = Literal["relative", "absolute"]
Stage2 = Literal["ladder", "bisection", "successive_halving"]
RecipeWeight = Literal["recipe"]
TrialLength = Literal["matched_steps", "same_epochs"]
TrialFluency = Literal["validation", "validation_and_unseen"]
TrialItems = Literal["validation", "round"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SearchConfig:
    """What the search scans, how many trials it runs and what it refuses to return.

    Floors (hard constraints, on the validation items): retain score and retain ROUGE-L, fluent share and token
    entropy of the greedy answers to the forget questions. ``floor_mode='relative'`` reads ``utility_floor`` and
    ``entropy_floor`` as fractions of the current model's own figures; ``'absolute'`` as 0-1 values.
    ``retain_rouge_floor`` is always relative, ``fluent_share_floor`` always absolute.
    """

    tau_grid: tuple[float, ...] = field(
        default=(1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
        metadata=_help("taus scanned in stage 1: strictly increasing, each >= 1 (tau = 1 is always scanned too)"),
    )
    stage2: Stage2 = field(
        default="ladder",
        metadata=_help(
            "ladder: the round's strength (lr_multipliers) bisected at the lowest bracketed tau, then every "
            "candidate tau at that strength (asu.search.ladder); bisection: tau only, at the recipe's strength, "
            "halving the candidates around the floor boundary; successive_halving: tau only, short rungs of "
            "trial_epochs, x eta per rung, last rung full length"
        ),
    )
    stage2_candidates: int = field(
        default=3, metadata=_help("at most this many in-bracket taus (spread over the bracket) enter stage 2")
    )
    lr_multipliers: tuple[float, ...] = field(
        default=(1.0, 3.0, 10.0, 30.0),
        metadata=_help("ladder: strength levels, multiples of the recipe's learning rate; strictly increasing, > 0"),
    )
    forget_weights: tuple[float, ...] | RecipeWeight = field(
        default="recipe",
        metadata=_help("ladder: 'recipe' keeps the recipe's lambda; a list of lambdas (>= 0) tries each at the "
                       "best tau and learning rate (the first one is used while searching those)"),
    )
    unsafe_tau: UnsafeTau = field(
        default="gentler_levels",
        metadata=_help("ladder: a tau that breaks a safety floor at the strength chosen at the reference tau is "
                       "retried at the gentler levels (gentler_levels) or left (none)"),
    )
    trial_length: TrialLength = field(
        default="matched_steps",
        metadata=_help("ladder: matched_steps: a trial runs as many optimizer steps as the final round will (more "
                       "epochs over the fewer validation items); same_epochs: the round's epochs (cheaper, but a "
                       "request about one subject then forgets less in a trial than in its round)"),
    )
    trial_items: TrialItems = field(
        default="validation",
        metadata=_help("ladder: what a trial trains on. validation: the forget validation items (trial_length decides "
                       "the epochs); round: exactly what the final round trains on (every forget item, the retain "
                       "items outside the retain validation sample, the round's epochs), scored on the validation "
                       "items, and the chosen trial's model *is* the final round, not trained again. Measured on 4 "
                       "SmolLM2 subsets (README): round chose better on one, worse on two (one under 0.9 of the "
                       "grid's best), so validation stays the default"),
    )
    min_forget_gain: float = field(
        default=0.1,
        metadata=_help("a setting must raise forget score on the validation items by at least this much over "
                       "the current model, or it counts as no effect"),
    )
    forget_efficacy_floor: float = field(
        default=0.0,
        metadata=_help("a setting must also remove at least this share of the validation answers' facts (forget "
                       "efficacy = 1 - fact recall, absolute, the figure the pipeline's gate reads), or it counts as "
                       "no effect; 0 = no such floor. The pipeline raises it to the gate's forget_efficacy_min, so "
                       "the search never chooses a setting whose own validation answers already miss the gate's bar"),
    )
    trial_epochs: int = field(
        default=3, metadata=_help("successive_halving: epochs of the first rung (the last rung uses the round's)")
    )
    eta: int = field(default=2, metadata=_help("successive halving: keep 1/eta per rung, multiply epochs by eta"))
    floor_mode: FloorMode = field(
        default="relative", metadata=_help("relative: floors are fractions of the current model's figures")
    )
    utility_floor: float = field(default=0.9, metadata=_help("minimum retain score (hmean of ROUGE-L and prob)"))
    retain_rouge_floor: float = field(
        default=0.9,
        metadata=_help("minimum ROUGE-L recall of the greedy answers to the retain validation questions as a fraction "
                       "of the current model's (always relative, whatever floor_mode), the figure the gate's "
                       "utility_drop reads (0.9 = the product gate's 10% drop): the retain score "
                       "alone lets a rise of the answers' probability, which the retain loss trains, hide a fall of "
                       "the answers themselves (the real-model demo, 2026-12-07: retain score 0.66 -> 0.87 while "
                       "ROUGE-L fell 0.99 -> 0.905)"),
    )
    entropy_floor: float = field(
        default=0.0,
        metadata=_help("minimum token entropy of the forget answers; 0 = none (the fluency measure catches loops and "
                       "empty answers; an entropy floor moved by thousandths decided outcomes by noise)"),
    )
    fluent_share_floor: float = field(
        default=0.9, metadata=_help("minimum share of forget answers asu.fluency judges fluent; always absolute")
    )
    trial_fluency: TrialFluency = field(
        default="validation",
        metadata=_help("which forget answers a trial's fluent share is judged on: validation (the items it trains "
                       "on) or validation_and_unseen (those and unseen_fluency_items forget items it never saw); "
                       "measured on 4 SmolLM2 subsets (README), the unseen items never improved a choice"),
    )
    unseen_fluency_items: int = field(
        default=8, metadata=_help("validation_and_unseen: forget items outside the validation split (seeded) whose "
                                  "answers every trial also judges; fewer when the request has fewer")
    )
    min_content_nll_rise: float = field(
        default=0.1, metadata=_help("stage 1: the teacher must raise content-token NLL by this many nats")
    )
    min_teacher_fluent_share: float = field(
        default=0.5, metadata=_help("stage 1: minimum fluent share of the smoothed teacher's own answers")
    )
    min_teacher_entropy_ratio: float = field(
        default=0.5, metadata=_help("stage 1: teacher answer token entropy >= this x the plain model's")
    )
    max_retain_nll_rise: float = field(
        default=8.0, metadata=_help("stage 1: the teacher's retain NLL may rise by at most this many nats")
    )
    forget_validation_fraction: float = field(
        default=0.25, metadata=_help("share of each subject's forget items split off for validation (seeded)")
    )
    retain_validation_size: int = field(default=20, metadata=_help("retain items held out for validation"))
    min_validation_items: int = field(
        default=5, metadata=_help("smallest forget (and retain) validation set the search accepts")
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata=_help("greedy answer length when scoring; None = 1.25 x the longest validation reference + 16"),
    )
    passage_piece_tokens: int = field(
        default=160,
        metadata=_help("a text request's passages are cut into pieces of at most this many tokens, the units the "
                       "validation split draws (>= 2 x (prefix + continuation) tokens, 160, so every piece is probed)"),
    )
    seed: int = field(default=1001, metadata=_help("seeds the validation split"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau_grid", tuple(float(t) for t in self.tau_grid))
        self._check_grid()
        for name in ("stage2_candidates", "trial_epochs", "retain_validation_size", "max_new_tokens",
                     "unseen_fluency_items"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name}={getattr(self, name)} must be >= 1")
        if self.stage2 not in ("ladder", "bisection", "successive_halving"):
            raise UsageError(f"stage2={self.stage2!r} is unknown; use 'ladder', 'bisection' or 'successive_halving'")
        self._check_strength()
        if self.trial_length not in ("matched_steps", "same_epochs"):
            raise UsageError(f"trial_length={self.trial_length!r}: use 'matched_steps' or 'same_epochs'")
        if self.unsafe_tau not in ("gentler_levels", "none"):
            raise UsageError(f"unsafe_tau={self.unsafe_tau!r}: use 'gentler_levels' or 'none'")
        if self.trial_fluency not in ("validation", "validation_and_unseen"):
            raise UsageError(f"trial_fluency={self.trial_fluency!r}: use 'validation' or 'validation_and_unseen'")
        self._check_trial_items()
        if self.floor_mode not in ("relative", "absolute"):
            raise UsageError(f"floor_mode={self.floor_mode!r} is unknown; use 'relative' or 'absolute'")
        if self.eta < 2:
            raise UsageError(f"eta={self.eta} must be >= 2 (keep 1/eta of the candidates per rung)")
        if self.min_validation_items < 2:
            raise UsageError(f"min_validation_items={self.min_validation_items} must be >= 2")
        if self.retain_validation_size < self.min_validation_items:
            raise UsageError(
                f"retain_validation_size={self.retain_validation_size} is below min_validation_items="
                f"{self.min_validation_items}; raise retain_validation_size"
            )
        least = 2 * (PREFIX_TOKENS + CONTINUATION_TOKENS)
        if not (isinstance(self.passage_piece_tokens, int) and self.passage_piece_tokens >= least):
            raise UsageError(f"passage_piece_tokens={self.passage_piece_tokens!r} must be an integer >= {least} "
                             f"(2 x ({PREFIX_TOKENS} prefix + {CONTINUATION_TOKENS} continuation) tokens: a piece "
                             "of a passage is probed by continuing its prefix)")
        if not 0 < self.forget_validation_fraction < 1:
            raise UsageError(f"forget_validation_fraction={self.forget_validation_fraction} must be in (0, 1)")
        self._check_floors()
        for name in ("min_content_nll_rise", "max_retain_nll_rise"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UsageError(f"{name}={getattr(self, name)} must be a finite number >= 0")
        for name in ("min_teacher_fluent_share", "min_teacher_entropy_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name}={getattr(self, name)} must be in [0, 1]")

    def _check_trial_items(self) -> None:
        if self.trial_items not in ("validation", "round"):
            raise UsageError(f"trial_items={self.trial_items!r}: use 'validation' or 'round'")
        if self.trial_items == "round" and self.stage2 != "ladder":
            raise UsageError(f"trial_items='round' needs stage2='ladder' (stage2={self.stage2!r} runs trials of "
                             "other lengths); use stage2='ladder' or trial_items='validation'")
        if self.trial_items == "round" and self.trial_fluency != "validation":
            raise UsageError("trial_fluency='validation_and_unseen' judges forget items no trial trains on, and with "
                             "trial_items='round' every trial trains on all of them; use one or the other")

    def _check_grid(self) -> None:
        grid = self.tau_grid
        if not grid:
            raise UsageError("tau_grid is empty; list the taus to scan, e.g. (1.5, 2.0, 2.5, 3.0)")
        bad = [t for t in grid if not (math.isfinite(t) and t >= 1.0)]
        if bad:
            raise UsageError(f"tau_grid values {bad} are < 1 or not finite: attention temperatures must be >= 1")
        if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
            raise UsageError(
                f"tau_grid {list(grid)} must be strictly increasing without duplicates; "
                f"use {sorted(set(grid))}"
            )

    def _check_strength(self) -> None:
        rates = tuple(float(m) for m in self.lr_multipliers)
        object.__setattr__(self, "lr_multipliers", rates)
        if not rates or any(not (math.isfinite(m) and m > 0) for m in rates) or any(
                b <= a for a, b in zip(rates, rates[1:], strict=False)):
            raise UsageError(f"lr_multipliers={list(rates)} must be a non-empty, strictly increasing list of "
                             "finite numbers > 0, e.g. [1, 3, 10]")
        weights = self.forget_weights
        if isinstance(weights, str):
            if weights != "recipe":
                raise UsageError(f"forget_weights={weights!r}: use 'recipe' or a list of lambdas, e.g. [1.0, 0.3]")
        else:
            weights = tuple(float(w) for w in weights)
            object.__setattr__(self, "forget_weights", weights)
            if not weights or any(not (math.isfinite(w) and w >= 0) for w in weights) or len(set(weights)) < len(
                    weights):
                raise UsageError(f"forget_weights={list(weights)} must list distinct finite lambdas >= 0; use "
                                 "'recipe' to keep the recipe's")
        if not (math.isfinite(self.min_forget_gain) and 0 <= self.min_forget_gain < 1):
            raise UsageError(f"min_forget_gain={self.min_forget_gain} must be in [0, 1): forget score is 0-1")

    def learning_rates(self, recipe_rate: float) -> list[float]:
        """The ladder's strength levels: ``lr_multipliers`` x the recipe's learning rate (the search's trials and
        the pipeline's gentler-strength retry read the same levels)."""
        return [m * recipe_rate for m in self.lr_multipliers]

    def weights(self, recipe_weight: float) -> tuple[float, ...]:
        """The lambdas the ladder tries, the first one while it searches tau and strength."""
        return (recipe_weight,) if self.forget_weights == "recipe" else tuple(self.forget_weights)

    def _check_floors(self) -> None:
        for name in ("utility_floor", "retain_rouge_floor", "entropy_floor", "fluent_share_floor",
                     "forget_efficacy_floor"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UsageError(
                    f"{name}={value} can never be met: figures are on a 0-1 scale"
                    + (" and relative floors are fractions of the current model's value"
                       if name not in ("fluent_share_floor", "forget_efficacy_floor")
                       and self.floor_mode == "relative" else "")
                    + f"; set {name} within [0, 1]"
                )

    @property
    def criteria(self) -> BracketCriteria:
        """The stage-1 bracket criteria."""
        return BracketCriteria(self.min_content_nll_rise, self.min_teacher_fluent_share,
                               self.min_teacher_entropy_ratio, self.max_retain_nll_rise)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tau_grid"] = list(self.tau_grid)
        out["lr_multipliers"] = list(self.lr_multipliers)
        if not isinstance(self.forget_weights, str):
            out["forget_weights"] = list(self.forget_weights)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchConfig:
        """Build from a dict; an unknown key is a ``UsageError`` with the closest valid name (``asu.strict``)."""
        check_keys(values, cls, what="SearchConfig")
        return cls(**values)
