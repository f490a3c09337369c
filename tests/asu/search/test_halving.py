"""Stage 2 control: rung epochs, ranking under floors, successive halving and backfill (failures injected)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import asu.search.halving as halving
from asu.config import ASUConfig
from asu.search.halving import Floors, TrialResult, rank, rung_epochs, successive_halving, winner
from asu.search.scores import SetFigures

FLOORS = Floors(retain_score=0.9, fluent_share=1.0, token_entropy=0.8)


def figures(entropy=0.9, fluent=1.0, rouge=0.5):
    return SetFigures(items=5, rouge_l_recall=rouge, probability=0.5, nll=1.0, token_entropy=entropy,
                      repetition=0.0, fluent_share=fluent)


def result(tau, rung, fe, failures=(), epochs=1):
    """A trial whose combined score follows its forget score (utility and fluency held fixed)."""
    return TrialResult(tau, rung, epochs, figures(), figures(), fe, 0.95, tuple(failures), 0.0, 1e-4, 1.0, True,
                       FLOORS.combined_score(fe, 0.95, figures()))


def test_rung_epochs():
    assert rung_epochs(3, 10) == [3, 6, 10]
    assert rung_epochs(1, 2) == [1, 2] and rung_epochs(5, 5) == [5] and rung_epochs(2, 10, eta=3) == [2, 6, 10]
    with pytest.raises(ValueError, match="first"):
        rung_epochs(11, 10)


def test_floors_name_what_fails():
    assert FLOORS.failures(figures(), 0.95) == []
    failures = FLOORS.failures(figures(entropy=0.5, fluent=0.8), 0.5)
    assert len(failures) == 3 and "retain score 0.500 < floor 0.900" in failures[0]


def test_a_rise_of_retain_probability_does_not_hide_a_fall_of_the_retain_answers():
    # The retain loss lifts the retain answers' probability, so the retain score (hmean of ROUGE-L and probability)
    # can rise while the answers themselves, which the gate's utility check reads, fall (hand-made figures).
    floors = Floors(retain_score=0.59, fluent_share=0.9, retain_rouge=0.9 * 0.95)
    kept, fallen = figures(rouge=0.95), figures(rouge=0.825)
    assert floors.failures(figures(), 0.87, kept) == []
    assert floors.failures(figures(), 0.87, fallen) == ["retain ROUGE-L 0.825 < floor 0.855"]
    assert floors.failures(figures(), 0.87) == []  # no retain figures given: not checked


def test_score_is_the_harmonic_mean_of_efficacy_relative_utility_and_fluency():
    floors = Floors(retain_score=0.5, fluent_share=0.9, reference_utility=0.8)
    # hmean(0.6, 0.4 / 0.8, 1.0) = 3 / (1/0.6 + 1/0.5 + 1) = 0.6923; utility above the reference is capped at 1.
    assert floors.combined_score(0.6, 0.4, figures()) == pytest.approx(3 / (1 / 0.6 + 2 + 1))
    assert floors.combined_score(0.6, 0.9, figures()) == pytest.approx(3 / (1 / 0.6 + 1 + 1))
    assert floors.combined_score(0.6, 0.9, figures(fluent=0.0)) == 0.0


def test_rank_skips_ineffective_trials():
    effective, ineffective = result(2.0, 0, 0.6), replace(result(3.0, 0, 0.9), effective=False)
    assert rank([effective, ineffective]) == [effective]


def test_rank_prefers_efficacy_then_gentler_tau():
    trials = [result(2.0, 1, 0.6), result(3.0, 1, 0.6), result(4.0, 1, 0.9, ["entropy"]), result(2.5, 0, 0.99)]
    assert [t.tau for t in rank(trials)] == [2.5, 2.0, 3.0]
    assert winner(trials, 1).tau == 2.0
    assert winner([result(4.0, 1, 0.9, ["entropy"])], 1) is None


def fake_trials(monkeypatch, table):
    """Replace the real trial by a table (tau, rung) -> (FE, failures); records the calls."""
    calls = []

    def fake(model_dir, tau, epochs, rung, *args, **kwargs):
        calls.append((tau, rung, epochs))
        fe, failures = table[(tau, rung)]
        return result(tau, rung, fe, failures, epochs)

    monkeypatch.setattr(halving, "run_trial", fake)
    return calls


def run(candidates):
    return successive_halving("m", candidates, [], [], [], ASUConfig(), FLOORS, Path("w"), epochs=[1, 2, 4])


def test_halving_keeps_the_best_feasible_half(monkeypatch):
    table = {(2.0, 0): (0.3, []), (2.5, 0): (0.5, []), (3.0, 0): (0.7, []), (4.0, 0): (0.9, ["fluency"]),
             (2.5, 1): (0.6, []), (3.0, 1): (0.8, []), (3.0, 2): (0.85, [])}
    calls = fake_trials(monkeypatch, table)
    trials = run([4.0, 2.0, 3.0, 2.5])
    # rung 0: all four; 4.0 breaks a floor, so rung 1 takes the best 2 of the feasible; rung 2 the best 1.
    assert calls == [(2.0, 0, 1), (2.5, 0, 1), (3.0, 0, 1), (4.0, 0, 1), (2.5, 1, 2), (3.0, 1, 2), (3.0, 2, 4)]
    assert winner(trials, 2).tau == 3.0


def test_backfill_when_the_survivor_fails_at_full_length(monkeypatch):
    table = {(2.0, 0): (0.3, []), (3.0, 0): (0.7, []), (2.0, 1): (0.4, []), (3.0, 1): (0.8, ["entropy"])}
    calls = fake_trials(monkeypatch, table)
    trials = successive_halving("m", [2.0, 3.0], [], [], [], ASUConfig(), FLOORS, Path("w"), epochs=[1, 2])
    assert calls == [(2.0, 0, 1), (3.0, 0, 1), (3.0, 1, 2), (2.0, 1, 2)]
    assert winner(trials, 1).tau == 2.0


def test_stops_when_nothing_is_feasible(monkeypatch):
    calls = fake_trials(monkeypatch, {(2.0, 0): (0.3, ["utility"]), (3.0, 0): (0.7, ["utility"])})
    trials = run([2.0, 3.0])
    assert len(calls) == 2 and winner(trials, 2) is None


def test_a_trial_judges_fluency_on_unseen_forget_items_too(tiny_model_dir, tiny_sets, tmp_path):
    """The floors' fluent share pools the trained validation answers with answers to forget items never trained on;
    each share is what a separate scoring of the kept trial model finds."""
    from asu.modeling import load_model_and_tokenizer
    from asu.search.scores import score_sets

    forget, retain = tiny_sets
    val, unseen = forget[:4], forget[4:10]
    config = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=1, batch_size=4, grad_accum_steps=1, max_length=256)
    floors = Floors(retain_score=0.0, fluent_share=0.0)
    trial = halving.run_trial(tiny_model_dir, 3.0, 1, 0, val, retain[:8], retain[8:12], config, floors, tmp_path,
                              max_new_tokens=24, keep_model=True, unseen=unseen)
    model, tokenizer = load_model_and_tokenizer(next(tmp_path.glob("trial-*")))
    alone = score_sets(model, tokenizer, {"val": val, "unseen": unseen}, max_new_tokens=24, max_length=256)
    assert trial.unseen_fluent_share == pytest.approx(alone["unseen"].fluent_share)
    pooled = (alone["val"].fluent_share * len(val) + alone["unseen"].fluent_share * len(unseen)) / 10
    assert trial.forget.fluent_share == pytest.approx(pooled)
    assert trial.forget.rouge_l_recall == pytest.approx(alone["val"].rouge_l_recall)  # efficacy: validation only
    assert trial.to_dict()["unseen_fluent_share"] == trial.unseen_fluent_share
    without = halving.run_trial(tiny_model_dir, 3.0, 1, 0, val, retain[:8], retain[8:12], config, floors,
                                tmp_path / "plain", max_new_tokens=24)
    assert without.unseen_fluent_share is None
