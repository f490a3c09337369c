"""asu.strict: one message for an unknown key everywhere: the file and line, the closest name, the known names."""

from __future__ import annotations

import pytest

from asu.errors import UsageError
from pipelines.settings import PipelineSettings


def test_a_typo_in_a_settings_file_names_file_line_and_the_closest_key(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("base_model: embedded:tiny\nretain_file: r.jsonl\nmax_new_token: 48\n")
    with pytest.raises(UsageError, match=r"pipeline.yaml:3: unknown pipeline settings field 'max_new_token' "
                                         r"\(did you mean 'max_new_tokens'\?\); known fields: .*retain_file"):
        PipelineSettings.from_yaml(path)


def test_not_a_mapping_and_a_missing_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="pipeline.yaml: the pipeline settings file must be a mapping"):
        PipelineSettings.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="pipeline settings file .*nope.yaml does not exist"):
        PipelineSettings.from_yaml(tmp_path / "nope.yaml")
