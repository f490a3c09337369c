"""The `asu` command line: the demo, a round from files, the step benchmark, and clean errors."""

from __future__ import annotations

import json

import pytest

from cli.main import main


@pytest.fixture
def tiny_cache(tiny_model_dir, monkeypatch):
    """Point the CLI's model cache at the session's tiny model build."""
    monkeypatch.setenv("ASU_CACHE_DIR", str(tiny_model_dir.parent.parent))


def test_demo_round_prints_a_before_after_table(tiny_cache, tmp_path, capsys):
    args = ["demo-round", "--variant", "tiny", "--out", str(tmp_path), "--set", "epochs=2", "--set", "tau=3.0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ROUGE-L before" in out and "forget" in out and "retain" in out
    assert out.count("Q: ") == 2 and out.count("before: ") == 2 and out.count("after: ") == 2
    assert (tmp_path / "unlearned" / "model.safetensors").is_file()


def test_demo_round_json_is_one_line(tiny_cache, tmp_path, capsys):
    args = ["demo-round", "--variant", "tiny", "--out", str(tmp_path), "--json", "--set", "epochs=1"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["sets"]) == {"forget", "retain"}
    assert 0 <= summary["sets"]["forget"]["after"]["rouge_l_recall"] <= 1


def test_unlearn_from_files_and_bad_input_exits_2_without_traceback(tiny_model_dir, tiny_sets, tmp_path, capsys):
    files = []
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text("\n".join(json.dumps(it) for it in items))
    base = ["unlearn", "--model", str(tiny_model_dir), "--forget", str(files[0]), "--retain", str(files[1])]
    assert main([*base, "--out", str(tmp_path / "out"), "--set", "epochs=1"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["optimizer_steps"] > 0
    for override, message in [
        ("tau=0.5", "tau=0.5 is invalid"),
        ("method=asu", "unknown objective 'asu'"),
        ("forget_weight=-1", "forget_weight=-1"),
        ("temperature=2", "unknown ASUConfig field"),
    ]:
        assert main([*base, "--out", str(tmp_path / "bad"), "--set", override]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(tmp_path / "nope"),
                "--forget",
                str(files[0]),
                "--retain",
                str(files[1]),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_product_demo_json_last_line_has_rounds_and_champion(tiny_model_dir, tmp_path):
    """`asu demo --json` as a user runs it: its own process (and Prefect's ephemeral API), the tiny variant."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ASU_CACHE_DIR": str(tiny_model_dir.parent.parent), "ASU_WORK_DIR": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--variant", "tiny", "--root",
                          str(tmp_path), "--json"], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["request_id"] for r in summary["rounds"]] == ["tofu-author-2", "tofu-author-1"]  # urgent first
    assert summary["rounds"][0]["urgent"] and summary["champion"] is not None
    for r in summary["rounds"]:
        assert r["status"] in ("registered", "gate_failed") and r["table"]["request_id"] == r["request_id"]
        if r["table"]["model_version"] is None:  # the search found no safe setting: nothing trained, no samples
            assert r["table"]["failed_checks"] == ["temperature_search"] and r["samples"] == []
            continue
        assert r["table"]["report"].endswith("report.md")
        # two forget questions answered by the model the round started from and by the round's model
        assert len(r["samples"]) == 2 and all(set(x) == {"question", "before", "after"} for x in r["samples"])
    assert any(r["table"]["model_version"] for r in summary["rounds"])


def test_eval_table_json_store_and_bad_reference(tiny_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASU_WORK_DIR", str(tmp_path))
    args = ["eval", "--model", "tiny", "--suite", "tofu", "--forget-authors", "1", "--embedded-variant", "tiny",
            "--limit", "3", "--max-new-tokens", "8"]
    assert main([*args, "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "forget_Q_A_ROUGE" in out and "not computed" in out and "computed; saved" in out
    assert main([*args, "--json", "--reference", str(tmp_path / "r.json")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["reused"] is True and result["aggregates"]["forget_quality"] == pytest.approx(1.0)
    (tmp_path / "other.json").write_text('{"suite": "wmdp", "per_item": {}, "aggregates": {}}')
    assert main([*args, "--reference", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "other.json" in err and "cannot serve as TOFU reference" in err and "Traceback" not in err


def test_unlearn_accepts_passage_files_and_refuses_bad_ones(tiny_model_dir, tiny_sets, tmp_path, capsys):
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text(json.dumps({"text": " ".join(it["answer"] for it in tiny_sets[0][:5])}) + "\n")
    retain.write_text("\n".join(json.dumps(it) for it in tiny_sets[1][:6])  # QA retain items work beside passages
                      + "\n" + json.dumps({"text": " ".join(it["answer"] for it in tiny_sets[1][6:10])}) + "\n")
    base = ["unlearn", "--model", str(tiny_model_dir), "--forget", str(forget), "--retain", str(retain)]
    assert main([*base, "--out", str(tmp_path / "out"), "--set", "epochs=1", "--set", "max_length=64"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["optimizer_steps"] > 0
    assert main([*base, "--out", str(tmp_path / "auto"), "--auto"]) == 2  # one passage: too few pieces to validate
    assert "the forget validation split holds 1 item(s)" in capsys.readouterr().err
    forget.write_text('{"text": "fine"}\n{"text": ""}\n')
    assert main([*base, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "forget.jsonl:2: field 'text' must be a non-empty string" in err and "Traceback" not in err
    forget.write_bytes(b'{"text": "caf\xe9"}\n')
    assert main([*base, "--out", str(tmp_path / "bad")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
