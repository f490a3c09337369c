"""Stage 2 ladder on hand-made figures: a strength dimension, a non-monotone tau, ineffective and unsafe settings."""

from __future__ import annotations

import pytest

from asu.search.halving import Floors, TrialResult, rank
from asu.search.ladder import ladder_search, outcome_status, strongest_safe
from asu.search.scores import SetFigures

FLOORS = Floors(retain_score=0.8, fluent_share=0.9, forget_score=0.5, reference_utility=1.0)
RATES = [1e-5, 3e-5, 1e-4, 3e-4]


def figures(fluent=1.0):
    return SetFigures(items=5, rouge_l_recall=0.5, probability=0.5, nll=1.0, token_entropy=0.9, repetition=0.0,
                      fluent_share=fluent)


def landscape(table):
    """A fake trial: (tau, lr, lambda) -> (forget score, retain score, fluent share); records the calls."""
    calls = []

    def trial(tau, lr, weight):
        calls.append((tau, lr, weight))
        fe, ru, fluent = table[(tau, lr, weight)]
        forget = figures(fluent)
        return TrialResult(tau, 0, 5, forget, figures(), fe, ru, tuple(FLOORS.failures(forget, ru)), 0.0, lr, weight,
                           fe >= FLOORS.forget_score, FLOORS.combined_score(fe, ru, forget))

    return trial, calls


def strength_table(tau, fe, ru, fluent, weight=1.0):
    return {(tau, lr, weight): (f, r, fl) for lr, f, r, fl in zip(RATES, fe, ru, fluent, strict=True)}


def test_strength_bisection_finds_the_strongest_safe_level():
    # Forgetting and damage grow with the learning rate; the strongest level breaks fluency.
    table = strength_table(1.5, fe=[0.1, 0.3, 0.7, 0.9], ru=[1.0, 0.95, 0.9, 0.7], fluent=[1.0, 1.0, 0.95, 0.4])
    trial, calls = landscape(table)
    level, trials = strongest_safe(trial, 1.5, RATES, 1.0)
    assert level == 2 and [c[1] for c in calls] == [1e-4, 3e-4]  # mid (1e-4) safe -> 3e-4 unsafe -> stop
    assert [t.feasible for t in trials] == [True, False]


def test_no_safe_level_falls_back_to_the_gentlest():
    table = strength_table(1.5, fe=[0.6] * 4, ru=[0.5] * 4, fluent=[1.0] * 4)
    trial, calls = landscape(table)
    level, _ = strongest_safe(trial, 1.5, RATES, 1.0)
    assert level is None and [c[1] for c in calls] == [1e-4, 3e-5, 1e-5]


def test_every_candidate_tau_is_tried_at_the_chosen_strength_and_non_monotone_tau_wins():
    # At the chosen strength (1e-4), tau 2.0 breaks fluency but tau 3.0 (higher still) is safe and forgets most:
    # a search that assumed monotonicity would stop at 2.0 and never see 3.0.
    table = strength_table(1.5, fe=[0.1, 0.3, 0.6, 0.9], ru=[1.0, 0.95, 0.9, 0.7], fluent=[1.0, 1.0, 0.95, 0.4])
    table |= {(2.0, 1e-4, 1.0): (0.8, 0.9, 0.3), (3.0, 1e-4, 1.0): (0.75, 0.92, 1.0),
              (2.0, 3e-5, 1.0): (0.55, 0.95, 0.95)}
    trial, calls = landscape(table)
    trials = ladder_search(trial, [3.0, 1.5, 2.0], RATES, [1.0])
    # tau 2.0 breaks fluency at 1e-4 and is retried one level gentler (safe there), then tau 3.0 at 1e-4
    assert calls[-3:] == [(2.0, 1e-4, 1.0), (2.0, 3e-5, 1.0), (3.0, 1e-4, 1.0)]
    assert rank(trials)[0].setting == {"tau": 3.0, "learning_rate": 1e-4, "forget_weight": 1.0}
    assert outcome_status(trials, {}) == "chosen"


