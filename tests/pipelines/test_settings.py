"""Pipeline settings: the teacher source and the fluency judge are named choices with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.round.steps import teacher_model
from pipelines.settings import PipelineSettings


def test_teacher_source_original_names_the_base_model(tiny_model_dir, tmp_path):
    settings = PipelineSettings(base_model=str(tiny_model_dir), retain_file="r.json", teacher_source="original")
    assert teacher_model(tmp_path / "champion", settings) == Path(tiny_model_dir)
    assert teacher_model(Path(tiny_model_dir), settings) is None  # the first round: the base model is the student
    previous = PipelineSettings(base_model=str(tiny_model_dir), retain_file="r.json")
    assert previous.teacher_source == "previous" and teacher_model(tmp_path / "champion", previous) is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("teacher_source", "base", "use 'previous' or 'original'"),
    ("fluency_model", " ", "fluency_model must be 'champion' or a model name"),
    ("robustness", {"attacks": ["paraphrase"]}, "paraphrased questions"),
    ("robustness", {"attack": ["relearn"]}, "attacks"),
    ("robustness", {"attacks": ["relearn", "jailbreak"]}, "unknown"),
    ("robustness", ["relearn"], "robustness must be a mapping"),
    ("gate_retries", -1, "gate_retries=-1 must be an integer >= 0"),
    ("gate_retries", 1.5, "gate_retries=1.5 must be an integer"),
    ("gate_retries", True, "gate_retries=True must be an integer"),
    ("gate_retry", "stronger", "use 'gentler_strength' or 'runner_up'"),
])
def test_bad_choices_name_the_fix(field, value, message):
    with pytest.raises(ValueError, match=message):
        PipelineSettings(retain_file="r.json", **{field: value})


def test_robustness_defaults_to_no_attack_and_reads_a_mapping():
    assert PipelineSettings(retain_file="r.json").robustness.attacks == ()
    settings = PipelineSettings.from_dict({"retain_file": "r.json",
                                           "robustness": {"attacks": ["relearn", "prefix"], "samples": 4}})
    assert settings.robustness.attacks == ("relearn", "prefix") and settings.robustness.samples == 4
    assert settings.to_dict()["robustness"]["attacks"] == ["relearn", "prefix"]
