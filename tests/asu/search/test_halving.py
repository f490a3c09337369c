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


def figures(entropy=0.9, fluent=1.0):
    return SetFigures(items=5, rouge_l_recall=0.5, probability=0.5, nll=1.0, token_entropy=entropy,
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
