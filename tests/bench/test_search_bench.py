"""`bench.search`: the grid of the search's own space and the quality verdict, on hand-made rows."""

from __future__ import annotations

import json

import pytest
from search_helpers import ROUND_ARGS, SEARCH_ARGS

from asu.config import ASUConfig
from bench.search import compare, grid_settings, main, parse_subset
from pipelines.temperature_search import SearchConfig


def row(tau, score):
    return {"setting": {"tau": tau, "learning_rate": 1e-4, "forget_weight": 1.0}, "combined_score": score}


def test_grid_is_every_tau_times_every_learning_rate():
    config = ASUConfig(learning_rate=2e-5, forget_weight=1.0)
    grid = grid_settings(config, SearchConfig(tau_grid=(1.5, 2.0), lr_multipliers=(1.0, 10.0)), None)
    assert grid == [{"tau": t, "learning_rate": lr, "forget_weight": 1.0} for t in (1.5, 2.0) for lr in (2e-5, 2e-4)]
    weights = SearchConfig(tau_grid=(1.5,), lr_multipliers=(1.0,), forget_weights=(1.0, 0.3))
    assert [g["forget_weight"] for g in grid_settings(config, weights, None)] == [1.0, 0.3]
    assert [g["tau"] for g in grid_settings(config, SearchConfig(lr_multipliers=(1.0,)), [3.0])] == [3.0]


def test_quality_needs_90_percent_of_the_best_and_at_least_the_paper():
    grid = [row(1.5, 0.60), row(2.0, 0.50)]
    verdict = compare(row(1.5, 0.55), grid, row(2.3, 0.3))
    assert verdict["within_90pct"] and verdict["at_least_paper"]
    assert verdict["ratio_to_best"] == pytest.approx(0.55 / 0.6)
    assert verdict["best_setting"]["tau"] == 1.5
    assert not compare(row(2.0, 0.53), grid, row(2.3, 0.3))["within_90pct"]  # 0.53 < 0.9 x 0.60
    assert not compare(row(2.0, 0.55), grid, row(2.3, 0.56))["at_least_paper"]


def test_bad_subset_names_are_clear():
    with pytest.raises(ValueError, match="unknown kind 'muse'"):
        parse_subset("muse:1", "default")
    with pytest.raises(ValueError, match="use authors"):
        parse_subset("tofu:one", "default")
    with pytest.raises(ValueError, match="not memorised"):
        parse_subset("99", "tiny")


def test_score_is_relative_to_the_current_model():
    from bench.search import with_score

    base = {"forget_score": 0.0, "retain_score": 0.8, "fluent_share": 1.0}
    assert with_score(base, 0.8)["combined_score"] == 0.0 and with_score(base, 0.8)["relative_utility"] == 1.0
    after = with_score({"forget_score": 0.6, "retain_score": 0.4, "fluent_share": 1.0}, 0.8)
    assert after["relative_utility"] == 0.5 and after["combined_score"] == pytest.approx(3 / (1 / 0.6 + 2 + 1))


@pytest.mark.slow
def test_bench_search_cost_only_on_tiny(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASU_CACHE_DIR", str(tiny_model_dir.parent.parent))
    search = [a for a in SEARCH_ARGS]
    args = ["--model", "tiny", "--subsets", "0", "--cost-only", "--json",
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            *[a for a in ROUND_ARGS if a not in ("--recipe", "embedded")], *search]
    main(args)
    result = json.loads(capsys.readouterr().out)
    row = result["rows"][0]
    assert row["subset"] == "0" and row["search_seconds"] > 0
    if row["setting"] is not None:
        assert row["cost_ratio"] > 0 and row["chosen"]["setting"] == row["setting"] and "grid" not in row
    assert (tmp_path / "out" / "search.json").is_file()
    md = (tmp_path / "out" / "search.md").read_text()
    assert "| subset |" in md and "retain ROUGE-L 0.9 (relative)" in md and "forget efficacy 0.0;" in md
