"""Slow: `asu unlearn --auto` on SmolLM2 and the Paris scenario (prepared on first use; minutes on CPU)."""

from __future__ import annotations

import json

import pytest

from cli.main import main


@pytest.mark.slow
def test_auto_on_smollm2_forgets_fluently_or_says_why(tmp_path, capsys):
    from asu.scenarios import load_scenario

    sc = load_scenario("paris")
    files = {}
    for name, items in (("forget", sc.qa_items("forget")), ("validation", sc.qa_items("validation")),
                        ("retain", [*sc.qa_items("retain"), *sc.qa_items("retain_validation")])):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(it) for it in items))
    out = tmp_path / "model"
    # The smallest search: the tau and strength the full search chose on this scenario (README), one trial.
    code = main(["unlearn", "--model", "smollm2-135m", "--forget", str(files["forget"]), "--retain",
                 str(files["retain"]), "--forget-validation", str(files["validation"]), "--out", str(out), "--auto",
                 "--search", "tau_grid=[1.5]", "--search", "lr_multipliers=[10]", "--search",
                 "retain_validation_size=10", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == (0 if result["status"] == "chosen" else 3)
    assert result["status"] == "chosen", result["reasons"]
    before, after = result["before"], result["after"]
    assert after["forget_fact_recall"] < before["forget_fact_recall"] - 0.2  # facts go
    assert after["fluent_share"] >= 0.9 and after["refusal_share"] <= 0.1  # the answers stay language
    assert after["retain_score"] >= 0.9 * before["retain_score"]  # utility stays
    assert (out / "model.safetensors").is_file()
