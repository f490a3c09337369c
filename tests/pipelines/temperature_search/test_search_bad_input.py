"""Bad input fails with a clear error before any compute: grid, floors, validation sizes, round settings."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from search_helpers import TINY_ROUND, TINY_SEARCH

from pipelines.temperature_search import SearchConfig, run_search, split_validation


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tau_grid": (0.5, 2.0)}, r"tau_grid values \[0.5\] are < 1"),
        ({"tau_grid": (2.0, 1.5)}, "strictly increasing without duplicates; use [1.5, 2.0]"),
        ({"tau_grid": (2.0, 2.0, 3.0)}, "strictly increasing"),
        ({"tau_grid": ()}, "tau_grid is empty"),
        ({"tau_grid": (2.0, float("inf"))}, "not finite"),
        ({"utility_floor": 1.2}, "utility_floor=1.2 can never be met"),
        ({"retain_rouge_floor": -0.1}, "retain_rouge_floor=-0.1 can never be met"),
        ({"fluent_share_floor": -0.1}, "fluent_share_floor=-0.1 can never be met"),
        ({"min_validation_items": 1}, "min_validation_items=1 must be >= 2"),
        ({"retain_validation_size": 3}, "below min_validation_items=5"),
        ({"forget_validation_fraction": 1.0}, r"must be in \(0, 1\)"),
        ({"stage2": "grid"}, "stage2='grid' is unknown"),
        ({"eta": 1}, "eta=1 must be >= 2"),
        ({"trial_fluency": "unseen"}, "trial_fluency='unseen': use 'validation' or 'validation_and_unseen'"),
        ({"unseen_fluency_items": 0}, "unseen_fluency_items=0 must be >= 1"),
        ({"unsafe_tau": "skip"}, "unsafe_tau='skip': use 'gentler_levels' or 'none'"),
        ({"trial_items": "all"}, "trial_items='all': use 'validation' or 'round'"),
        ({"trial_items": "round", "stage2": "successive_halving"}, "trial_items='round' needs stage2='ladder'"),
        ({"trial_items": "round", "trial_fluency": "validation_and_unseen"}, "use one or the other"),
    ],
)
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ValueError) as err:
        SearchConfig(**values)
    assert message in str(err.value) or re.search(message, str(err.value)), str(err.value)


def test_unknown_field():
    with pytest.raises(ValueError, match="unknown SearchConfig field"):
        SearchConfig.from_dict({"taus": [2.0]})


def test_validation_split_too_small_names_the_minimum(tiny_sets):
    forget, retain = tiny_sets
    with pytest.raises(ValueError, match="holds 2 item.*minimum min_validation_items=5"):
        split_validation(forget[:8], retain, SearchConfig())
    with pytest.raises(ValueError, match="at least 41 retain items"):
        split_validation(forget, retain[:40], SearchConfig(retain_validation_size=40))
    with pytest.raises(ValueError, match="overlap"):
        split_validation(forget, retain, TINY_SEARCH, forget_validation=forget[:5])


def test_split_is_seeded_stratified_and_disjoint(tiny_sets):
    forget, retain = tiny_sets
    subjects = ["a"] * 10 + ["b"] * 10
    split = split_validation(forget, retain, TINY_SEARCH, subjects=subjects)
    assert split.forget_val_index == split_validation(forget, retain, TINY_SEARCH, subjects=subjects).forget_val_index
    assert sum(i < 10 for i in split.forget_val_index) == 2 and sum(i >= 10 for i in split.forget_val_index) == 2
    assert len(split.forget_val) + len(split.forget_test) == len(forget)
    assert not {it["question"] for it in split.retain_val} & {it["question"] for it in split.retain_rest}
    other = split_validation(forget, retain, replace(TINY_SEARCH, seed=7), subjects=subjects)
    assert other.retain_val_index != split.retain_val_index
    summary = split.summary()
    assert len(summary["forget_validation_sha256"]) == 4
    # what trials judge fluency on besides the validation items: seeded, never a validation item, in request order
    unseen = split.unseen_forget(5, seed=3)
    assert unseen == split.unseen_forget(5, seed=3) != split.unseen_forget(5, seed=4)
    assert len(unseen) == 5 and not {it["question"] for it in unseen} & {it["question"] for it in split.forget_val}
    order = [split.forget_test.index(it) for it in unseen]
    assert order == sorted(order)
    assert split.unseen_forget(100, seed=3) == split.forget_test
    assert all(len(h) == 64 for h in summary["retain_validation_sha256"])


def test_errors_come_before_the_model_is_loaded(tiny_sets, tmp_path):
    forget, retain = tiny_sets
    missing = tmp_path / "no-model"  # never opened: each check below fails first
    with pytest.raises(ValueError, match="min_validation_items=5"):
        run_search(missing, forget[:8], retain, TINY_ROUND, SearchConfig(), tmp_path)
    with pytest.raises(ValueError, match="has no smoothed teacher"):
        run_search(missing, forget, retain, replace(TINY_ROUND, method="gd"), TINY_SEARCH, tmp_path)
    with pytest.raises(ValueError, match="trial_epochs=5 exceeds the round's epochs=2"):
        run_search(missing, forget, retain, TINY_ROUND, replace(TINY_SEARCH, stage2="successive_halving",
                                                                   trial_items="validation", trial_epochs=5), tmp_path)


def test_floor_above_the_current_model_fails_before_the_scan(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    config = replace(TINY_SEARCH, floor_mode="absolute", utility_floor=1.0, entropy_floor=0.5)
    with pytest.raises(ValueError, match=r"utility_floor=1.0 \(absolute\) is above the current model's own retain"):
        run_search(tiny_model_dir, forget, retain, TINY_ROUND, config, tmp_path)
    assert not (tmp_path / "trials").exists() and not (tmp_path / "search.json").exists()


