"""Content vs function tokens of an answer, for the paper's factual-vs-function NLL argument (method.md §6).

The ASU paper split TOFU answer tokens into factual and function tokens with a GPT annotator. Here the split
is a fixed, documented rule on the *word* each answer token belongs to:

- a token is a **function** token when its word (lower-cased, the maximal run of letters/digits/apostrophes
  around the token's characters) is in :data:`FUNCTION_WORDS` (English articles, pronouns, prepositions,
  conjunctions, auxiliary and copular verbs, a few frequent adverbs), or when the token holds no letter or
  digit at all (whitespace, punctuation), or is the EOS token that closes every answer;
- every other token is a **content** token (names, places, dates, titles, nouns, most verbs).

Tokens are mapped to words with the fast tokenizer's character offsets, so a sub-word piece ("the" at the
start of "theory") takes the class of its whole word. Tokenizers without offsets fall back to classifying
each decoded token on its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Function words (lower case). Small on purpose: it separates syntax from facts, it is not a linguistic tool.
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those there here
    i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
    who whom whose which what where when why how
    and or but nor so yet as if than then because while although though
    of in on at to from by for with without about into onto over under between among through during
    before after above below up down out off near across against along around behind beyond upon within
    is am are was were be been being has have had having do does did done can could will would shall
    should may might must
    not no also very too just only even more most much many some any all both each such own same
    other another
    's 'm 're 've 'll 'd n't
    """.split()
)

_WORD = re.compile(r"[A-Za-z0-9']+")
_HAS_ALNUM = re.compile(r"[A-Za-z0-9]")


def _fact_words(text: str) -> set[str]:
    """Lower-cased content words of ``text`` (possessive 's dropped, function words and stray apostrophes out)."""
    words = {w.lower().removesuffix("'s").strip("'") for w in _WORD.findall(text)}
    return {w for w in words if w and not is_function_word(w)}


def answer_facts(reference: str, question: str) -> set[str]:
    """The words that carry a reference answer's facts: its content words that the question does not contain.

    "What is the capital of France?" / "The capital of France is Paris." -> {"paris"}: an answer that repeats
    the question ("The capital of France is Lyon.") states none of the facts.
    """
    return _fact_words(reference) - _fact_words(question)


def fact_recall(answer: str, reference: str, question: str) -> float:
    """Share of :func:`answer_facts` that ``answer`` contains (0-1); ``nan`` when the reference adds no word to
    the question (then there is nothing to recall, and callers fall back to ROUGE-L)."""
    facts = answer_facts(reference, question)
    if not facts:
        return float("nan")
    return len(facts & _fact_words(answer)) / len(facts)


def is_function_word(word: str) -> bool:
    """True for a word of :data:`FUNCTION_WORDS` (case-insensitive) or a string with no letter or digit."""
    word = word.strip()
    return not _HAS_ALNUM.search(word) or word.lower() in FUNCTION_WORDS


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def _classify_by_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[bool]:
    spans = _word_spans(text)
    out = []
    for start, end in offsets:
        piece = text[start:end]
        if not _HAS_ALNUM.search(piece):
            out.append(True)
            continue
        words = [text[s:e] for s, e in spans if s < end and e > start]
        out.append(all(is_function_word(w) for w in words) if words else True)
    return out


def function_token_mask(tokenizer, text: str, token_ids: Sequence[int]) -> list[bool]:
    """Per token of ``token_ids`` (the encoding of ``text``, optionally followed by EOS): True = function token.

    ``token_ids`` must be ``tokenizer(text, add_special_tokens=False)["input_ids"]`` plus at most a trailing EOS
    (the answer encoding of ``asu.data.answer_ids``), possibly truncated. Returns one bool per id.
    """
    ids = list(token_ids)
    eos = tokenizer.eos_token_id
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        plain = list(enc["input_ids"])
        body = ids[: len(plain)]
        if body == plain[: len(body)]:
            mask = _classify_by_offsets(text, enc["offset_mapping"][: len(body)])
            return mask + [True] * (len(ids) - len(body))  # the EOS that closes the answer
    # Fallback: each decoded token judged on its own (sub-word pieces may be misjudged).
    return [True if i == eos else is_function_word(tokenizer.decode([i])) for i in ids]


def fact_token_mask(tokenizer, answer: str, question: str, token_ids: Sequence[int]) -> list[bool]:
    """Per token of ``token_ids`` (the encoding of ``answer``, optionally followed by EOS, as in
    :func:`function_token_mask`): True = a token of one of the answer's facts (:func:`answer_facts`: its content
    words that the question lacks; "The capital of France is Paris." after "What is the capital of France?" marks
    the tokens of "Paris" only).

    Falls back to every content token when the answer adds no word to the question, and to no token at all when
    the answer has no content word. Needs a fast tokenizer (character offsets); otherwise every content token.
    """
    ids = list(token_ids)
    facts = answer_facts(answer, question)
    content = [not f for f in function_token_mask(tokenizer, answer, ids)]
    if not facts or not getattr(tokenizer, "is_fast", False):
        return content
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"][: len(ids)]
    spans = _word_spans(answer)
    mask = []
    for i, (start, end) in enumerate(offsets):
        words = [answer[s:e].lower().removesuffix("'s").strip("'") for s, e in spans if s < end and e > start]
        mask.append(content[i] and any(w in facts for w in words))
    return mask + [False] * (len(ids) - len(mask))  # the closing EOS states no fact


__all__ = ["FUNCTION_WORDS", "answer_facts", "fact_token_mask", "function_token_mask", "is_function_word"]