def test_a_hotter_tau_that_breaks_a_floor_is_retried_at_gentler_strengths():
    # The reference tau 1.5 is safe up to 1e-4; tau 3.0 breaks fluency there but at 3e-5 forgets more than any
    # safe tau-1.5 round: the best setting needs a strength of its own (TOFU author 5 on SmolLM2, ladder.py).
    table = strength_table(1.5, fe=[0.1, 0.3, 0.55, 0.9], ru=[1.0, 0.95, 0.9, 0.7], fluent=[1.0, 1.0, 0.95, 0.4])
    table |= {(3.0, 1e-4, 1.0): (0.9, 0.9, 0.6), (3.0, 3e-5, 1.0): (0.8, 0.95, 1.0),
              (4.0, 1e-4, 1.0): (0.95, 0.5, 0.0), (4.0, 3e-5, 1.0): (0.9, 0.6, 0.2), (4.0, 1e-5, 1.0): (0.9, 0.7, 0.4)}
    trial, calls = landscape(table)
    trials = ladder_search(trial, [1.5, 3.0, 4.0], RATES, [1.0])
    assert calls[2:] == [(3.0, 1e-4, 1.0), (3.0, 3e-5, 1.0),  # one gentler level is safe: stop there
                         (4.0, 1e-4, 1.0), (4.0, 3e-5, 1.0), (4.0, 1e-5, 1.0)]  # none is: every level tried
    assert rank(trials)[0].setting == {"tau": 3.0, "learning_rate": 3e-5, "forget_weight": 1.0}
    # a tau that is safe at the chosen strength is never retried gentler
    table[(3.0, 1e-4, 1.0)] = (0.9, 0.9, 0.95)
    trial, calls = landscape(table)
    ladder_search(trial, [1.5, 3.0], RATES, [1.0])
    assert [c for c in calls if c[0] == 3.0] == [(3.0, 1e-4, 1.0)]
    # unsafe_tau="none" (the ladder before): an unsafe tau is left at the shared strength
    table[(3.0, 1e-4, 1.0)] = (0.9, 0.9, 0.6)
    trial, calls = landscape(table)
    trials = ladder_search(trial, [1.5, 3.0], RATES, [1.0], unsafe_tau="none")
    assert [c for c in calls if c[0] == 3.0] == [(3.0, 1e-4, 1.0)] and rank(trials)[0].tau == 1.5
    with pytest.raises(ValueError, match="unsafe_tau='never': use 'gentler_levels' or 'none'"):
        ladder_search(trial, [1.5], RATES, [1.0], unsafe_tau="never")


def test_lambda_is_tried_at_the_best_tau_and_strength():
    table = strength_table(1.5, fe=[0.1, 0.3, 0.6, 0.9], ru=[1.0, 0.95, 0.9, 0.7], fluent=[1.0, 1.0, 0.95, 0.4])
    table |= {(1.5, 1e-4, 0.3): (0.7, 0.95, 1.0)}
    trial, calls = landscape(table)
    trials = ladder_search(trial, [1.5], RATES, [1.0, 0.3])
    assert calls[-1] == (1.5, 1e-4, 0.3) and rank(trials)[0].forget_weight == 0.3


def test_an_ineffective_setting_is_never_chosen_and_the_outcome_is_no_effect():
    # Every level is safe but none raises forget score to the floor (0.5): nothing forgot measurably.
    table = strength_table(1.5, fe=[0.1, 0.2, 0.3, 0.4], ru=[1.0] * 4, fluent=[1.0] * 4)
    table |= {(2.0, 3e-4, 1.0): (0.45, 1.0, 1.0)}
    trial, _ = landscape(table)
    trials = ladder_search(trial, [1.5, 2.0], RATES, [1.0])
    assert all(t.feasible and not t.effective for t in trials) and rank(trials) == []
    assert outcome_status(trials, {}) == "no_effect"


def test_forgetting_only_by_breaking_a_floor_is_no_safe_setting():
    table = strength_table(1.5, fe=[0.1, 0.2, 0.8, 0.9], ru=[1.0, 1.0, 0.6, 0.5], fluent=[1.0, 1.0, 0.5, 0.2])
    table |= {(2.0, 3e-5, 1.0): (0.3, 1.0, 1.0)}
    trial, _ = landscape(table)
    trials = ladder_search(trial, [1.5, 2.0], RATES, [1.0])
    assert outcome_status(trials, {}) == "no_safe_setting"


def test_outcome_without_trials_follows_the_bracket():
    assert outcome_status([], {2.0: "too weak: content-token NLL rises 0.01", 3.0: "too weak: x"}) == "no_effect"
    assert outcome_status([], {2.0: "too weak: x", 3.0: "teacher incoherent: fluent share 0.1"}) == "no_safe_setting"
    assert ladder_search(lambda *a: None, [], RATES, [1.0]) == []


