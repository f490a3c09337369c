"""`python -m bench.attacks` on the tiny model that memorised its authors: a recorded method's chosen model is rebuilt
and attacked beside the unchanged model, the report renders, a rerun keeps the rows it does not redo, and a method
the recorded benchmark lacks is refused with the command that records it. The bench itself runs on SmolLM2."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from asu.robustness import RobustnessConfig
from bench.attacks import format_markdown, run_attacks_bench
from bench.realmodel import Setting


@pytest.fixture
def setting(tiny_model_dir, tiny_sets):
    forget, retain = tiny_sets
    return Setting("scenario-free:tiny", tiny_model_dir, forget[:6], retain[:6], select_forget=forget[:3],
                   select_retain=retain[6:9], test=lambda m, t, j: {}, efficacy="rouge")


def test_a_recorded_method_is_rebuilt_and_attacked_beside_the_unchanged_model(setting, tmp_path):
    recorded = {"settings": {setting.name: {"rows": {"ga": {
        "chosen": {"method": "ga", "learning_rate": 1e-3, "epochs": 3}, "selection": {"combined_score": 0.5}}}}}}
    out = tmp_path / "results"
    small = RobustnessConfig(samples=2)  # best of 2: the tiny model's samples vary little
    result = run_attacks_bench([setting], ["base", "ga"], recorded, tmp_path / "work", out, small)

    rows = result["settings"][setting.name]["rows"]
    base, ga = rows["base"]["robustness"], rows["ga"]["robustness"]
    assert set(base["attacks"]) == {"relearn", "quantize_8bit", "quantize_4bit", "prefix", "best_of_n"}
    # the memorised model states its answers; gradient ascent at lr 1e-3 erases them
    assert base["baseline_fact_recall"] > 0.8 and ga["baseline_fact_recall"] < base["baseline_fact_recall"] - 0.3
    assert rows["ga"]["recorded_selection"] == {"combined_score": 0.5}
    assert set(rows["ga"]["rebuilt_selection"]) == {"forget_score", "relative_utility", "fluent_share",
                                                    "combined_score"}
    assert not (tmp_path / "work" / setting.name.replace(":", "-") / "ga").exists()  # rebuilt model removed
    saved = json.loads((out / "attacks.json").read_text())
    assert set(saved["settings"][setting.name]["rows"]) == {"base", "ga"}
    md = (out / "attacks.md").read_text()
    assert "| ga | learning_rate=0.001, epochs=3 | 0.500 / " in md and "| base | - | - |" in md

    # a rerun of one method keeps the other rows measured before
    again = run_attacks_bench([setting], ["base"], recorded, tmp_path / "work", out, small)
    assert set(again["settings"][setting.name]["rows"]) == {"base", "ga"}


def test_a_method_missing_from_the_recorded_benchmark_is_refused_with_the_command(setting, tmp_path):
    with pytest.raises(SystemExit, match="python -m bench.realmodel --setting scenario-free --methods npo"):
        run_attacks_bench([setting], ["base", "npo"], {"settings": {}}, tmp_path / "work")


def test_report_renders_recovery_and_the_retain_model_reference():
    attack = {"fact_recall": 0.5, "baseline_fact_recall": 0.2, "recovery": 0.3, "reference_before": 0.1,
              "reference_after": 0.15}
    rows = {"base": {"chosen": {}, "status": None, "recorded_selection": None, "rebuilt_selection": None,
                     "seconds": 40.0, "robustness": {"baseline_fact_recall": 0.9, "attacks": {"relearn": attack}}}}
    md = format_markdown({"settings": {"tofu:x": {"rows": rows}}})
    assert "| base | - | - | 0.90 | 0.50 (+0.30) | 40 |" in md
    assert "fact recall 0.10 -> 0.15" in md


def test_auto_source_search_runs_the_product_search_instead_of_a_recorded_row(setting, tiny_sets, tmp_path):
    # No recorded asu_auto row is needed: the product's search runs again (from the ``pretrained`` recipe, whose
    # learning rate barely moves the tiny model, so nothing is chosen and the unchanged model is attacked).
    tight = {"tau_grid": [2.0], "lr_multipliers": [1.0], "retain_validation_size": 4, "min_validation_items": 3,
             "min_content_nll_rise": 0.02}
    searched = replace(setting, search_validation=tiny_sets[0][6:10], search_overrides=tight)
    result = run_attacks_bench([searched], ["base", "asu_auto"], {"settings": {}}, tmp_path / "work",
                               robustness=RobustnessConfig(samples=2), auto_source="search")
    rows = result["settings"][setting.name]["rows"]
    auto = rows["asu_auto"]
    assert auto["source"] == "search" and auto["recorded_selection"] is None and auto["search_seconds"] > 0
    assert auto["status"] in ("chosen", "no_effect", "no_safe_setting")
    if auto["status"] != "chosen":  # nothing chosen: the model attacked is the unchanged one
        assert auto["robustness"]["baseline_fact_recall"] == rows["base"]["robustness"]["baseline_fact_recall"]
    assert not list((tmp_path / "work").rglob("config.json"))  # searched model and search work dir removed
