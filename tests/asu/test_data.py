"""Tokenisation with prompt masking, batching and the pairing schedule."""

import json

import pytest

from asu.data import collate, encode_qa, load_qa_file, pairing_schedule, sequence_labels
from asu.losses import IGNORE_INDEX


def test_load_qa_file_reports_file_line_and_field(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q1", "answer": "a1"}\n\n{"question": "q2", "answer": "a2"}\n')
    assert [it["answer"] for it in load_qa_file(good)] == ["a1", "a2"]
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    assert load_qa_file(array) == [{"question": "q", "answer": "a"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'answer' must be a non-empty string"):
        load_qa_file(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q1", "answer": "a1"}\n{"question": \n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON"):
        load_qa_file(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no QA items"):
        load_qa_file(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_qa_file(tmp_path / "missing.jsonl")


def test_encode_masks_the_prompt_and_appends_eos(tiny_tokenizer):
    item = {"question": "Who wrote it?", "answer": "Jaime Vasquez wrote it."}
    enc = encode_qa(tiny_tokenizer, item, max_length=200, prompt_format="chat_template")
    answer = tiny_tokenizer(item["answer"], add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert enc.labels[-len(answer) :] == answer
    assert all(t == IGNORE_INDEX for t in enc.labels[: -len(answer)])
    assert enc.num_answer_tokens == len(answer)
    truncated = encode_qa(tiny_tokenizer, item, max_length=len(enc.input_ids) - 2, prompt_format="chat_template")
    assert len(truncated.input_ids) == len(enc.input_ids) - 2
    with pytest.raises(ValueError, match="raise max_length"):
        encode_qa(tiny_tokenizer, item, max_length=3, prompt_format="chat_template")


def test_plain_format_and_missing_chat_template(tiny_tokenizer):
    item = {"question": "q?", "answer": "a."}
    assert encode_qa(tiny_tokenizer, item, 100, "plain").num_answer_tokens >= 2
    template = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = None
        with pytest.raises(ValueError, match="prompt_format='plain'"):
            encode_qa(tiny_tokenizer, item, 100, "chat_template")
    finally:
        tiny_tokenizer.chat_template = template


def test_collate_right_pads_and_keeps_item_ids(tiny_tokenizer):
    items = [{"question": "q", "answer": "short"}, {"question": "a longer question", "answer": "a longer answer"}]
    encoded = [encode_qa(tiny_tokenizer, it, 100, "chat_template") for it in items]
    batch = collate(encoded, tiny_tokenizer.pad_token_id, [7, 3])
    width = max(len(e.input_ids) for e in encoded)
    assert batch["input_ids"].shape == (2, width)
    short = len(encoded[0].input_ids)
    assert batch["attention_mask"][0, short:].sum() == 0 and (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["item_ids"].tolist() == [7, 3]
    seq = sequence_labels(batch)
    assert (seq[0, :short] == batch["input_ids"][0, :short]).all() and (seq[0, short:] == IGNORE_INDEX).all()


def test_pairing_schedule_is_seeded_and_visits_each_forget_item_per_epoch():
    schedule = pairing_schedule(5, 100, epochs=3, seed=1)
    assert schedule == pairing_schedule(5, 100, epochs=3, seed=1)
    assert schedule != pairing_schedule(5, 100, epochs=3, seed=2)
    for epoch in range(3):
        assert sorted(f for f, _ in schedule[epoch * 5 : (epoch + 1) * 5]) == list(range(5))
    assert all(0 <= r < 100 for _, r in schedule)
    assert all(r == -1 for _, r in pairing_schedule(3, 0, 1, seed=0))
