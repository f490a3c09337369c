"""The validation split of a temperature search: nothing the final report scores is used to choose tau.

- forget: the request's own validation items when given; otherwise a seeded share of each subject's items
  (stratified, so every subject of the request is represented and still has items left for the report);
- retain: a seeded sample held out for validation; the rest trains the trials and is what a report scores.

The summary names items by index and SHA-256 only (forget content is sensitive: never logged or reported).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from asu.data import QAItem
from asu.errors import UsageError
from asu.hashing import qa_item_sha256
from asu.passages import is_passage
from pipelines.temperature_search.config import SearchConfig


@dataclass(frozen=True)
class ValidationSplit:
    """Items by role. ``*_index`` are positions in the sets passed in (forget_val_index is None when given)."""

    forget_val: list[QAItem]
    forget_test: list[QAItem]
    retain_val: list[QAItem]
    retain_rest: list[QAItem]
    forget_val_index: list[int] | None
    retain_val_index: list[int]

    def unseen_forget(self, limit: int, seed: int) -> list[QAItem]:
        """Up to ``limit`` forget items outside the validation split (a seeded sample, in request order).

        Trials (``trial_items='validation'``) train on the forget validation items only, so these are questions about
        the same subjects that a trial never saw (``asu.search.halving.run_trial``'s ``unseen``).
        """
        if len(self.forget_test) <= limit:
            return list(self.forget_test)
        picked = sorted(random.Random(seed).sample(range(len(self.forget_test)), limit))
        return [self.forget_test[i] for i in picked]

    def summary(self) -> dict:
        """Sizes, indices and SHA-256 hashes (no text)."""
        return {
            "forget_validation_items": len(self.forget_val),
            "forget_test_items": len(self.forget_test),
            "retain_validation_items": len(self.retain_val),
            "retain_rest_items": len(self.retain_rest),
            "forget_validation_given": self.forget_val_index is None,
            "forget_validation_index": self.forget_val_index,
            "retain_validation_index": self.retain_val_index,
            "forget_validation_sha256": [qa_item_sha256(it) for it in self.forget_val],
            "retain_validation_sha256": [qa_item_sha256(it) for it in self.retain_val],
        }


def round_items(forget: Sequence[QAItem], split: ValidationSplit,
                forget_validation: Sequence[QAItem] | None = None) -> tuple[list[QAItem], list[QAItem]]:
    """(forget, retain) items the round after a search trains on: every forget item (in request order) and the
    request's own validation items, and the retain items outside the search's retain validation sample (held out
    for the before/after utility). Trials with ``SearchConfig.trial_items='round'`` train on exactly these."""
    return [*forget, *(forget_validation or [])], list(split.retain_rest)


def _stratified(num: int, subjects: Sequence[object] | None, fraction: float, rng: random.Random) -> list[int]:
    """Indices of a per-subject seeded sample: round(fraction * n) of each subject, at least 1, never all."""
    groups: dict[str, list[int]] = {}
    for i in range(num):
        groups.setdefault(str(subjects[i]) if subjects is not None else "", []).append(i)
    picked = []
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            continue  # a one-item subject stays whole for the report
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        picked += rng.sample(members, take)
    return sorted(picked)


@dataclass(frozen=True)
class TextItems:
    """A request's items at the grain the search splits: passages cut into pieces (``SearchConfig.
    passage_piece_tokens``), QA items as they were; ``subjects``: one per forget row (a passage's pieces share
    their passage's number, or the file's subject when it gave one: :func:`_piece_subject`)."""

    forget: list[QAItem]
    retain: list[QAItem]
    subjects: list[object] | None


def _piece_subject(number: int, forget: Sequence[QAItem], owners: Sequence[int]) -> str:
    """The subject of a piece of forget row ``number`` (1-based) when the file gave none: its passage when that
    passage has several pieces (each long passage is then in both the validation and the reported pieces); one
    shared subject for the QA items and one for the single-piece passages (a subject of one item is never drawn)."""
    if not is_passage(forget[number - 1]):
        return "qa"
    return f"passage {number}" if owners.count(number) > 1 else "short passages"


def text_items(tokenizer, forget: Sequence[QAItem], retain: Sequence[QAItem], config: SearchConfig,
               subjects: Sequence[object] | None = None, round_config=None) -> TextItems:
    """Check a request's passages and cut them into pieces (unchanged when it has none); raises ``UsageError``
    before any model pass for a passage too short to probe (naming the minimum), for a request whose every
    forget passage is also in the retain set (nothing could be forgotten without unlearning what must stay) and,
    given the round's ``ASUConfig``, for a passage longer than its ``max_passage_chunks`` chunks."""
    from asu.hashing import sha256_text
    from asu.passages import check_passage_lengths, passage_pieces

    if not any(is_passage(it) for it in (*forget, *retain)):
        return TextItems(list(forget), list(retain), None if subjects is None else list(subjects))
    check_passage_lengths(tokenizer, forget, "forget")
    check_passage_lengths(tokenizer, retain, "retain")
    if round_config is not None:  # tokenising is enough to find a passage over the chunk limit
        from asu.data import encode_items

        kw = {"max_length": round_config.max_length, "prompt_format": round_config.prompt_format,
              "chunk_overlap": round_config.chunk_overlap, "max_chunks": round_config.max_passage_chunks}
        for items, what in ((forget, "forget"), (retain, "retain")):
            encode_items(tokenizer, [it for it in items if is_passage(it)], what=what, **kw)
    kept = {sha256_text(it["text"].strip()) for it in retain if is_passage(it)}
    passages = [it for it in forget if is_passage(it)]
    if passages and all(sha256_text(it["text"].strip()) in kept for it in passages):
        raise UsageError(f"every one of the request's {len(passages)} forget passage(s) is also in the retain set: "
                         "a round cannot forget a text while keeping it; remove them from the retain file, or "
                         "withdraw the request")
    size = config.passage_piece_tokens
    forget_rows, owners = passage_pieces(tokenizer, forget, max_tokens=size)
    retain_rows, _ = passage_pieces(tokenizer, retain, max_tokens=size)
    pieces = [subjects[n - 1] if subjects is not None else _piece_subject(n, forget, owners) for n in owners]
    return TextItems(forget_rows, retain_rows, pieces)


