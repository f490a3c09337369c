"""Stage 1: the teacher scan on the tiny model (tau = 1 is the plain model; figures move with tau), bracket."""

from __future__ import annotations

import math

import pytest

from asu.evaluation import answer_nll, generate_answers, rouge_l_recall
from asu.modeling import load_model_and_tokenizer
from asu.search.scan import BracketCriteria, ScanRow, bracket, scan_temperatures, spread, token_nlls
from asu.search.scores import SetFigures


@pytest.fixture(scope="module")
def scan(tiny_model_dir, tiny_sets):
    forget, retain = tiny_sets[0][:4], tiny_sets[1][:4]
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    plain = {  # the plain model, before smoothing is enabled on it
        "nll": answer_nll(model, tokenizer, forget, max_length=256),
        "answers": generate_answers(model, tokenizer, [it["question"] for it in forget], max_new_tokens=48),
    }
    rows = scan_temperatures(model, tokenizer, forget, retain, [1.0, 4.0], max_length=256, max_new_tokens=48)
    return rows, plain, forget, model, tokenizer


def test_tau_one_is_the_plain_model(scan):
    rows, plain, forget, _, _ = scan
    base = rows[0]
    assert base.tau == 1.0
    assert base.forget.nll == pytest.approx(sum(plain["nll"]) / len(plain["nll"]), abs=1e-6)
    assert base.forget.probability == pytest.approx(sum(math.exp(-v) for v in plain["nll"]) / 4, abs=1e-6)
    rouge = rouge_l_recall(plain["answers"], [it["answer"] for it in forget])
    assert base.forget.rouge_l_recall == pytest.approx(sum(rouge) / 4)


def test_figures_move_with_tau(scan):
    base, hot = scan[0]
    assert hot.forget.nll > base.forget.nll + 0.02
    assert hot.content_nll > base.content_nll and hot.function_nll > base.function_nll
    assert hot.retain_nll > base.retain_nll
    assert hot.forget.probability < base.forget.probability
    flat = hot.to_dict()
    assert flat["tau"] == 4.0 and {"content_nll", "function_nll", "teacher_forget_token_entropy"} <= set(flat)


def test_token_nlls_split_every_answer_token(scan):
    _, plain, forget, model, tokenizer = scan
    per_item = token_nlls(model, tokenizer, forget, prompt_format="chat_template", max_length=256, batch_size=3)
    for (nll, mask), item_nll in zip(per_item, plain["nll"], strict=True):
        assert len(nll) == len(mask) and any(mask) and not all(mask)
        assert sum(nll) / len(nll) == pytest.approx(item_nll, abs=1e-5)


def _row(tau, content, fluent=1.0, entropy=0.9, retain=0.1):
    figures = SetFigures(items=4, rouge_l_recall=1, probability=1, nll=content, token_entropy=entropy,
                         repetition=0, fluent_share=fluent)
    return ScanRow(tau, figures, content, content, retain)


def test_bracket_reasons_and_spread():
    base = _row(1.0, 0.1)
    rows = [_row(1.5, 0.15), _row(2.0, 1.0), _row(3.0, 2.0, fluent=0.2), _row(4.0, 3.0, entropy=0.1),
            _row(5.0, 4.0, retain=20.0)]
    verdicts = bracket(rows, base, BracketCriteria(min_content_nll_rise=0.5))
    assert verdicts[2.0] is None
    assert verdicts[1.5].startswith("too weak") and "fluent share" in verdicts[3.0]
    assert "token entropy" in verdicts[4.0] and "retain NLL" in verdicts[5.0]
    assert spread([2.0, 2.3, 2.6, 3.0, 4.0], 3) == [2.0, 2.6, 4.0]
    assert spread([3.0, 2.0], 3) == [2.0, 3.0] and spread([1.5, 2.0, 2.5], 1) == [2.0]


def test_fact_position_rounds_bracket_on_moving_facts_alone():
    """forget_positions='facts' copies the teacher at fact tokens only (stop tokens removed): a teacher whose own
    answers are broken is still a candidate, one that moves no fact is not."""
    base = _row(1.0, 0.1)
    rows = [_row(1.5, 0.15), _row(3.0, 2.0, fluent=0.2), _row(4.0, 3.0, entropy=0.1), _row(5.0, 4.0, retain=20.0)]
    verdicts = bracket(rows, base, BracketCriteria(min_content_nll_rise=0.5), coherence=False)
    assert verdicts[1.5].startswith("too weak")
    assert verdicts[3.0] is None and verdicts[4.0] is None and verdicts[5.0] is None
