"""`python -m bench.realmodel`: the fair-fight rules (equal budget, one selection score) and the report, on hand-made
figures; the bench itself runs on the real model (`python -m bench.realmodel`)."""

from __future__ import annotations

import pytest

from bench.realmodel import GRIDS, METHODS, format_markdown, plot, selection_score


def test_every_method_gets_the_same_budget_over_its_own_grid():
    assert set(GRIDS) == set(METHODS) == {"asu_gd", "asu_kl", "ga", "gd", "npo", "simnpo", "idk", "rmu"}
    assert {len(grid) for grid in GRIDS.values()} == {2}
    for method, grid in GRIDS.items():
        assert all(point["method"] == method for point in grid)
        assert len({tuple(sorted(p.items())) for p in grid}) == 2  # distinct settings


def test_selection_score_is_the_harmonic_mean_of_efficacy_relative_utility_and_fluency():
    base = {"forget_correct": 1.0, "retain_correct": 0.8, "fluent_share": 1.0}
    after = {"forget_correct": 0.25, "retain_correct": 0.6, "fluent_share": 0.9}
    s = selection_score(after, base)
    assert s["forget_score"] == pytest.approx(0.75) and s["relative_utility"] == pytest.approx(0.75)
    assert s["combined_score"] == pytest.approx(3 / (1 / 0.75 + 1 / 0.75 + 1 / 0.9))
    # utility above the base model's is capped at 1; forgetting by breaking the language scores 0
    assert selection_score({**after, "retain_correct": 1.0}, base)["relative_utility"] == 1.0
    assert selection_score({**after, "fluent_share": 0.0}, base)["combined_score"] == 0.0


def test_report_and_plot_render(tmp_path):
    test = {"forget_rouge": 0.2, "forget_probe_hits": 0.1, "retain_probe_hits": 0.9, "fluent_share": 0.95,
            "refusal_share": 0.0, "extraction_strength": 0.1, "samples": [{"question": "q?", "answer": "a."}]}
    rows = {"base": {"test": {**test, "forget_probe_hits": 1.0}, "selection": {"combined_score": 0.0}},
            "asu_gd": {"test": test, "selection": {"combined_score": 0.8}, "chosen": {"method": "asu_gd", "tau": 1.5},
                       "round_seconds": 60.0, "search_seconds": 300.0}}
    result = {"grids": GRIDS, "settings": {"scenario:x": {"rows": rows, "notes": ["n"]}}}
    md = format_markdown(result)
    assert "| asu_gd | tau=1.5 | 0.800 | 0.200 | 0.100 | 0.900 | - | - | 0.950 | 0.000 | 0.100 | 60 | 300 |" in md
    assert plot(result, tmp_path / "p.png").stat().st_size > 0


def test_asu_choices_table_renders_every_row():
    from bench.asu_choices import format_markdown

    figures = {"forget_probe_hits": 0.091, "retain_probe_hits": 0.87, "fluent_share": 0.894, "forget_rouge": 0.7}
    rows = [{"settings": "base", "seconds": 0, "fluency_reference": "question", **figures},
            {"settings": {"forget_positions": "facts", "layer_span": "middle_third", "tau": 4.0,
                          "learning_rate": 1e-4, "retain_weight": 3.0, "epochs": 10}, "seconds": None,
             "fluency_reference": "calibration", **figures}]
    table = format_markdown(rows)
    assert "| (base model) | - | - | - | - | - | 0.091 | 0.870 | 0.894 | 0.700 | 0 |" in table
    assert "| facts | middle_third | 4.0 | 0.0001 | 3 | epochs=10 | 0.091 | 0.870 | 0.894* | 0.700 | - |" in table


def test_results_of_an_earlier_version_are_upgraded_before_merging():
    from bench.realmodel import format_markdown, upgrade

    old = {"methods": ["npo"], "grids": {"npo": [{}, {}]}, "settings": {"scenario:paris": {"notes": [], "rows": {
        "npo": {"chosen": {}, "test": {"forget_probe_hits": 0.2},
                "selection": {"forget_efficacy": 0.8, "relative_utility": 1.0, "fluent_share": 1.0, "score": 0.9}}}}}}
    row = upgrade(old)["settings"]["scenario:paris"]["rows"]["npo"]
    assert row["selection"] == {"forget_score": 0.8, "relative_utility": 1.0, "fluent_share": 1.0,
                                "combined_score": 0.9}
    assert "| npo | - | 0.900 |" in format_markdown(old)
