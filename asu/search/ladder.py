"""Stage 2 of the search, default strategy: the round's strength first, then every bracketed tau at that strength.

What a round does is decided by how hard it pushes (learning rate, forget weight lambda) as much as by tau. On
SmolLM2-135M the paper's learning rate forgets nothing at any tau while ten times that forgets fluently at tau
1.5 and breaks the language at tau >= 2 (``realmodel.md`` section 3), so tau alone cannot be searched at a fixed
strength. The ladder searches both, with real rounds scored on the validation items (``halving.run_trial``):

1. **strength**: the learning-rate levels, gentlest first, are bisected at the *reference tau* (the lowest
   bracketed tau: its teacher is the most coherent) for the strongest level that is still *safe* (every safety
   floor met). This assumes that a stronger round changes the model more, for better (forgetting) and worse
   (damage), which holds for gradient steps of a fixed direction; it assumes nothing about tau.
2. **tau**: at that strength, one trial at every other bracketed candidate tau. No candidate is skipped because
   of where it lies: forgetting and damage need not be monotone in tau. A tau that breaks a safety floor at that
   strength is retried at the gentler levels (bisected the same way): a hotter teacher pulls harder, so its safe
   strength can be lower. Measured on the SmolLM2 TOFU target forgetting author 5 (``bench.subsets``): the
   reference tau 2 was safe up to lr 1e-4, where tau 3 and 4 broke fluency (3 and 0 of 5 validation answers
   fluent), so the search chose tau 2 at 1e-4 (test score 0.499), while a full round at tau 3 and lr 3e-5 scored
   0.821 on the same test items.
3. **lambda** (only when the search lists forget weights): at the best (tau, learning rate), one trial per other
   forget weight.

The winner is the safe *and* effective trial of highest combined score (``halving.rank``). ``trial`` is injected
so that the logic is tested on hand-made figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

from asu.errors import UsageError
from asu.search.halving import TrialResult, rank

logger = logging.getLogger(__name__)

#: (tau, learning rate, forget weight) -> the trial's result.
Trial = Callable[[float, float, float], TrialResult]
#: What phase 2 does with a tau that breaks a safety floor at the chosen strength: retry it at the gentler levels,
#: or leave it (the ladder before 2026-12-07).
UnsafeTau = Literal["gentler_levels", "none"]


def strongest_safe(trial: Trial, tau: float, learning_rates: Sequence[float], forget_weight: float
                   ) -> tuple[int | None, list[TrialResult]]:
    """Bisect ``learning_rates`` (ascending) at ``tau`` for the highest safe level.

    Returns (index of that level or None when even the gentlest breaks a floor, the trials run). Runs at most
    ``ceil(log2(n + 1))`` trials.
    """
    low, high, best, trials = 0, len(learning_rates) - 1, None, []
    while low <= high:
        mid = (low + high + 1) // 2
        trials.append(trial(tau, learning_rates[mid], forget_weight))
        if trials[-1].feasible:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best, trials


def ladder_search(trial: Trial, candidates: Sequence[float], learning_rates: Sequence[float],
                  forget_weights: Sequence[float], unsafe_tau: UnsafeTau = "gentler_levels") -> list[TrialResult]:
    """Every trial of the ladder (phases 1-3 of the module docstring), in the order run.

    ``candidates``: the bracketed taus; ``learning_rates``: the strength levels (sorted here);
    ``forget_weights``: the lambdas to try, the first one used in phases 1 and 2; ``unsafe_tau``: see
    :data:`UnsafeTau`.
    """
    if unsafe_tau not in ("gentler_levels", "none"):
        raise UsageError(f"unsafe_tau={unsafe_tau!r}: use 'gentler_levels' or 'none'")
    if not candidates:
        return []
    taus, rates = sorted(candidates), sorted(learning_rates)
    weight = forget_weights[0]
    level, trials = strongest_safe(trial, taus[0], rates, weight)
    # No safe level at the reference tau: the other taus get the gentlest level (the only one that may be safe).
    rate = rates[0 if level is None else level]
    logger.info("ladder: strength %.3g (lambda %g) chosen at the reference tau %g", rate, weight, taus[0])
    for tau in taus[1:]:
        trials.append(trial(tau, rate, weight))
        # Unsafe at this strength: the gentler levels, bisected for the strongest safe one.
        if unsafe_tau == "gentler_levels" and not trials[-1].feasible and level:
            gentler, more = strongest_safe(trial, tau, rates[:level], weight)
            trials += more
            logger.info("ladder: tau %g broke a floor at %.3g; %s", tau, rate,
                        "no gentler level is safe" if gentler is None else f"safe at {rates[gentler]:.3g}")
    if len(forget_weights) > 1:
        ranked = rank(trials)
        best = ranked[0] if ranked else max(trials, key=lambda t: (t.feasible, t.combined_score))
        for other in forget_weights[1:]:
            trials.append(trial(best.tau, best.learning_rate, other))
    return trials


def outcome_status(trials: Sequence[TrialResult], bracket: dict[float, str | None]) -> str:
    """``chosen`` (some trial safe and effective), ``no_effect`` (nothing forgot measurably) or ``no_safe_setting``.

    Without trials the stage-1 bracket decides: every tau too weak is ``no_effect``, any incoherent teacher
    ``no_safe_setting``.
    """
    if rank(trials):
        return "chosen"
    if trials:
        return "no_safe_setting" if any(t.effective for t in trials) else "no_effect"
    reasons = [why for why in bracket.values() if why is not None]
    return "no_effect" if reasons and all(why.startswith("too weak") for why in reasons) else "no_safe_setting"


__all__ = ["Trial", "UnsafeTau", "ladder_search", "outcome_status", "strongest_safe"]
