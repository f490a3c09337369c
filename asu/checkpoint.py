"""Crash-resume checkpoints of one unlearning round, kept in ``<output_dir>/.checkpoint/`` while it trains.

One checkpoint is a folder ``.checkpoint/step-<8 digits>/`` holding:

- ``student.safetensors``: the trainable parameters by name (every weight for full fine-tuning, the adapter for LoRA);
- ``optimizer.pt``, ``scheduler.pt``: AdamW and learning-rate scheduler state dicts;
- a sharded (FSDP) round instead of the first two: ``sharded/``, accelerate's ``save_state`` of the model and
  optimizer shards of every process (``scheduler.pt`` as above);
- ``rng-<process>.pt``: python ``random``, numpy, torch (and CUDA) RNG states of each process;
- ``state.json``: the round's fingerprint, optimizer steps done, data-loader batches consumed per process (the
  loader follows a fixed schedule, so this count is its whole position) and the training curve so far.

It is written into ``tmp-step-<n>/`` and renamed to ``step-<n>/`` once complete (a rename is atomic on one file
system); older ones are deleted afterwards. Readers take the highest ``step-*``, so a kill at any moment, even while
a checkpoint is being written, leaves the previous one usable.

A checkpoint resumes only the round that wrote it: its fingerprint (the config without ``checkpoint_every``,
SHA-256 of the forget and retain items and of the refusal strings, the model folder's content digest, the number of
processes, the mixed precision) must equal the new call's, else :class:`CheckpointMismatchError`. The teacher is not
saved: the trainer rebuilds it from the original model before it loads the student's weights.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from asu.config import ASUConfig, CheckpointEvery
from asu.errors import UsageError
from asu.hashing import sha256_json
from asu.sharding import is_sharded

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoint"
_STEP_PREFIX, _TMP_PREFIX = "step-", "tmp-step-"
_SHARDED = "sharded"  # an FSDP round's checkpoint: accelerate's sharded model and optimizer state


class CheckpointMismatchError(UsageError):
    """``<output_dir>/.checkpoint/`` belongs to a different round (other config, data or model)."""


@dataclass
class Progress:
    """Where training stands: optimizer steps done, loader batches consumed per process, curve rows so far."""

    step: int = 0
    micro_batches: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)


def items_sha256(items: Sequence[dict[str, str]] | Sequence[str] | None) -> str:
    """SHA-256 of QA items (question and answer only) or of strings; ``"none"`` for None."""
    if items is None:
        return "none"
    return sha256_json([it if isinstance(it, str) else ["text", it["text"]] if "question" not in it
                        else [it["question"], it["answer"]] for it in items])


def round_fingerprint(
    model_dir: str | Path,
    forget: Sequence[dict[str, str]],
    retain: Sequence[dict[str, str]],
    refusals: Sequence[str] | None,
    config: ASUConfig,
    num_processes: int,
    mixed_precision: str,
    teacher_model_dir: str | Path | None = None,
) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue a round (JSON-normalised; no item content, only hashes)."""
    from asu.metrics.store import model_digest

    values = {
        "config": {k: v for k, v in config.to_dict().items() if k != "checkpoint_every"},
        "forget_sha256": items_sha256(forget),
        "retain_sha256": items_sha256(retain),
        "refusals_sha256": items_sha256(refusals),
        "model_digest": model_digest(model_dir),
        "num_processes": num_processes,
        "mixed_precision": mixed_precision,
    }
    if teacher_model_dir is not None:  # absent otherwise: checkpoints of rounds taught by the student still match
        values["teacher_model_digest"] = model_digest(teacher_model_dir)
    return json.loads(json.dumps(values))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder under ``output_dir``, or None."""
    root = output_dir / CHECKPOINT_DIR
    steps = sorted(root.glob(f"{_STEP_PREFIX}*")) if root.is_dir() else []
    return steps[-1] if steps else None


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    config_a, config_b = recorded.get("config", {}), current["config"]
    names = [f"config.{k}" for k in sorted(set(config_a) | set(config_b)) if config_a.get(k) != config_b.get(k)]
    return names + [k for k in current if k != "config" and recorded.get(k) != current[k]]


def checked_state(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``state.json`` of ``folder`` if its fingerprint matches; else ``CheckpointMismatchError`` naming the fix."""
    root = folder.parent
    fix = f"delete {root} to start this round from scratch, or use a new output_dir"
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointMismatchError(f"{folder}/state.json cannot be read ({err}); {fix}") from err
    differing = _differences(state.get("fingerprint", {}), fingerprint)
    if differing:
        raise CheckpointMismatchError(
            f"{root} holds a checkpoint of a different round (differs in: {', '.join(differing)}); it is never "
            f"resumed into this one: rerun with the original arguments to resume it, or {fix}"
        )
    return state


