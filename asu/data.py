"""Question-answer data: loading, prompt formatting, tokenisation with prompt masking, batching, pairing.

A QA item is ``{"question": str, "answer": str}``. Training sequences are ``prompt + answer + EOS`` where the
prompt is the tokenizer's chat template for a single user turn (or the plain ``Question: ...\\nAnswer:`` format);
labels are IGNORE_INDEX on the prompt and on padding, so losses see the answer tokens plus EOS only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from asu.errors import UsageError
from asu.losses import IGNORE_INDEX
from asu.qa_file import QAItem, load_qa_file  # noqa: F401 - the one QA reader, re-exported

#: How a prompt precedes its answer: the tokenizer's chat template for one user turn; ``Question: ...\nAnswer:``;
#: or ``completion``, raw text continued as is (a passage's prefix and its continuation: BOS when the tokenizer has
#: one, no template, no EOS after the answer because the passage goes on). Rounds on QA items use the first two.
PromptFormat = Literal["chat_template", "plain", "completion"]


def prompt_ids(tokenizer, question: str, prompt_format: PromptFormat) -> list[int]:
    """Token ids of the prompt that precedes an answer."""
    if prompt_format == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError(
                "the tokenizer has no chat template; set prompt_format='plain' or add a chat_template to the tokenizer"
            )
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    if prompt_format == "completion":
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + tokenizer(question, add_special_tokens=False)["input_ids"]
    return tokenizer(f"Question: {question}\nAnswer:", add_special_tokens=True)["input_ids"]


def item_format(item: QAItem, default: PromptFormat) -> PromptFormat:
    """The prompt format of ``item``: its own ``prompt_format`` (a passage's continuation probe carries
    ``completion``, ``asu.passages.continuation_probes``) or ``default``."""
    return item.get("prompt_format", default)


def answer_text(answer: str, prompt_format: PromptFormat) -> str:
    """The answer as it is tokenised after its prompt (``plain`` puts a space after ``Answer:``)."""
    return " " + answer if prompt_format == "plain" else answer


def answer_ids(tokenizer, answer: str, prompt_format: PromptFormat) -> list[int]:
    """Token ids of the answer followed by EOS (``completion``: no EOS, the passage goes on)."""
    ids = tokenizer(answer_text(answer, prompt_format), add_special_tokens=False)["input_ids"]
    return ids if prompt_format == "completion" else ids + [tokenizer.eos_token_id]


@dataclass(frozen=True)
class Encoded:
    """One tokenised QA item: ``input_ids`` and ``labels`` of equal length (labels -100 on the prompt)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_answer_tokens(self) -> int:
        """Labelled tokens after the one-position shift (answer tokens + EOS)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def encode_qa(tokenizer, item: QAItem, max_length: int, prompt_format: PromptFormat) -> Encoded:
    """Tokenise prompt + answer + EOS, truncating the answer so the whole fits ``max_length`` (the item's own
    ``prompt_format`` wins over ``prompt_format``: :func:`item_format`)."""
    prompt_format = item_format(item, prompt_format)
    prompt = prompt_ids(tokenizer, item["question"], prompt_format)
    answer = answer_ids(tokenizer, item["answer"], prompt_format)
    room = max_length - len(prompt)
    if room < 1:
        raise UsageError(
            f"a prompt of {len(prompt)} tokens leaves no room for the answer within max_length={max_length}; "
            "raise max_length or shorten the question"
        )
    answer = answer[:room]
    return Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)


def encode_items(tokenizer, items, *, max_length: int, prompt_format: PromptFormat, chunk_overlap: int = 32,
                 max_chunks: int = 64, what: str = "forget", facts_only: bool = False) -> list[Encoded]:
    """Training sequences of a set that may mix QA items (one sequence each: prompt masked, answer labelled) and
    passages (``{"text": ...}``: one sequence per chunk, every token labelled; ``asu.passages``), in item order.
    ``facts_only``: a QA item's labels stay on its fact tokens only (:func:`keep_fact_labels`)."""
    from asu.passages import chunk_passages, is_passage

    passages = [i for i, item in enumerate(items) if is_passage(item)]
    chunks: dict[int, list[list[int]]] = {}
    if passages:
        per_passage = chunk_passages(tokenizer, [items[i]["text"] for i in passages], max_length=max_length,
                                     overlap=chunk_overlap, max_chunks=max_chunks, what=what)
        chunks = dict(zip(passages, per_passage, strict=True))
    out: list[Encoded] = []
    for i, item in enumerate(items):
        if i in chunks:
            out += [Encoded(ids, [IGNORE_INDEX] + ids[1:]) for ids in chunks[i]]
        else:
            encoded = encode_qa(tokenizer, item, max_length, prompt_format)
            out.append(keep_fact_labels(tokenizer, item, encoded, prompt_format) if facts_only else encoded)
    return out


def keep_fact_labels(tokenizer, item: QAItem, encoded: Encoded, prompt_format: PromptFormat) -> Encoded:
    """``encoded`` (of QA ``item``, from :func:`encode_qa`) with labels left on the answer's fact tokens only
    (``asu.search.tokens.fact_token_mask``); unchanged when the answer has no content token to keep, so that a
    forget item never drops out of its round."""
    from asu.search.tokens import fact_token_mask

    start = next(i for i, t in enumerate(encoded.labels) if t != IGNORE_INDEX)
    answer = encoded.input_ids[start:]
    text = answer_text(item["answer"], prompt_format)
    mask = fact_token_mask(tokenizer, text, item["question"], answer)
    if not any(mask):
        return encoded
    labels = encoded.labels[:start] + [t if keep else IGNORE_INDEX for t, keep in zip(answer, mask, strict=True)]
    return Encoded(encoded.input_ids, labels)


def collate(encoded: list[Encoded], pad_id: int, item_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded items into a training batch.

    Returns ``input_ids`` [B, T], ``attention_mask`` [B, T] (1 = real token), ``labels`` [B, T] and, when given,
    ``item_ids`` [B] (index of each row in its dataset, used to look up precomputed targets).
    """
    width = max(len(e.input_ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if item_ids is not None:
        batch["item_ids"] = torch.tensor(item_ids, dtype=torch.long)
    return batch


def sequence_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels covering every non-padding token (question and answer), for the 'sequence' retain-KL positions."""
    return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` [B, T] of token id lists (what decoding continues)."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq) :] = torch.tensor(seq)
        attention_mask[row, width - len(seq) :] = 1
    return input_ids, attention_mask


def pairing_schedule(num_forget: int, num_retain: int, epochs: int, seed: int) -> list[tuple[int, int]]:
    """(forget index, retain index) pairs for the whole round, epoch after epoch.

    Each epoch visits every forget item once in a seeded random order and pairs it with a retain item drawn
    uniformly at random (the official code's 1:1 pairing). Fixed up front so the retain items a round will use
    are known before training, which lets the retain reference be precomputed. ``num_retain=0`` pairs with -1.
    """
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(epochs):
        order = torch.randperm(num_forget, generator=generator).tolist()
        partners = torch.randint(max(num_retain, 1), (num_forget,), generator=generator).tolist()
        pairs += [(f, r if num_retain else -1) for f, r in zip(order, partners, strict=True)]
    return pairs
