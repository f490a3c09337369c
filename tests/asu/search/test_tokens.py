"""Content vs function tokens: the documented stop-word rule, applied per word through token offsets."""

from __future__ import annotations

import math
import re

from asu.search.tokens import FUNCTION_WORDS, function_token_mask, is_function_word


def test_function_words_and_punctuation():
    assert all(is_function_word(w) for w in ("the", "The", " of ", "was", ",", ".", "  ", "'s"))
    assert not any(is_function_word(w) for w in ("Paris", "author", "1952", "novel"))
    assert {"the", "and", "of", "was", "his"} <= FUNCTION_WORDS


def test_mask_follows_words_not_subword_pieces(tiny_tokenizer):
    text = "The author was born in Theoryville in 1952."
    enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"] + [tiny_tokenizer.eos_token_id]
    mask = function_token_mask(tiny_tokenizer, text, ids)
    assert len(mask) == len(ids) and mask[-1] is True  # EOS closes the answer: function
    words: dict[str, set[bool]] = {}  # word -> the flags of the tokens overlapping it
    for flag, (start, end) in zip(mask, enc["offset_mapping"], strict=False):
        for word in re.finditer(r"[A-Za-z0-9]+|\.", text):
            if word.start() < end and word.end() > start:
                words.setdefault(word.group(), set()).add(flag)
    assert words["The"] == {True} and words["was"] == {True} and words["in"] == {True} and words["."] == {True}
    # Every piece of a content word is content, even one that spells a stop word ("The" in "Theoryville").
    assert words["author"] == {False} and words["Theoryville"] == {False} and words["1952"] == {False}


def test_truncated_answer_without_eos(tiny_tokenizer):
    text = "His father was a painter."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"][:3]
    assert len(function_token_mask(tiny_tokenizer, text, ids)) == 3


def test_fact_recall_counts_the_answer_words_the_question_does_not_hold():
    from asu.search.tokens import answer_facts, fact_recall

    question, reference = "What is the capital of France?", "The capital of France is Paris."
    assert answer_facts(reference, question) == {"paris"}
    assert fact_recall("The capital of France is Lyon.", reference, question) == 0.0  # ROUGE-L recall: 5/6
    assert fact_recall("It's Paris, of course.", reference, question) == 1.0
    born = "Chukwu Akabueze was born on September 26, 1965."
    facts = answer_facts(born, "What is Chukwu Akabueze's date of birth?")
    assert facts == {"born", "september", "26", "1965"}
    assert fact_recall("He was born in September 1960.", born, "What is Chukwu Akabueze's date of birth?") == 0.5
    assert math.isnan(fact_recall("Yes.", "Paris is the capital.", "Is Paris the capital?"))  # nothing to recall