def _rng_state() -> dict[str, Any]:
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RoundCheckpoints:
    """Checkpoints of the round writing into ``output_dir``.

    Args:
        output_dir: the round's output folder; checkpoints live in ``output_dir/.checkpoint``.
        fingerprint: builds the round's fingerprint (called at most once, only when a checkpoint is read or written).
        every: ``ASUConfig.checkpoint_every``.
    """

    def __init__(self, output_dir: Path, fingerprint, every: CheckpointEvery) -> None:
        self.output_dir, self._make_fingerprint, self.every = output_dir, fingerprint, every
        self.root = output_dir / CHECKPOINT_DIR

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        return self._make_fingerprint()

    @cached_property
    def resume_from(self) -> Path | None:
        """The checkpoint to resume (fingerprint checked), or None to start fresh."""
        folder = latest_checkpoint(self.output_dir)
        if folder is not None:
            checked_state(folder, self.fingerprint)
        return folder

    def due(self, step: int, total: int, steps_per_epoch: int) -> bool:
        """Whether to checkpoint after optimizer step ``step`` of ``total`` (never after the last one)."""
        if self.every == "never" or step >= total:
            return False
        return step % (steps_per_epoch if self.every == "epoch" else self.every) == 0

    def restore(self, accelerator, model, optimizer, scheduler) -> Progress:
        """Load the checkpoint (if any) into the unwrapped ``model``, ``optimizer``, ``scheduler`` and the RNGs."""
        folder = self.resume_from
        if folder is None:
            return Progress()
        from safetensors.torch import load_file

        state = checked_state(folder, self.fingerprint)
        if (folder / _SHARDED).is_dir():  # an FSDP round: every process loads its own shards
            accelerator.load_state(str(folder / _SHARDED))
        else:
            saved, params = load_file(str(folder / "student.safetensors")), _trainable(accelerator.unwrap_model(model))
            if set(saved) != set(params):
                raise CheckpointMismatchError(f"{folder}: saved parameters differ from the model's; delete {self.root}")
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(saved[name])
            optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu"))
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu"))
        _set_rng_state(torch.load(folder / f"rng-{accelerator.process_index}.pt", map_location="cpu"))
        progress = Progress(state["step"], state["micro_batches"], state["curve"])
        logger.info("resuming the round from %s after optimizer step %d", folder, progress.step)
        return progress

    def save(self, accelerator, model, optimizer, scheduler, progress: Progress) -> None:
        """Write a checkpoint atomically (temp folder, then rename), then delete the older ones."""
        from safetensors.torch import save_file

        tmp = self.root / f"{_TMP_PREFIX}{progress.step:08d}"
        if accelerator.is_main_process:
            for stale in self.root.glob(f"{_TMP_PREFIX}*"):
                shutil.rmtree(stale)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        sharded = is_sharded(accelerator)
        if sharded:  # the model and optimizer shards, written by every process
            accelerator.save_state(str(tmp / _SHARDED))
        torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            if not sharded:
                trainable = _trainable(accelerator.unwrap_model(model))
                save_file({k: p.detach().contiguous().cpu() for k, p in trainable.items()},
                          str(tmp / "student.safetensors"))
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            state = {"fingerprint": self.fingerprint, **progress.__dict__}
            (tmp / "state.json").write_text(json.dumps(state))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._commit(tmp, progress.step)
        accelerator.wait_for_everyone()

    def _commit(self, tmp: Path, step: int) -> None:
        for path in tmp.iterdir():
            _fsync(path)
        final = self.root / f"{_STEP_PREFIX}{step:08d}"
        tmp.rename(final)
        _fsync(self.root)
        for older in self.root.glob(f"{_STEP_PREFIX}*"):
            if older.name < final.name:
                shutil.rmtree(older)
        logger.info("checkpoint after optimizer step %d saved to %s", step, final)

    def remove(self) -> None:
        """Delete ``.checkpoint/`` (after the finished model and its ``round.json`` are written)."""
        shutil.rmtree(self.root, ignore_errors=True)
