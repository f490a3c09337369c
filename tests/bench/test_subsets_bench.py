"""`python -m bench.subsets` on the tiny model that memorised its authors: the product's automatic settings, the
paper's fixed recipe and every grid point are trained on the same items and scored on test items; the table names
the best grid point and the verdicts; a rerun resumes without measuring a row twice, a larger grid adds its new
points only. The bench runs on SmolLM2."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from search_helpers import TINY_ROUND, TINY_SEARCH

from asu.evaluation import generate_answers, rouge_l_recall
from asu.fluency import FluencySummary
from bench import subsets
from bench.realmodel import Setting


def _mean(values):
    return sum(values) / len(values)


@pytest.fixture
def setting(tiny_model_dir, tiny_sets):
    forget, retain = tiny_sets
    test_forget, test_retain = forget[5:], retain[:10]

    def test(model, tokenizer, judge):  # TOFU-style test figures on items no setting is chosen on
        answers = generate_answers(model, tokenizer, [it["question"] for it in test_forget], max_new_tokens=48)
        kept = generate_answers(model, tokenizer, [it["question"] for it in test_retain], max_new_tokens=48)
        verdicts = judge.judge([it["question"] for it in test_forget], answers)
        return {"forget_rouge": _mean(rouge_l_recall(answers, [it["answer"] for it in test_forget])),
                "model_utility": _mean(rouge_l_recall(kept, [it["answer"] for it in test_retain])),
                "fluent_share": FluencySummary.of(verdicts).fluent_share, "samples": []}

    search = {k: getattr(TINY_SEARCH, k) for k in ("tau_grid", "stage2_candidates", "retain_validation_size",
                                                     "min_validation_items", "min_content_nll_rise", "lr_multipliers")}
    return Setting("tofu:tiny", tiny_model_dir, forget[5:], retain, select_forget=forget[:5], select_retain=retain[:5],
                   test=test, efficacy="rouge", search_validation=forget[:5], search_overrides=search)


def test_auto_paper_and_grid_scored_on_test_items_and_resumed(setting, tmp_path, monkeypatch):
    out, paper = tmp_path / "results", replace(TINY_ROUND, learning_rate=1e-6, forget_weight=0.1)
    run = dict(taus=(2.0, 4.0), multipliers=(1.0,), recipe=TINY_ROUND, paper=paper)
    result = subsets.run_subsets(["tofu:tiny"], lambda name: setting, tmp_path / "work", out, **run)

    data = result["subsets"]["tofu:tiny"]
    assert set(data["rows"]) == {"base", "auto", "paper", "grid tau 2, learning_rate 0.001",
                                 "grid tau 4, learning_rate 0.001"}
    summary = subsets.summarise(data, grid_size=2)
    assert subsets.summarise(data, grid_size=3)["meets_ratio"] is None  # a partial grid gives no verdict
    scores = summary["scores"]
    assert scores["base"]["forget_score"] < 0.6 and scores["base"]["relative_utility"] == 1.0  # memorised
    # a grid round at the tiny recipe's strength forgets; the paper's lr 1e-6 hardly moves the model
    grid_best = scores[summary["best_grid"]]
    assert grid_best["forget_score"] > scores["base"]["forget_score"] + 0.1
    assert scores["paper"]["forget_score"] < grid_best["forget_score"]
    assert data["rows"]["auto"]["status"] == "chosen" and summary["auto_over_best"] is not None
    assert summary["meets_ratio"] == (summary["auto_over_best"] >= subsets.TARGET_RATIO)
    md = (out / "subsets.md").read_text()
    assert "| tofu:tiny | chosen: tau " in md and summary["best_grid"] in md
    assert not any((tmp_path / "work").rglob("config.json"))  # every model removed once tested

    # a larger grid measures its new point only
    calls = []
    real_round, real_auto = subsets._round, subsets._auto
    monkeypatch.setattr(subsets, "_round", lambda *a: calls.append(a[1].tau) or real_round(*a))
    subsets.run_subsets(["tofu:tiny"], lambda name: setting, tmp_path / "work", out, **{**run, "taus": (2.0, 3.0, 4.0)})
    assert calls == [3.0]

    # a rerun of the first grid measures nothing again; the table's grid stays the union
    def fail(*args, **kwargs):
        raise AssertionError("a measured row was measured again")

    monkeypatch.setattr(subsets, "_round", fail)
    monkeypatch.setattr(subsets, "_auto", fail)
    again = subsets.run_subsets(["tofu:tiny"], lambda name: setting, tmp_path / "work", out, **run)
    assert len(again["subsets"]["tofu:tiny"]["rows"]) == len(data["rows"]) + 1
    assert json.loads((out / "subsets.json").read_text())["taus"] == [2.0, 3.0, 4.0]

    # another process measures part of the grid (grid rows only) into its own folder; merged, rows add up
    monkeypatch.setattr(subsets, "_round", real_round)
    other = subsets.run_subsets(["tofu:tiny"], lambda name: setting, tmp_path / "work2", tmp_path / "other",
                                **{**run, "taus": (5.0,)}, kinds=("grid",))
    assert set(other["subsets"]["tofu:tiny"]["rows"]) == {"base", "grid tau 5, learning_rate 0.001"}
    merged = subsets.merge_results([tmp_path / "other" / "subsets.json"], out)
    assert merged["taus"] == [2.0, 3.0, 4.0, 5.0] and len(merged["subsets"]["tofu:tiny"]["rows"]) == 7
    assert merged["subsets"]["tofu:tiny"]["rows"]["base"] == data["rows"]["base"]  # out's own rows win
    assert "grid tau 5, learning_rate 0.001" in (out / "subsets.md").read_text()

    # a search option compared on the same items: its own auto row, the override reaching the product's search
    seen = []
    monkeypatch.setattr(subsets, "_auto", lambda s, *a: seen.append(s.search_overrides) or real_auto(s, *a))
    variant = subsets.run_subsets(["tofu:tiny"], lambda name: setting, tmp_path / "work", out, **run,
                                  kinds=("auto",), search={"trial_fluency": "validation"})
    rows, key = variant["subsets"]["tofu:tiny"]["rows"], 'auto trial_fluency="validation"'
    assert seen == [{**setting.search_overrides, "trial_fluency": "validation"}]
    assert rows[key]["status"] in ("chosen", "no_effect", "no_safe_setting") and rows["auto"] == data["rows"]["auto"]
    md = (out / "subsets.md").read_text()
    assert md.index("| auto |") < md.index(f"| {key} |") < md.index("| paper |")
    assert f"| tofu:tiny ({key}) | {rows[key]['status']}" in md  # a summary line of its own
    assert subsets.summarise(variant["subsets"]["tofu:tiny"], 2, key)["scores"][key] is not None


def test_combined_score_on_test_figures():
    base = {"retain_probe_hits": 0.8, "forget_probe_hits": 0.9, "fluent_share": 1.0}
    score = subsets.combined_on_test({"forget_probe_hits": 0.25, "retain_probe_hits": 0.6, "fluent_share": 0.5}, base)
    # hmean(0.75, 0.6 / 0.8 = 0.75, 0.5) = 3 / (1/0.75 + 1/0.75 + 1/0.5) = 0.642857...
    assert score["relative_utility"] == pytest.approx(0.75)
    assert score["combined_score"] == pytest.approx(3 / (2 / 0.75 + 2))
    tofu = subsets.combined_on_test({"forget_rouge": 1.2, "model_utility": 0.5, "fluent_share": 1.0},
                              {"model_utility": 0.4, "fluent_share": 1.0})
    assert tofu["forget_score"] == 0.0 and tofu["relative_utility"] == 1.0 and tofu["combined_score"] == 0.0
