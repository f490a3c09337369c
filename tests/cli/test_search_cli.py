"""`asu search`: JSON outcome, exit codes, determinism across runs, clean errors."""

from __future__ import annotations

import json

import pytest
from search_helpers import ROUND_ARGS, SEARCH_ARGS

from cli.main import main


def test_search_json_matches_the_library_run(tiny_search, tiny_model_dir, files, tmp_path, capsys):
    """Same data, configs and seed through the CLI: the same outcome, figure for figure (determinism)."""
    library, _ = tiny_search
    args = ["search", "--model", str(tiny_model_dir), "--forget", str(files[0]), "--retain", str(files[1]),
            "--out", str(tmp_path / "run"), "--json", *ROUND_ARGS, *SEARCH_ARGS]
    code = main(args)
    outcome = json.loads(capsys.readouterr().out)
    assert code == (0 if library.status == "chosen" else 3)
    assert outcome["status"] == library.status and outcome["tau"] == library.tau
    assert outcome["evidence"] == json.loads(json.dumps(library.evidence()))
    assert outcome["split"] == library.split and (tmp_path / "run" / "search.png").is_file()


#: Every teacher above tau 1 counts as incoherent (its retain NLL may not rise at all): the search stops after stage 1.
NO_CANDIDATE = ["--search", "min_content_nll_rise=0", "--search", "max_retain_nll_rise=0"]


def test_search_without_candidates_exits_3_with_reasons(tiny_model_dir, files, tmp_path, capsys):
    args = ["search", "--model", str(tiny_model_dir), "--forget", str(files[0]), "--retain", str(files[1]),
            "--out", str(tmp_path), *ROUND_ARGS, *SEARCH_ARGS, *NO_CANDIDATE]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert "no_safe_setting" in out and "teacher incoherent" in out and "content function" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--search", "tau_grid=[2.0,1.5]"], "strictly increasing"),
        (["--search", "tau_grid=[0.9,2.0]"], "are < 1"),
        (["--search", "utility_floor=1.5"], "can never be met"),
        (["--search", "min_validation_items=6"], "fewer than the minimum min_validation_items=6"),
        (["--search", "temperature=2"], "unknown SearchConfig field"),
        (["--search", "lr_multipliers=[3,1]"], "strictly increasing list"),
        (["--search", "forget_weights=[]"], "distinct finite lambdas"),
        (["--search", "min_forget_gain=1.5"], "min_forget_gain=1.5 must be in [0, 1)"),
        (["--set", "method=gd"], "has no smoothed teacher"),
    ],
)
def test_bad_input_exits_2_without_traceback(tiny_model_dir, files, tmp_path, capsys, extra, message):
    args = ["search", "--model", str(tiny_model_dir), "--forget", str(files[0]), "--retain", str(files[1]),
            "--out", str(tmp_path), *ROUND_ARGS, *SEARCH_ARGS, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "search.json").exists()


def test_subjects_in_the_forget_file_stratify_the_split(tiny_model_dir, tiny_sets, tmp_path, capsys):
    forget = tmp_path / "forget.jsonl"
    forget.write_text("\n".join(json.dumps({**it, "subject": "a" if i < 10 else "b"})
                                for i, it in enumerate(tiny_sets[0])))
    retain = tmp_path / "retain.jsonl"
    retain.write_text(json.dumps(tiny_sets[1]))  # a JSON array works too
    args = ["search", "--model", str(tiny_model_dir), "--forget", str(forget), "--retain", str(retain),
            "--out", str(tmp_path / "run"), "--json", *ROUND_ARGS, *SEARCH_ARGS,
            *NO_CANDIDATE]  # stops after stage 1: this test is about the split
    assert main(args) == 3
    index = json.loads(capsys.readouterr().out)["split"]["forget_validation_index"]
    assert sum(i < 10 for i in index) == 2 and sum(i >= 10 for i in index) == 2
