"""Crash-resume of a round: a run killed mid-training resumes from its checkpoint and ends at the weights and curve
of an uninterrupted run; a checkpoint of another round is refused; an interrupted folder is never a finished model.

Failures are injected by raising from the real ``objective_loss`` (or the real checkpoint commit) at a chosen call;
the slow test kills a real training process with SIGKILL.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import asu.checkpoint
import asu.trainer
from asu.checkpoint import CHECKPOINT_DIR, CheckpointMismatchError
from asu.config import ASUConfig
from asu.trainer import run_round

# 20 forget items, 2 per micro-batch, 2 micro-batches per step: 10 micro-batches and 5 optimizer steps per epoch.
CONFIG = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=2, batch_size=2, grad_accum_steps=2, max_length=256)
CRASH_AT_MICRO_BATCH = 13  # in epoch 2, half-way through optimizer step 7: after the epoch-1 checkpoint (step 5)


class InjectedCrash(RuntimeError):
    pass


def crash_on_call(real, call: int):
    """``real`` that raises ``InjectedCrash`` on its ``call``-th invocation (1-based)."""
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call:
            raise InjectedCrash(f"injected crash at call {call}")
        return real(*args, **kwargs)

    return wrapper


def interrupted_round(monkeypatch, model_dir, sets, out: Path, config: ASUConfig = CONFIG) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(asu.trainer, "objective_loss", crash_on_call(asu.trainer.objective_loss, CRASH_AT_MICRO_BATCH))
        with pytest.raises(InjectedCrash):
            run_round(model_dir, *sets, config, out, progress=False)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tiny_sets, tmp_path_factory):
    return run_round(tiny_model_dir, *tiny_sets, CONFIG, tmp_path_factory.mktemp("whole") / "out", progress=False)


@pytest.fixture(scope="module")
def interrupted_dir(tiny_model_dir, tiny_sets, tmp_path_factory) -> Path:
    """Output folder of a round that crashed in epoch 2 (copy it before use)."""
    out = tmp_path_factory.mktemp("crashed") / "out"
    with pytest.MonkeyPatch.context() as patch:
        interrupted_round(patch, tiny_model_dir, tiny_sets, out)
    return out


def assert_same_round(result, reference) -> None:
    a, b = weights(result.model_dir), weights(reference.model_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)
    assert result.curve == reference.curve


def test_interrupted_round_is_not_a_finished_model(interrupted_dir, tiny_sets):
    assert not (interrupted_dir / "round.json").exists()
    assert not (interrupted_dir / "model.safetensors").exists()
    assert [p.name for p in (interrupted_dir / CHECKPOINT_DIR).iterdir()] == ["step-00000005"]
    state = (interrupted_dir / CHECKPOINT_DIR / "step-00000005" / "state.json").read_text()
    assert not any(item["question"] in state or item["answer"] in state for item in tiny_sets[0])  # hashes only


def test_resumed_round_equals_uninterrupted(
    tiny_model_dir, tiny_sets, interrupted_dir, uninterrupted, tmp_path, caplog
):
    out = tmp_path / "out"
    shutil.copytree(interrupted_dir, out)
    with caplog.at_level(logging.INFO, logger="asu.checkpoint"):
        result = run_round(tiny_model_dir, *tiny_sets, CONFIG, out, progress=False)
    assert "resuming the round from" in caplog.text and "after optimizer step 5" in caplog.text
    assert result.metrics["resumed_from_step"] == 5 and uninterrupted.metrics["resumed_from_step"] == 0
    assert_same_round(result, uninterrupted)
    assert (out / "round.json").is_file() and not (out / CHECKPOINT_DIR).exists()


def test_crash_while_checkpointing_keeps_the_previous_checkpoint(
    tiny_model_dir, tiny_sets, uninterrupted, tmp_path, monkeypatch
):
    """Every 2 steps: the commit of the step-4 checkpoint fails, so the retry resumes after step 2."""
    config, out = replace(CONFIG, checkpoint_every=2), tmp_path / "out"
    real_commit = asu.checkpoint.RoundCheckpoints._commit
    with monkeypatch.context() as patch:
        patch.setattr(asu.checkpoint.RoundCheckpoints, "_commit", crash_on_call(real_commit, 2))
        with pytest.raises(InjectedCrash):
            run_round(tiny_model_dir, *tiny_sets, config, out, progress=False)
    assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir()) == ["step-00000002", "tmp-step-00000004"]
    assert not (out / "round.json").exists()
    result = run_round(tiny_model_dir, *tiny_sets, config, out, progress=False)
    assert result.metrics["resumed_from_step"] == 2
    assert_same_round(result, uninterrupted)  # the cadence is not part of the result


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"config": replace(CONFIG, tau=2.0, learning_rate=2e-3)}, "config.learning_rate, config.tau"),
        ({"forget": slice(0, -1)}, "forget_sha256"),
        ({"retain": slice(1, None)}, "retain_sha256"),
    ],
    ids=["config", "forget", "retain"],
)
def test_checkpoint_of_another_round_is_refused(tiny_model_dir, tiny_sets, interrupted_dir, tmp_path, change, differs):
    out = tmp_path / "out"
    shutil.copytree(interrupted_dir, out)
    forget, retain = tiny_sets
    forget, retain = forget[change.get("forget", slice(None))], retain[change.get("retain", slice(None))]
    with pytest.raises(CheckpointMismatchError) as caught:
        run_round(tiny_model_dir, forget, retain, change.get("config", CONFIG), out, progress=False)
    message = str(caught.value)
    assert f"{out / CHECKPOINT_DIR} holds a checkpoint of a different round (differs in: {differs})" in message
    assert "delete" in message and "new output_dir" in message
    assert (out / CHECKPOINT_DIR / "step-00000005" / "state.json").is_file()  # refused, never deleted or mixed
    assert not (out / "model.safetensors").exists()


def test_checkpoint_of_another_model_is_refused(tiny_model_dir, tiny_sets, interrupted_dir, tmp_path):
    other_model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, other_model)
    tensors = weights(other_model)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    from safetensors.torch import save_file

    save_file(tensors, str(other_model / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    shutil.copytree(interrupted_dir, out)
    with pytest.raises(CheckpointMismatchError, match=r"differs in: model_digest\)"):
        run_round(other_model, *tiny_sets, CONFIG, out, progress=False)


def test_checkpoint_every_never_writes_none(tiny_model_dir, tiny_sets, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupted_round(monkeypatch, tiny_model_dir, tiny_sets, out, replace(CONFIG, checkpoint_every="never"))
    assert not (out / CHECKPOINT_DIR).exists() and not (out / "round.json").exists()


@pytest.mark.parametrize("value", ["steps", 0, -1, True, 1.5])
def test_checkpoint_every_is_validated(value):
    with pytest.raises(ValueError, match="checkpoint_every="):
        replace(CONFIG, checkpoint_every=value)


KILLED_ROUND = """
import json, sys
from asu.config import ASUConfig
from asu.trainer import run_round

