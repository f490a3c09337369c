"""`asu unlearn --auto`: search, then the final round at the chosen settings; exit 3 and nothing saved otherwise."""

from __future__ import annotations

import json

from search_helpers import ROUND_ARGS, SEARCH_ARGS, TINY_SEARCH

from cli.main import main


def args_for(model, files, out, *extra):
    return ["unlearn", "--model", str(model), "--forget", str(files[0]), "--retain", str(files[1]), "--out", str(out),
            "--auto", *ROUND_ARGS, *SEARCH_ARGS, *extra]


def test_auto_saves_the_model_of_the_chosen_setting(tiny_model_dir, files, tiny_sets, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(args_for(tiny_model_dir, files, out, "--json"))
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result["status"] == "chosen", result["reasons"]  # the tiny model forgets safely at these settings
    assert code == 0 and (out / "config.json").is_file()
    assert set(result["setting"]) == {"tau", "learning_rate", "forget_weight"}
    assert result["round_config"]["tau"] == result["setting"]["tau"]
    assert result["round_config"]["learning_rate"] == result["setting"]["learning_rate"]
    assert result["after"]["forget_score"] > result["before"]["forget_score"]
    assert result["items"]["forget"] == len(tiny_sets[0])  # the final round trains on every forget item
    assert result["items"]["retain_held_out"] == TINY_SEARCH.retain_validation_size
    assert json.loads((out / "asu_auto.json").read_text())["setting"] == result["setting"]
    assert (tmp_path / "model.search" / "search.json").is_file()
    text = (out / "asu_auto.json").read_text() + (tmp_path / "model.search" / "search.json").read_text()
    assert not any(it["question"] in text or it["answer"] in text for it in tiny_sets[0])  # hashes, never content


def test_no_effect_exits_3_and_saves_nothing(tiny_model_dir, files, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(args_for(tiny_model_dir, files, out, "--search", "min_forget_gain=0.95", "--search",
                         "lr_multipliers=[1.0]", "--search", "tau_grid=[4.0]", "--json"))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 3 and result["status"] == "no_effect" and result["model_dir"] is None and result["setting"] is None
    assert not out.exists() and any("minimum gain" in r for r in result["reasons"])


def test_auto_refuses_an_existing_model_folder(tiny_model_dir, files, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(args_for(tiny_model_dir, files, out)) == 2
    assert "already holds a model" in capsys.readouterr().err


def test_trials_on_the_round_items_hand_over_the_chosen_trial_as_the_final_model(tiny_model_dir, files, tiny_sets,
                                                                                  tmp_path, capsys):
    """``trial_items='round'``: every trial trains on the final round's items, so the chosen trial's model is saved
    as the result (not trained again), other trials' folders are gone, and it is the model that the final round at
    the chosen settings would have trained (same weights)."""
    import torch
    from safetensors.torch import load_file

    from asu.config import ASUConfig
    from pipelines.round.unlearn import final_round

    out = tmp_path / "model"
    code = main(args_for(tiny_model_dir, files, out, "--search", 'trial_items="round"', "--json"))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["status"] == "chosen" and result["round_from_search"] is True, result["reasons"]
    assert (out / "round.json").is_file() and result["items"]["forget"] == len(tiny_sets[0])
    assert result["after"]["forget_score"] > result["before"]["forget_score"]
    assert not any((tmp_path / "model.search" / "trials").iterdir())  # the losers' folders are dropped
    trials = json.loads((tmp_path / "model.search" / "search.json").read_text())["trials"]
    assert len(trials) >= 2  # a real choice was made between trained models
    again = final_round(tiny_model_dir, *tiny_sets, ASUConfig.from_dict(result["round_config"]), TINY_SEARCH,
                        tmp_path / "again")
    kept, retrained = load_file(out / "model.safetensors"), load_file(again.model_dir / "model.safetensors")
    assert kept.keys() == retrained.keys() and all(torch.equal(kept[k], retrained[k]) for k in kept)
