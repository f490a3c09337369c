"""`python -m bench.step`: ASU step vs plain fine-tuning step, side by side, on the tiny model."""

from __future__ import annotations

import json

import pytest

from bench.step import main


def test_bench_step_reports_ratios(tiny_model_dir, capsys):
    main(["--model", str(tiny_model_dir), "--steps", "2", "--batch-size", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert set(result["ratio_to_plain"]) == {"plain", "asu_frozen_copy", "asu_precomputed"}
    assert result["ratio_to_plain"]["plain"] == 1.0
    assert result["teacher_extra_mb"]["asu_frozen_copy"] == pytest.approx(result["weights_mb"])
