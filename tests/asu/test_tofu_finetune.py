"""asu.models.tofu_finetune: TOFU target / retain fine-tunes, their spec, digest, cache, memorisation floor and CLI.

Fast: the base is the embedded ``tiny`` model (``tiny_model_dir``), trained on 1-2 authors for 1-2 epochs with short
greedy answers. Such a run does not memorise new authors, so these specs relax the memorisation floor with
``min_forget_rouge=0.0`` (the default, 0.9, is what the SmolLM2 defaults must reach); the refusal test keeps 0.9.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from asu.models import named as named_module
from asu.models import tofu_finetune as tf
from asu.models.tofu_finetune import (
    FINETUNE_MARKER,
    TofuFinetuneSpec,
    TofuMemorisationError,
    ensure_tofu_model,
    read_finetune_record,
)


def _spec(tiny_model_dir: Path, **changes) -> TofuFinetuneSpec:
    """Authors 0 and 1 (forget 1), 1 epoch, relaxed floor, short answers: a build takes a few seconds."""
    fields = dict(base=str(tiny_model_dir), authors=(0, 1), forget_authors=(1,), role="target", learning_rate=1e-3,
                  epochs=1, batch_size=8, warmup_epochs=0.5, min_forget_rouge=0.0, eval_sample=5, max_new_tokens=24)
    return TofuFinetuneSpec(**{**fields, **changes})


def _forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("trained again although the cached build is complete")

    monkeypatch.setattr(tf, "train_tofu", fail)


# --- spec -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"authors": (0, 1, 0)}, "authors lists author 0 twice"),
    ({"forget_authors": (1, 1)}, "forget_authors lists author 1 twice"),
    ({"authors": (0, 1, 200)}, "authors: author 200 is out of range; TOFU authors are 0..199"),
    ({"authors": (-1, 1)}, "authors: author -1 is out of range"),
    ({"forget_authors": (7,)}, "forget_authors [7] is not among authors [0, 1]"),
    ({"authors": ()}, "authors is empty"),
    ({"forget_authors": []}, "forget_authors is empty"),
    ({"authors": "0,1"}, "authors must be a list of TOFU author indices"),
    ({"authors": (0, 1.5)}, "authors: 1.5 is not an author index"),
    ({"role": "retain", "authors": (1,), "forget_authors": (1,)}, "role 'retain' trains authors minus forget_authors"),
    ({"role": "retain", "authors": (2, 1), "forget_authors": (1, 2)}, "which leaves no author to train"),
    ({"role": "student"}, "role must be 'target' or 'retain'"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
    ({"min_forget_rouge": 1.5}, "min_forget_rouge must be between 0 and 1"),
    ({"warmup_epochs": 3.0}, "warmup_epochs must be between 0 and epochs"),
    ({"base": ""}, "base must be a model name or folder"),
])
def test_spec_validation_names_the_field_and_the_fix(tiny_model_dir: Path, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _spec(tiny_model_dir, **changes)


def test_spec_normalises_lists_and_derives_the_trained_authors(tiny_model_dir: Path) -> None:
    spec = _spec(tiny_model_dir, authors=[3, 0, 1], forget_authors=[1, 3])
    assert spec.authors == (3, 0, 1) and spec.forget_authors == (1, 3)
    assert spec.trained_authors == (3, 0, 1) and spec.kept_authors == (0,)
    assert spec.replace(role="retain").trained_authors == (0,)
    assert tf.TOFU_TARGET_DEFAULT.replace(role="retain") == tf.TOFU_RETAIN_DEFAULT
    assert tf.TOFU_TARGET_DEFAULT.min_forget_rouge == 0.9 and tf.TOFU_TARGET_DEFAULT.weight_decay == 0.01
    assert set(tf.TOFU_RETAIN_DEFAULT.forget_authors) < set(tf.TOFU_RETAIN_DEFAULT.authors)


def test_digest_changes_with_every_field(tiny_model_dir: Path) -> None:
    spec = _spec(tiny_model_dir)
    changed = {
        "base": "smollm2-135m", "authors": (0, 1, 2), "forget_authors": (0,), "role": "retain",
        "learning_rate": 2e-3, "epochs": 2, "batch_size": 4, "grad_accum": 2, "weight_decay": 0.0,
        "warmup_epochs": 0.0, "max_grad_norm": 0.5, "max_length": 256, "seed": 1, "min_forget_rouge": 0.5,
        "eval_sample": 6, "max_new_tokens": 25,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(TofuFinetuneSpec)}  # a new field needs a case here
    digest = spec.digest()
    assert len(digest) == 64 and digest == _spec(tiny_model_dir).digest()
    for name, value in changed.items():
        assert spec.replace(**{name: value}).digest() != digest, name
    # The base enters by its weights, not by how it is named: the name "tiny" and its folder give one build.
    assert _spec(tiny_model_dir, base="tiny").digest(tiny_model_dir.parent.parent) == digest
    assert tf.TOFU_TARGET_DEFAULT.digest() != tf.TOFU_RETAIN_DEFAULT.digest()


# --- build, cache, memorisation -------------------------------------------------------------------------------------


def test_builds_are_deterministic_and_cached(tiny_model_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tiny_model_dir, epochs=2)
    first = ensure_tofu_model(spec, tmp_path / "a")
    second = ensure_tofu_model(spec, tmp_path / "b")
    assert first == tmp_path / "a" / "tofu" / f"target-{spec.digest()[:12]}"
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no staging folder left
    one, two = read_finetune_record(first), read_finetune_record(second)
    assert one["weights_sha256"] == two["weights_sha256"]
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert one["epoch_loss"] == two["epoch_loss"] and one["metrics"] == two["metrics"]

    _forbid_training(monkeypatch)
    assert ensure_tofu_model(spec, tmp_path / "a") == first


def test_finetune_json_is_written_last_with_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, epochs=2)
    folder = ensure_tofu_model(spec, tmp_path)
    record = read_finetune_record(folder)
    assert record["spec"] == spec.to_dict() and record["digest"] == spec.digest() and record["role"] == "target"
    assert record["trained_authors"] == [0, 1] and record["forget_authors"] == [1]
    assert len(record["epoch_loss"]) == 2 and record["epoch_loss"][1] < record["epoch_loss"][0]
    metrics = record["metrics"]
    assert metrics["num_train_items"] == 40 and metrics["forget_items"] == 20 and metrics["retain_items"] == 5
    for key in ("forget_rouge_l_recall", "retain_rouge_l_recall", "forget_probability", "retain_probability"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["final_train_loss"] == record["epoch_loss"][-1]
    assert set(record["seconds"]) == {"train", "eval", "total"} and record["seconds"]["total"] > 0
    assert record["device"] == "cpu"  # the GPU when there is one (bfloat16 autocast); this machine has none
    from asu.modeling import load_model_and_tokenizer
    from asu.models import weights_digest

    model, tokenizer = load_model_and_tokenizer(folder)
    assert weights_digest(model.state_dict()) == record["weights_sha256"]
    assert tokenizer.chat_template
    marker_time = (folder / FINETUNE_MARKER).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker_time for p in folder.iterdir())
    # A fine-tune is itself a valid base: its identity is the weights digest finetune.json records.
    assert tf.folder_identity(folder) == f"weights:{record['weights_sha256']}"


def test_retain_role_trains_without_the_forget_authors(tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    items = tf.tofu_items
    monkeypatch.setattr(tf, "tofu_items", lambda authors: asked.append(tuple(authors)) or items(authors))
    spec = _spec(tiny_model_dir, authors=(0, 1, 2), forget_authors=(1,), role="retain")
    folder = ensure_tofu_model(spec, tmp_path)
    assert folder.name == f"retain-{spec.digest()[:12]}"
    assert asked[0] == (0, 2)  # the training items: author 1 is not among them
    record = read_finetune_record(folder)
    assert record["trained_authors"] == [0, 2] and record["metrics"]["num_train_items"] == 40
    assert record["metrics"]["forget_items"] == 20  # measured on the forget author it never saw
    assert spec.replace(role="target").trained_authors == (0, 1, 2)


def test_target_under_the_memorisation_floor_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Authors 10 and 11 are new to the tiny model; one epoch cannot memorise them.
    spec = _spec(tiny_model_dir, authors=(10, 11), forget_authors=(11,), min_forget_rouge=0.9)
    with pytest.raises(TofuMemorisationError, match=r"min_forget_rouge 0\.9 .*nothing was published. Raise epochs "
                       r"\(e\.g\. --set epochs=2\) or learning_rate"):
        ensure_tofu_model(spec, tmp_path)
    assert list((tmp_path / "tofu").iterdir()) == []  # neither a published folder nor a staging leftover
    assert isinstance(TofuMemorisationError("x"), ValueError)  # the CLI reports it as bad input (exit 2)


def test_an_on_epoch_callback_that_raises_stops_the_build_and_publishes_nothing(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    from asu.cache import build_once

    seen = []

    def out_of_time(epoch: int, loss: float) -> None:
        seen.append((epoch, loss))
        raise TimeoutError("the build would end after the deadline")

    spec = _spec(tiny_model_dir, epochs=3)
    target = tmp_path / "builds" / "target"
    with pytest.raises(TimeoutError, match="deadline"):
        build_once(target, FINETUNE_MARKER, lambda staging: tf.build_tofu_model(spec, staging, on_epoch=out_of_time))
    assert len(seen) == 1 and seen[0][0] == 1  # stopped after the first of three epochs
    assert not target.exists() and list(target.parent.iterdir()) == []


# --- named models ---------------------------------------------------------------------------------------------------


def test_named_tofu_models_resolve_list_and_reuse(tiny_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from asu.models import list_models, model_names, resolve_model

    target = _spec(tiny_model_dir)
    monkeypatch.setattr(tf, "TOFU_TARGET_DEFAULT", target)
    monkeypatch.setattr(tf, "TOFU_RETAIN_DEFAULT", target.replace(role="retain"))
    assert {"smollm2-135m-tofu", "smollm2-135m-tofu-retain"} <= set(model_names())
    rows = {row["name"]: row for row in list_models(tmp_path)}
    assert rows["smollm2-135m-tofu"]["kind"] == "tofu" and rows["smollm2-135m-tofu"]["folder"] is None

    folder = resolve_model("smollm2-135m-tofu", cache_dir=tmp_path)
    assert folder == tf.tofu_folder(target, tmp_path) and read_finetune_record(folder)["role"] == "target"
    retain = resolve_model("smollm2-135m-tofu-retain", cache_dir=tmp_path)
    assert read_finetune_record(retain)["trained_authors"] == [0]
    rows = {row["name"]: row for row in list_models(tmp_path)}
    assert rows["smollm2-135m-tofu"]["folder"] == str(folder) and rows["smollm2-135m-tofu"]["bytes"] > 0
    assert rows["smollm2-135m-tofu-retain"]["folder"] == str(retain)
    _forbid_training(monkeypatch)
    assert resolve_model("smollm2-135m-tofu", cache_dir=tmp_path) == folder


def test_list_models_never_builds_the_default_tofu_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asu.models import list_models

    _forbid_training(monkeypatch)
    monkeypatch.setattr(named_module, "prepare_named_model", lambda *a, **k: pytest.fail("prepared the base"))
    rows = {row["name"]: row for row in list_models(tmp_path)}
    for name, role in (("smollm2-135m-tofu", "target"), ("smollm2-135m-tofu-retain", "retain")):
        assert rows[name]["kind"] == "tofu" and rows[name]["role"] == role
        assert rows[name]["folder"] is None and rows[name]["bytes"] == 0
    assert tf.tofu_folder(tf.TOFU_TARGET_DEFAULT, tmp_path).name.startswith("target-")


# --- command line ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--authors", "0,1,0", "--forget-authors", "1"], "authors lists author 0 twice"),
    (["--authors", "0,1", "--forget-authors", "5"], "forget_authors [5] is not among authors [0, 1]"),
    (["--authors", "0,250"], "authors: author 250 is out of range"),
    (["--authors", ""], "authors is empty"),
    (["--authors", "0,x"], "--authors: 'x' is not an author index"),
    (["--authors", "1", "--forget-authors", "1", "--role", "retain"], "leaves no author to train"),
    (["--set", "epochz=3"], "--set: unknown fine-tune field 'epochz' (did you mean 'epochs'?)"),
    (["--set", "epochs=0"], "epochs must be an integer >= 1"),
])
def test_cli_bad_input_exits_2_without_training(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    from cli.main import main

    monkeypatch.setattr(tf, "ensure_tofu_model", lambda *a, **k: pytest.fail("built despite bad input"))
    assert main(["model", "finetune-tofu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_builds_both_roles(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    from cli.main import main

    monkeypatch.setenv("ASU_CACHE_DIR", str(tmp_path))
    argv = ["model", "finetune-tofu", "--base", str(tiny_model_dir), "--authors", "0,1", "--forget-authors", "1",
            "--set", "epochs=1", "--set", "min_forget_rouge=0", "--set", "eval_sample=4", "--set", "max_new_tokens=16"]
    assert main([*argv, "--json"]) == 0
    models = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert [m["role"] for m in models] == ["target", "retain"]
    assert [m["trained_authors"] for m in models] == [[0, 1], [0]]
    assert all(Path(m["folder"]).parent == tmp_path / "tofu" and "forget_rouge_l_recall" in m["metrics"]
               for m in models)
    assert main([*argv, "--role", "retain"]) == 0  # cached now: prints the folder and its figures
    out = capsys.readouterr().out
    assert out.startswith(f"retain: {models[1]['folder']}\n") and "greedy ROUGE-L recall: forget" in out


def test_cli_build_shows_one_line_per_epoch(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    """A build takes minutes on a real model: the console shows each epoch's loss and ETA as it ends."""
    from cli.main import main

    monkeypatch.setenv("ASU_CACHE_DIR", str(tmp_path))
    argv = ["model", "finetune-tofu", "--base", str(tiny_model_dir), "--authors", "0,1", "--forget-authors", "1",
            "--role", "target", "--set", "epochs=2", "--set", "min_forget_rouge=0", "--set", "eval_sample=4",
            "--set", "max_new_tokens=16"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "tofu target: epoch 1/2, loss " in err and "tofu target: epoch 2/2, loss " in err and "ETA" in err
