"""Quick before/after QA figures: fact recall of greedy answers (ROUGE-L where a reference adds no fact)."""

from __future__ import annotations

import pytest


def test_score_qa_fact_recall_matches_its_definition(tiny_model_dir):
    from asu.evaluation import score_qa
    from asu.modeling import load_model_and_tokenizer
    from asu.search.tokens import fact_recall

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    items = [{"question": "Who wrote the book?", "answer": "The book was written by Ana Ruiz."},
             {"question": "Where was Ana Ruiz born?", "answer": "Ana Ruiz was born in Lima."},
             {"question": "Is the sky blue?", "answer": "The sky is blue."}]  # adds no fact: ROUGE-L counts
    scores = score_qa(model, tokenizer, items, max_new_tokens=16)
    per_item = [fact_recall(a, it["answer"], it["question"]) for a, it in zip(scores.answers, items, strict=True)]
    assert per_item[2] != per_item[2]  # NaN: nothing to recall
    expected = (per_item[0] + per_item[1] + scores.per_item_rouge[2]) / 3
    assert scores.fact_recall == pytest.approx(expected)
    assert scores.summary()["fact_recall"] == scores.fact_recall