def test_floors_from_the_current_model():
    from pipelines.temperature_search import SearchConfig
    from pipelines.temperature_search.search import absolute_floors

    base = SetFigures(items=6, rouge_l_recall=0.9, probability=0.5, nll=1.0, token_entropy=0.8, repetition=0.0,
                      fluent_share=5 / 6)
    floors = absolute_floors(SearchConfig(), base, 0.7, 10, base_retain_rouge=0.8)
    assert floors.fluent_share == 5 / 6  # capped at the current model's own share (one odd answer of six)
    assert floors.retain_rouge == pytest.approx(0.9 * 0.8)
    # the retain ROUGE-L floor stays relative under absolute floors (the gate's utility drop is relative)
    absolute = absolute_floors(SearchConfig(floor_mode="absolute", utility_floor=0.5), base, 0.7, 10, 0.8)
    assert absolute.retain_score == 0.5 and absolute.retain_rouge == pytest.approx(0.72)
    assert floors.retain_score == pytest.approx(0.9 * 0.7) and floors.reference_utility == 0.7
    # FE of the current model: hmean(0.1, 0.5, 0.8) = 3 / (10 + 2 + 1.25); the effect floor adds the minimum gain.
    assert floors.forget_score == pytest.approx(3 / (10 + 2 + 1.25) + 0.1)


def test_a_weak_but_coherent_teacher_is_tried_when_nothing_is_bracketed():
    from asu.search.scan import ScanRow
    from pipelines.temperature_search import SearchConfig
    from pipelines.temperature_search.search import stage2_candidates

    def row(tau, content):
        return ScanRow(tau, figures(), content, 0.5, 1.0)

    base, rows = row(1.0, 0.01), [row(1.25, 0.03), row(1.5, 0.10), row(2.0, 5.0)]
    verdicts = {1.25: "too weak: 0.02", 1.5: "too weak: 0.09", 2.0: "teacher incoherent: fluent share 0.00"}
    assert stage2_candidates(rows, base, verdicts, SearchConfig()) == [1.5]  # never the incoherent 2.0
    assert stage2_candidates(rows, base, {**verdicts, 1.25: None}, SearchConfig()) == [1.25]  # bracketed first
    assert stage2_candidates(rows, base, {t: "teacher incoherent" for t in verdicts}, SearchConfig()) == []


def test_a_setting_that_leaves_the_facts_stated_is_no_effect():
    # The forget score rises (the answers' probability falls) but the greedy answers still state most facts:
    # the gate's forget efficacy (1 - fact recall) would refuse the round, so the search must not choose it.
    floors = Floors(retain_score=0.8, fluent_share=0.9, forget_score=0.3, forget_efficacy=0.5)

    def result(tau, fact_recall, fe):
        forget = SetFigures(items=5, rouge_l_recall=0.9, probability=0.2, nll=1.6, token_entropy=0.9,
                            repetition=0.0, fluent_share=1.0, fact_recall=fact_recall)
        misses = floors.effect_misses(fe, forget)
        return TrialResult(tau, 0, 5, forget, figures(), fe, 0.95, tuple(floors.failures(forget, 0.95)), 0.0, 1e-4,
                           1.0, not misses, floors.combined_score(fe, 0.95, forget)), misses

    keeps_facts, misses = result(2.0, fact_recall=0.7, fe=0.6)
    assert misses == ["forget efficacy 0.300 < floor 0.500"] and keeps_facts.feasible
    forgets, _ = result(3.0, fact_recall=0.4, fe=0.5)
    assert keeps_facts.combined_score > forgets.combined_score  # the better score alone would have won
    assert rank([keeps_facts, forgets])[0].tau == 3.0
    assert outcome_status([keeps_facts], {}) == "no_effect"
    # fact recall not measured: ROUGE-L recall stands in (efficacy 1 - 0.9)
    no_questions = SetFigures(items=5, rouge_l_recall=0.9, probability=0.2, nll=1.6, token_entropy=0.9,
                              repetition=0.0, fluent_share=1.0)
    assert floors.effect_misses(0.6, no_questions) == ["forget efficacy 0.100 < floor 0.500"]
