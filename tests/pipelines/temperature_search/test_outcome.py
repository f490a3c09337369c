"""``SearchOutcome.runner_ups``: what the pipeline trains next when the chosen setting's round fails the gate."""

from __future__ import annotations

from asu.search.halving import TrialResult
from asu.search.scores import SetFigures
from pipelines.temperature_search.outcome import SearchOutcome


def _trial(tau, lr, score, *, rung=0, failures=(), effective=True):
    figures = SetFigures(items=5, rouge_l_recall=0.5, probability=0.5, nll=1.0, token_entropy=0.9, repetition=0.0,
                         fluent_share=1.0)
    return TrialResult(tau, rung, 5, figures, figures, score, 0.95, tuple(failures), 0.0, lr, 1.0, effective, score)


def _outcome(trials, setting):
    return SearchOutcome("chosen", setting["tau"], ["chosen by score"], {}, {}, [], {}, [], trials, {}, {},
                         setting=setting, model_dir=None)


def test_runner_ups_are_the_other_safe_effective_settings_of_the_last_rung_best_first():
    trials = [
        _trial(3.0, 1e-4, 0.90),
        _trial(2.0, 1e-4, 0.70),
        _trial(3.0, 3e-5, 0.80),
        _trial(4.0, 1e-4, 0.99, failures=("fluent share 0.60 < floor 0.90",)),  # unsafe: never a runner-up
        _trial(1.5, 1e-4, 0.95, effective=False),  # forgot too little: never a runner-up
        _trial(3.0, 3e-5, 0.80),  # the same setting twice counts once
    ]
    chosen = {"tau": 3.0, "learning_rate": 1e-4, "forget_weight": 1.0}
    ups = _outcome(trials, chosen).runner_ups()
    assert [u.setting for u in ups] == [{"tau": 3.0, "learning_rate": 3e-5, "forget_weight": 1.0},
                                        {"tau": 2.0, "learning_rate": 1e-4, "forget_weight": 1.0}]
    assert all(u.status == "chosen" and u.model_dir is None and u.tau == u.setting["tau"] for u in ups)
    assert "runner-up tau=3 lr=3e-05" in ups[0].reasons[-1]
    assert ups[0].chosen_trial.setting == ups[0].setting


def test_successive_halving_runner_ups_come_from_the_full_length_rung_only():
    trials = [_trial(2.0, 1e-4, 0.95, rung=0), _trial(3.0, 1e-4, 0.9, rung=0), _trial(3.0, 1e-4, 0.8, rung=1)]
    outcome = _outcome(trials, {"tau": 3.0, "learning_rate": 1e-4, "forget_weight": 1.0})
    assert outcome.runner_ups() == []  # tau 2 was cut before the last rung: no full-length evidence for it


def test_nothing_chosen_has_no_runner_up():
    outcome = SearchOutcome("no_safe_setting", None, ["every trial broke a floor"], {}, {}, [], {}, [],
                            [_trial(2.0, 1e-4, 0.9, failures=("x",))], {}, {})
    assert outcome.runner_ups() == []


def test_gentler_is_the_chosen_tau_one_ladder_level_down():
    chosen = {"tau": 3.0, "learning_rate": 1e-4, "forget_weight": 1.0}
    outcome = _outcome([_trial(3.0, 1e-4, 0.9)], chosen)
    rates = [m * 1e-5 for m in (1.0, 3.0, 10.0, 30.0)]  # as the search computes them: 3.0000000000000004e-05
    gentler = outcome.gentler(rates)
    assert gentler.setting == {"tau": 3.0, "learning_rate": rates[1], "forget_weight": 1.0}
    assert gentler.model_dir is None and gentler.chosen_trial is None  # untried: the gate alone judges it
    assert "gentler strength" in gentler.reasons[-1] and outcome.setting == chosen  # the search's choice unchanged
    assert gentler.gentler(rates).setting["learning_rate"] == rates[0] and gentler.gentler(rates).gentler(rates) is None
    assert SearchOutcome("no_effect", None, [], {}, {}, [], {}, [], [], {}, {}).gentler(rates) is None
