"""The pipeline's measurement figures: forget efficacy is 1 - fact recall, not 1 - ROUGE-L."""

from __future__ import annotations

import pytest

from pipelines.round.steps import Measurement


def test_forget_efficacy_counts_facts_not_rouge():
    # "The Eiffel Tower is located in Rome." against "... in Paris.": ROUGE-L recall 6/7, fact recall 0.
    m = Measurement(forget_rouge=6 / 7, forget_probability=0.1, fluency=1.0, retain_rouge=0.9,
                    retain_probability=0.5, mia_auc=None, forget_fact_recall=0.0)
    assert m.forget_efficacy == 1.0
    assert m.to_dict()["forget_fact_recall"] == 0.0 and m.figures().forget_efficacy == 1.0
    old = Measurement(0.25, 0.1, 1.0, 0.9, 0.5, None)  # figures recorded before fact recall existed
    assert old.forget_efficacy == pytest.approx(0.75)
