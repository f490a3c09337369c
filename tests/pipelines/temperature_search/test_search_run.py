"""A complete search on the tiny model: outcome, evidence, plot, JSON, and the no_effect / no_safe_setting outcomes."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from search_helpers import TINY_ROUND, TINY_SEARCH

from pipelines.temperature_search import run_search

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_outcome_has_every_figure(tiny_search, tiny_sets):
    outcome, work = tiny_search
    assert outcome.status in ("chosen", "no_effect", "no_safe_setting")
    assert (outcome.tau is None) == (outcome.status != "chosen") == (outcome.setting is None) and outcome.reasons
    evidence = outcome.evidence()
    assert [row["tau"] for row in evidence] == [1.0, 2.0, 4.0]
    for row in evidence:
        assert {"content_nll", "function_nll", "teacher_forget_token_entropy", "teacher_forget_repetition",
                "retain_nll", "in_bracket", "candidate"} <= set(row)
    assert outcome.candidates and set(outcome.candidates) <= {2.0, 4.0}
    # ladder, trial_items='validation', matched_steps (the defaults): as many optimizer steps as the final round,
    # over the fewer validation items; no trial model is kept
    n_val, n_all = outcome.split["forget_validation_items"], len(tiny_sets[0])
    steps = lambda n: -(-n // TINY_ROUND.batch_size)  # noqa: E731
    expected = max(TINY_ROUND.epochs, round(TINY_ROUND.epochs * steps(n_all) / steps(n_val)))
    assert outcome.trials and all(t.epochs == expected > TINY_ROUND.epochs for t in outcome.trials)
    assert outcome.model_dir is None
    rates = {t.learning_rate for t in outcome.trials}
    assert rates <= {m * TINY_ROUND.learning_rate for m in TINY_SEARCH.lr_multipliers} and len(rates) >= 2
    for trial in outcome.trials:  # default trial_fluency: the validation answers alone are judged
        assert trial.unseen_fluent_share is None
        assert 0 <= trial.forget_score <= 1 and trial.effective == (
            trial.forget_score >= outcome.base["forget_score"] + TINY_SEARCH.min_forget_gain - 1e-12)
    for row in evidence[1:]:
        if "trial_combined_score" in row:
            assert row["trial_feasible"] == (not row["trial_failures"])
    if outcome.tau is not None:
        chosen = outcome.chosen_trial
        assert chosen.feasible and chosen.effective and chosen.setting == outcome.setting
        assert all(t.combined_score <= chosen.combined_score for t in outcome.trials if t.feasible and t.effective)
        assert outcome.round_config(TINY_ROUND).learning_rate == chosen.learning_rate
    assert outcome.base["forget_score"] < 0.2 and outcome.base["retain_score"] > 0.8  # the plain model
    assert outcome.floors["retain_score"] == pytest.approx(TINY_SEARCH.utility_floor * outcome.base["retain_score"])
    assert set(outcome.seconds) == {"stage1", "stage2", "total"}


def test_png_and_json_are_written_without_forget_content(tiny_search, tiny_sets):
    outcome, work = tiny_search
    assert outcome.plot == work / "search.png"
    data = outcome.plot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    text = (work / "search.json").read_text()
    saved = json.loads(text)
    assert saved["status"] == outcome.status and saved["evidence"] == json.loads(json.dumps(outcome.evidence()))
    assert not any(item["question"] in text or item["answer"] in text for item in tiny_sets[0])
    kept = [p.parent for p in (work / "trials").glob("*/model.safetensors")]
    assert kept == ([outcome.model_dir] if outcome.model_dir else [])  # only the chosen trial's model is kept


def test_no_candidate_passes_stage_one(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, min_content_nll_rise=0.0, max_retain_nll_rise=0.0)  # every teacher incoherent
    outcome = run_search(tiny_model_dir, forget, retain, TINY_ROUND, config, tmp_path)
    assert outcome.status == "no_safe_setting" and outcome.tau is None and outcome.trials == []
    assert "no tau of the grid passed stage 1" in outcome.reasons[0]
    assert any("tau=4 (stage 1): teacher incoherent: retain NLL rises" in r for r in outcome.reasons)
    assert (tmp_path / "search.png").is_file() and json.loads((tmp_path / "search.json").read_text())["tau"] is None


def test_fact_position_rounds_try_a_teacher_whose_own_answers_fail(tiny_model_dir, tiny_sets, tmp_path):
    """forget_positions='facts' copies the teacher at fact tokens only: its free-running answers do not bracket it."""
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, tau_grid=(4.0,), min_content_nll_rise=0.0, max_retain_nll_rise=0.0,
                     lr_multipliers=(1.0,))
    outcome = run_search(tiny_model_dir, forget, retain, replace(TINY_ROUND, epochs=1, forget_positions="facts"),
                         config, tmp_path)
    assert outcome.candidates == [4.0] and [t.tau for t in outcome.trials] == [4.0]


def test_a_weak_teacher_is_still_tried_when_nothing_is_bracketed(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, min_content_nll_rise=50.0, lr_multipliers=(1.0,))  # every teacher "too weak"
    outcome = run_search(tiny_model_dir, forget, retain, TINY_ROUND, config, tmp_path)
    best = max(outcome.scan[1:], key=lambda r: r.content_nll)
    assert outcome.candidates == [best.tau] and [t.tau for t in outcome.trials] == [best.tau]
    assert any("trialed although its teacher alone moves facts too little" in r for r in outcome.reasons)


def test_no_candidate_meets_the_floors(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    # Keep all of the model's utility (impossible) while any change counts as an effect.
    config = replace(TINY_SEARCH, tau_grid=(4.0,), utility_floor=1.0, min_forget_gain=0.0, lr_multipliers=(1.0,))
    outcome = run_search(tiny_model_dir, forget, retain, replace(TINY_ROUND, epochs=1), config, tmp_path)
    assert outcome.status == "no_safe_setting" and outcome.tau is None
    assert len(outcome.trials) == 1 and not outcome.trials[0].feasible
    assert "broke a floor" in outcome.reasons[0]
    assert any(re.match(r"tau=4 lr=0.001 lambda=0.1 \(\d+ epochs\): retain score", r) for r in outcome.reasons)
    assert outcome.to_dict()["evidence"][1]["trial_failures"]
    with pytest.raises(ValueError, match="no_safe_setting"):
        outcome.round_config(TINY_ROUND)


def test_a_setting_that_forgets_too_little_is_no_effect(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, tau_grid=(4.0,), min_forget_gain=0.95, lr_multipliers=(1.0,))
    outcome = run_search(tiny_model_dir, forget, retain, replace(TINY_ROUND, epochs=1), config, tmp_path)
    assert outcome.status == "no_effect" and outcome.setting is None and not outcome.trials[0].effective
    assert "minimum gain" in outcome.reasons[0] and any("no effect, forget score" in r for r in outcome.reasons)


def test_a_setting_that_leaves_facts_stated_is_no_effect(tiny_model_dir, tiny_sets, tmp_path):
    # every fact of every validation answer gone is more than one epoch of the tiny round does
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, tau_grid=(4.0,), min_forget_gain=0.0, forget_efficacy_floor=1.0,
                     lr_multipliers=(1.0,))
    outcome = run_search(tiny_model_dir, forget, retain, replace(TINY_ROUND, epochs=1), config, tmp_path)
    (trial,) = outcome.trials
    assert trial.forget.efficacy < 1.0 and not trial.effective and outcome.status == "no_effect"
    assert "forget_efficacy_floor 1" in outcome.reasons[0]
    assert any(re.search(r"no effect, forget efficacy 0\.\d{3} < floor 1\.000", r) for r in outcome.reasons)


def test_trials_can_judge_fluency_on_forget_items_they_never_trained_on(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, tau_grid=(4.0,), lr_multipliers=(1.0,), trial_fluency="validation_and_unseen",
                     trial_items="validation", unseen_fluency_items=3)
    outcome = run_search(tiny_model_dir, forget, retain, replace(TINY_ROUND, epochs=1), config, tmp_path)
    (trial,) = outcome.trials
    assert 0 <= trial.unseen_fluent_share <= 1
    # the pooled share over 4 validation + 3 unseen answers is a multiple of 1/7
    assert round(trial.forget.fluent_share * 7, 6) == round(trial.forget.fluent_share * 7)
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["trials"][0]["unseen_fluent_share"] == trial.unseen_fluent_share


@pytest.mark.slow
def test_successive_halving_on_real_rounds(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, stage2="successive_halving", trial_items="validation", trial_epochs=1,
                     tau_grid=(2.0, 3.0, 4.0), stage2_candidates=3)
    outcome = run_search(tiny_model_dir, forget, retain, TINY_ROUND, config, tmp_path)
    rung0 = [t for t in outcome.trials if t.rung == 0]
    rung1 = [t for t in outcome.trials if t.rung == 1]
    assert [t.tau for t in rung0] == outcome.candidates and all(t.epochs == 1 for t in rung0)
    assert rung1 and all(t.epochs == 2 for t in rung1)
    assert {t.tau for t in rung1} <= {t.tau for t in rung0 if t.feasible} | set(outcome.candidates)


def test_matched_trials_make_as_many_optimizer_steps_as_the_final_round():
    """``trial_items='validation'``, ``trial_length='matched_steps'``: more epochs over the fewer validation items."""
    from pipelines.temperature_search.search import matched_epochs

    config = replace(TINY_ROUND, epochs=2, batch_size=4, grad_accum_steps=1)
    assert matched_epochs(config, final_items=20, trial_items=5) == 5  # 2 x 5 steps = 5 x 2 steps
    assert matched_epochs(config, final_items=20, trial_items=20) == 2
    assert matched_epochs(replace(config, grad_accum_steps=2), final_items=20, trial_items=4) == 6  # 2 x 3 / 1