model, sets, config, out = sys.argv[1:]
forget, retain = json.loads(open(sets).read())
run_round(model, forget, retain, ASUConfig.from_dict(json.loads(open(config).read())), out, progress=False)
"""


@pytest.mark.slow
def test_round_killed_with_sigkill_resumes_to_the_same_weights(tiny_model_dir, tiny_sets, tmp_path):
    """A training process killed (SIGKILL) once its first checkpoint exists; the retry resumes and matches."""
    config = replace(CONFIG, epochs=6)  # 30 optimizer steps: the kill lands long before the end
    files = {"sets": tmp_path / "sets.json", "config": tmp_path / "config.json"}
    files["sets"].write_text(json.dumps(tiny_sets))
    files["config"].write_text(json.dumps(config.to_dict()))
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_ROUND, str(tiny_model_dir), str(files["sets"]), str(files["config"]), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not list((out / CHECKPOINT_DIR).glob("step-*")):
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "round.json").exists() and not (out / "model.safetensors").exists()
    resumed = run_round(tiny_model_dir, *tiny_sets, config, out, progress=False)
    assert 5 <= resumed.metrics["resumed_from_step"] < 30
    whole = run_round(tiny_model_dir, *tiny_sets, config, tmp_path / "whole", progress=False)
    a, b = weights(resumed.model_dir), weights(whole.model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # another process: equal within 1e-6
    assert [row["loss"] for row in resumed.curve] == pytest.approx([row["loss"] for row in whole.curve], abs=1e-6)
