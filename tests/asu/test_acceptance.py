"""Acceptance of one ASU round on the embedded default model with the `embedded` recipe (slow: ~1-3 min
plus the model build on first use). Run with `.venv/bin/pytest -m slow`."""

from __future__ import annotations

import pytest

from asu.evaluation import repetition_rate
from asu.recipes import get_recipe
from pipelines.demo.one_round import run_demo

pytestmark = pytest.mark.slow


def test_default_round_forgets_two_authors_keeps_the_rest_and_stays_fluent(tmp_path):
    result = run_demo(tmp_path, variant="default", config=get_recipe("embedded"), progress=False)
    before, after = result.before, result.after
    assert before["forget"].rouge_l_recall >= 0.95  # the model really memorised them
    assert after["forget"].rouge_l_recall <= 0.5 * before["forget"].rouge_l_recall
    assert after["retain"].rouge_l_recall >= 0.9 * before["retain"].rouge_l_recall
    answers = after["forget"].answers
    assert all(a.strip() for a in answers), "an empty answer to a forget question"
    assert max(repetition_rate(a) for a in answers) <= 0.3, "a repetition loop in a forget answer"
