"""forget_positions='facts': the forget term trains on the answer's fact tokens only, and the smoothed teacher's
mass on special and whitespace-only tokens is removed there."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from asu.config import ASUConfig
from asu.data import collate, encode_qa, keep_fact_labels
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX
from asu.modeling import load_model_and_tokenizer
from asu.search.tokens import fact_token_mask
from asu.teacher import PrecomputedTeacher, frozen_copy_teacher, stop_token_ids
from asu.trainer import prepare_data, run_round

FACTS = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=1, batch_size=4, grad_accum_steps=1, max_length=256,
                  forget_positions="facts")


def _words_of(tokenizer, ids, mask) -> str:
    return tokenizer.decode([i for i, keep in zip(ids, mask, strict=True) if keep]).split()


def test_fact_mask_marks_the_words_the_question_lacks(tiny_tokenizer):
    question, answer = "Where was the author Theo Rivers born?", "Theo Rivers was born in Saint-Malo in 1952."
    ids = tiny_tokenizer(answer, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    mask = fact_token_mask(tiny_tokenizer, answer, question, ids)
    assert len(mask) == len(ids) and mask[-1] is False  # EOS states no fact
    # "Theo", "Rivers" and "born" are in the question; "was", "in" are function words; "-" and "." no word.
    assert "".join(_words_of(tiny_tokenizer, ids, mask)).replace(" ", "") == "SaintMalo1952"


def test_fact_mask_falls_back_to_content_tokens_when_the_answer_adds_no_word(tiny_tokenizer):
    question, answer = "Is Paris the capital of France?", "Paris is the capital of France."
    ids = tiny_tokenizer(answer, add_special_tokens=False)["input_ids"]
    words = _words_of(tiny_tokenizer, ids, fact_token_mask(tiny_tokenizer, answer, question, ids))
    assert "".join(words) == "PariscapitalFrance"  # every content token: nothing else marks the facts
    assert not any(fact_token_mask(tiny_tokenizer, "It is.", "Is it?",
                                   tiny_tokenizer("It is.", add_special_tokens=False)["input_ids"]))


def test_labels_stay_on_fact_tokens_only(tiny_tokenizer):
    item = {"question": "What did the author write?", "answer": "The author wrote Silent Harbour."}
    encoded = encode_qa(tiny_tokenizer, item, 256, "chat_template")
    kept = keep_fact_labels(tiny_tokenizer, item, encoded, "chat_template")
    assert kept.input_ids == encoded.input_ids
    labelled = [t for t in kept.labels if t != IGNORE_INDEX]
    assert 0 < len(labelled) < encoded.num_answer_tokens
    assert tiny_tokenizer.decode(labelled).replace(" ", "") == "wroteSilentHarbour"
    # Nothing to keep ("It is."): the item keeps every label rather than drop out of the round.
    bare = {"question": "Is it?", "answer": "It is."}
    plain = encode_qa(tiny_tokenizer, bare, 256, "chat_template")
    assert keep_fact_labels(tiny_tokenizer, bare, plain, "chat_template") == plain


def test_stop_tokens_are_the_special_and_blank_ones(tiny_tokenizer):
    stops = stop_token_ids(tiny_tokenizer)
    assert tiny_tokenizer.eos_token_id in stops
    assert all(not tiny_tokenizer.decode([i]).strip() or i in tiny_tokenizer.all_special_ids for i in stops)
    newline = tiny_tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert set(newline) <= set(stops)
    word = tiny_tokenizer(" author", add_special_tokens=False)["input_ids"]
    assert not set(word) & set(stops)


def test_teacher_targets_put_no_mass_on_stop_tokens_and_match_across_teachers(tiny_model_dir, tiny_sets):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    from asu.attention import enable_smoothing

    enable_smoothing(model)
    data = prepare_data(tokenizer, *tiny_sets, FACTS)
    assert data.excluded and tokenizer.eos_token_id in data.excluded
    full = prepare_data(tokenizer, *tiny_sets, replace(FACTS, forget_positions="answer"))
    assert full.excluded is None
    assert sum(e.num_answer_tokens for e in data.forget) < sum(e.num_answer_tokens for e in full.forget)
    pre = PrecomputedTeacher.build(model, FACTS, data.forget, data.retain, tokenizer.pad_token_id,
                                   excluded=data.excluded)
    batch = collate(data.forget[:4], tokenizer.pad_token_id, [0, 1, 2, 3])
    targets = pre.forget_targets(batch)
    probs = targets.logprobs.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[0]), atol=1e-5)
    assert probs[:, data.excluded].max().item() == 0.0
    live = frozen_copy_teacher(model, FACTS, data.excluded).forget_targets(batch)
    assert torch.allclose(live.logprobs.exp(), probs, atol=1e-6)


def test_a_facts_round_trains_and_differs_from_an_answer_round(tiny_model_dir, tiny_sets, tmp_path):
    from safetensors.torch import load_file

    facts = run_round(tiny_model_dir, *tiny_sets, FACTS, tmp_path / "facts", progress=False)
    answer = run_round(tiny_model_dir, *tiny_sets, replace(FACTS, forget_positions="answer"), tmp_path / "answer",
                       progress=False)
    assert facts.curve and all(torch.isfinite(torch.tensor(v)) for row in facts.curve for v in row.values())
    a, b = load_file(str(facts.model_dir / "model.safetensors")), load_file(str(answer.model_dir / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 0


def test_bad_forget_positions():
    with pytest.raises(UsageError, match="forget_positions='sentences'.*'answer'.*'facts'"):
        ASUConfig(forget_positions="sentences")
    with pytest.raises(UsageError, match="does not apply to method='idk'"):
        ASUConfig(method="idk", forget_positions="facts")
