"""TOFU evaluation sets: loading with field checks, the standard splits, and the embedded model's sets.

A ``TofuSets`` holds the five sets the TOFU suite reads:

| set | fields | source |
|---|---|---|
| forget | question, answer, paraphrased_answer, perturbed_answer[k] | forgetXX_perturbed.json |
| retain | same as forget | retain_perturbed.json (first 20 authors of full.json) |
| real_authors, world_facts | question, answer, perturbed_answer[k] | *_perturbed.json |
| holdout | question, answer | holdoutXX.json (authors not in full.json; the MIA non-members) |

For the embedded model (trained on a handful of TOFU authors) the forget and retain sets are that model's authors'
rows of retain_perturbed.json, and the holdout is the rows of authors the model never saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asu.embedded import AUTHOR_ROWS, EMBEDDED_SPECS, EmbeddedSpec, vendored_tofu_dir
from asu.errors import UsageError
from asu.hashing import sha256_json
from asu.qa_file import read_rows

Split = Literal["forget01", "forget05", "forget10"]
SET_NAMES = ("forget", "retain", "real_authors", "world_facts", "holdout")
PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
OPTION_FIELDS = ("question", "answer", "perturbed_answer")
HOLDOUT_FIELDS = ("question", "answer")
REQUIRED_FIELDS = {
    "forget": PERTURBED_FIELDS,
    "retain": PERTURBED_FIELDS,
    "real_authors": OPTION_FIELDS,
    "world_facts": OPTION_FIELDS,
    "holdout": HOLDOUT_FIELDS,
}
RETAIN_PERTURBED_AUTHORS = 20  # retain_perturbed.json == full[:400]: authors 0..19


class EvalDataError(UsageError):
    """An evaluation file or set that cannot be scored; the message names the file, line, field and the fix."""


def _check_item(item: Any, fields: Sequence[str], where: str) -> dict:
    if not isinstance(item, dict):
        got = type(item).__name__
        raise EvalDataError(f"{where}: expected a JSON object with fields {', '.join(fields)}; got {got}")
    for name in fields:
        if name not in item:
            raise EvalDataError(f"{where}: missing field {name!r}; every item needs {', '.join(fields)}")
        value = item[name]
        if name == "perturbed_answer":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                raise EvalDataError(f"{where}: field 'perturbed_answer' must be a non-empty list of non-empty strings")
        elif not isinstance(value, str) or not value.strip():
            raise EvalDataError(f"{where}: field {name!r} must be a non-empty string")
    return item


def load_eval_file(path: str | Path, fields: Sequence[str]) -> list[dict]:
    """Items of a JSON Lines (or JSON array) file, each checked for ``fields``. Errors name file, line and field."""
    rows = read_rows(path, "evaluation file", error=EvalDataError, missing=f"{path}: no such evaluation file")
    items = [_check_item(row, fields, f"{path}:{lineno}") for lineno, row in rows]
    if not items:
        raise EvalDataError(f"{path}: no items; an evaluation set needs at least one")
    return items


def items_digest(items: Iterable[dict]) -> str:
    """sha256 (16 hex digits) of the items' canonical JSON: identifies a set's exact content and order."""
    return sha256_json(list(items))[:16]


@dataclass(frozen=True)
class TofuSets:
    """The five TOFU evaluation sets (see the module docstring) and a name saying where they come from."""

    name: str
    forget: list[dict]
    retain: list[dict]
    real_authors: list[dict]
    world_facts: list[dict]
    holdout: list[dict]

    def __post_init__(self) -> None:
        for set_name in SET_NAMES:
            items = getattr(self, set_name)
            if not items:
                raise EvalDataError(f"TOFU sets {self.name!r}: the {set_name} set is empty; it needs at least one item")
            for i, item in enumerate(items):
                _check_item(item, REQUIRED_FIELDS[set_name], f"TOFU sets {self.name!r}, {set_name} item {i}")

    def digests(self) -> dict[str, str]:
        return {s: items_digest(getattr(self, s)) for s in SET_NAMES}

    def limited(self, limit: int | None) -> TofuSets:
        """The first ``limit`` items of every set (the legacy protocol scores 300); None keeps everything."""
        if limit is None:
            return self
        if limit < 1:
            raise EvalDataError(f"limit must be >= 1 (or None for every item), got {limit}")
        return TofuSets(f"{self.name}[:{limit}]", *(getattr(self, s)[:limit] for s in SET_NAMES))


def standard_sets(split: Split = "forget10", holdout: Literal["holdout01", "holdout05", "holdout10"] | None = None,
                  data_dir: str | Path | None = None) -> TofuSets:
    """The published TOFU evaluation of ``split``: its forget set, retain_perturbed, RA, WF and the matching holdout."""
    root = Path(data_dir) if data_dir else vendored_tofu_dir()
    holdout = holdout or "holdout" + split.removeprefix("forget")
    return TofuSets(
        split,
        forget=load_eval_file(root / f"{split}_perturbed.json", PERTURBED_FIELDS),
        retain=load_eval_file(root / "retain_perturbed.json", PERTURBED_FIELDS),
        real_authors=load_eval_file(root / "real_authors_perturbed.json", OPTION_FIELDS),
        world_facts=load_eval_file(root / "world_facts_perturbed.json", OPTION_FIELDS),
        holdout=load_eval_file(root / f"{holdout}.json", HOLDOUT_FIELDS),
    )


def _author_rows(rows: list[dict], authors: Iterable[int]) -> list[dict]:
    return [row for a in authors for row in rows[a * AUTHOR_ROWS : (a + 1) * AUTHOR_ROWS]]


def embedded_sets(forget_authors: Sequence[int], variant: str | EmbeddedSpec = "default") -> TofuSets:
    """TOFU sets for an embedded model: its ``forget_authors`` vs its other authors; holdout = unseen authors."""
    spec = EMBEDDED_SPECS[variant] if isinstance(variant, str) else variant
    return author_sets(forget_authors, spec.authors, f"embedded-{spec.name}")


def author_sets(forget_authors: Sequence[int], trained_authors: Sequence[int], name: str) -> TofuSets:
    """TOFU sets for a model fine-tuned on ``trained_authors``: ``forget_authors`` vs the other trained authors;
    holdout = authors of retain_perturbed.json the model never saw, as many items as the forget set."""
    unknown = [a for a in forget_authors if a not in trained_authors]
    if not forget_authors or unknown:
        raise EvalDataError(
            f"forget authors {list(forget_authors)} must be a non-empty subset of the model's authors "
            f"{list(trained_authors)}; unknown: {unknown}"
        )
    root = vendored_tofu_dir()
    perturbed = load_eval_file(root / "retain_perturbed.json", PERTURBED_FIELDS)
    unseen = [a for a in range(RETAIN_PERTURBED_AUTHORS) if a not in trained_authors]
    forget = _author_rows(perturbed, forget_authors)
    holdout = [{"question": r["question"], "answer": r["answer"]} for r in _author_rows(perturbed, unseen)]
    if len(holdout) < len(forget):
        msg = f"only {len(holdout)} unseen-author items for a holdout of {len(forget)}; forget fewer authors"
        raise EvalDataError(msg)
    return TofuSets(
        f"{name}-forget{'-'.join(map(str, forget_authors))}",
        forget=forget,
        retain=_author_rows(perturbed, [a for a in trained_authors if a not in forget_authors]),
        real_authors=load_eval_file(root / "real_authors_perturbed.json", OPTION_FIELDS),
        world_facts=load_eval_file(root / "world_facts_perturbed.json", OPTION_FIELDS),
        holdout=holdout[: len(forget)],
    )


__all__ = ["EvalDataError", "SET_NAMES", "TofuSets", "author_sets", "embedded_sets", "items_digest", "load_eval_file",
           "standard_sets"]
