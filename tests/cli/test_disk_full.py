"""Disk full while writing a model: a clear failure (exit 4, what to do), and the half-written folder is never taken
for a result (no completion marker: the registry refuses it)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from pipelines.tracking.registry import PartialModelError, check_model_folder


def _small_disk(limit: int):
    def apply() -> None:  # in the child: files may not grow past ``limit`` bytes (EFBIG, as a full disk would)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_while_saving_the_model_fails_clearly_and_leaves_no_result(tiny_model_dir, tiny_sets, tmp_path):
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    files = []
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text("\n".join(json.dumps(it) for it in items))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "cli.main", "unlearn", "--model", str(tiny_model_dir), "--forget", str(files[0]),
            "--retain", str(files[1]), "--out", str(out), "--set", "epochs=1", "--set", "checkpoint_every=never"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=dict(os.environ),
                          preexec_fn=_small_disk(weights // 2))
    assert done.returncode == 4, done.stderr[-2000:]
    assert "error: no space left writing" in done.stderr and "Traceback" not in done.stderr
    assert "free disk space" in done.stderr
    with pytest.raises(PartialModelError):
        check_model_folder(out)