def split_validation(
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    config: SearchConfig,
    *,
    subjects: Sequence[object] | None = None,
    forget_validation: Sequence[QAItem] | None = None,
) -> ValidationSplit:
    """Split off the validation items; raises ``ValueError`` (naming the minimum) when a side is too small.

    Args:
        forget, retain: the request's forget items and the retain set.
        subjects: one subject per forget item (e.g. the author); None = one subject.
        forget_validation: the request's own validation items; then every forget item is a test item.
    """
    if subjects is not None and len(subjects) != len(forget):
        raise UsageError(f"subjects has {len(subjects)} entries for {len(forget)} forget items; give one per item")
    rng = random.Random(config.seed)
    minimum = config.min_validation_items
    if forget_validation is not None:
        forget_val, forget_test, forget_index = list(forget_validation), list(forget), None
        hashes = {qa_item_sha256(it) for it in forget_val}
        if any(qa_item_sha256(it) in hashes for it in forget_test):
            raise UsageError("the given forget validation items overlap the forget items; give disjoint sets")
    else:
        forget_index = _stratified(len(forget), subjects, config.forget_validation_fraction, rng)
        chosen = set(forget_index)
        forget_val = [forget[i] for i in forget_index]
        forget_test = [it for i, it in enumerate(forget) if i not in chosen]
    if len(forget_val) < minimum:
        need = (f"pass at least {minimum} validation items" if forget_index is None else
                f"raise forget_validation_fraction (now {config.forget_validation_fraction}) or give the request "
                f"at least {minimum} validation items")
        raise UsageError(
            f"the forget validation split holds {len(forget_val)} item(s), fewer than the minimum "
            f"min_validation_items={minimum} needed to judge a temperature; {need}"
        )
    if not forget_test:
        raise UsageError("no forget item is left for the report after the validation split; add forget items")
    size = config.retain_validation_size
    if len(retain) <= size:
        raise UsageError(
            f"the retain set has {len(retain)} items; the search holds out retain_validation_size={size} for "
            f"validation and needs more left to train on: pass at least {size + 1} retain items or lower "
            f"retain_validation_size (minimum min_validation_items={minimum})"
        )
    retain_index = sorted(rng.sample(range(len(retain)), size))
    held = set(retain_index)
    return ValidationSplit(
        forget_val, forget_test, [retain[i] for i in retain_index],
        [it for i, it in enumerate(retain) if i not in held], forget_index, retain_index,
    )
