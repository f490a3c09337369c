"""Real-world unlearning scenarios: facts a real pretrained model already knows, to forget or to keep.

A scenario is one JSON object in this folder (``<name>.json``)::

    {"name": "paris", "subject": "...", "description": "...", "source": "...",
     "forget": [QA, ...], "forget_probes": [PROBE, ...],
     "retain": [QA, ...], "retain_probes": [PROBE, ...],
     "validation": [QA, ...], "retain_validation": [QA, ...]}

- ``QA``: ``{"question", "answer", "keywords"}``; ``answer`` is a short correct sentence (what a round trains
  on), ``keywords`` the lowercase alternatives any one of which in a generated answer marks it correct
  (:func:`keyword_hit`).
- ``PROBE``: ``{"question", "keywords", "paraphrase_of"}``: a held-out rewording of one fact, never trained on;
  ``paraphrase_of`` indexes ``forget`` (for ``forget_probes``) or ``retain`` (for ``retain_probes``).
- ``validation`` / ``retain_validation``: extra forget-subject / neighbouring QA for a hyper-parameter search.

Forget efficacy is the drop of :func:`hit_rate` on ``forget_probes`` (greedy answers, chat template), utility
its stability on ``retain_probes``. Stdlib only; :meth:`Scenario.qa_items` gives ``asu.data`` QA items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asu.errors import NotFoundError, UsageError

SCENARIO_DIR = Path(__file__).resolve().parent

QA_SPLITS = ("forget", "retain", "validation", "retain_validation")
PROBE_SPLITS = {"forget_probes": "forget", "retain_probes": "retain"}  # probe split -> split it paraphrases


@dataclass(frozen=True)
class Scenario:
    """One scenario as loaded (items are plain dicts as in the file, keywords lowercased)."""

    name: str
    subject: str
    description: str
    source: str
    forget: list[dict]
    forget_probes: list[dict]
    retain: list[dict]
    retain_probes: list[dict]
    validation: list[dict]
    retain_validation: list[dict]

    def qa_items(self, split: str) -> list[dict[str, str]]:
        """``{"question", "answer"}`` items of a QA split (``forget``, ``retain``, ``validation``, ...)."""
        if split not in QA_SPLITS:
            raise NotFoundError(f"{split!r} is not a QA split; choose one of {', '.join(QA_SPLITS)}")
        return [{"question": it["question"], "answer": it["answer"]} for it in getattr(self, split)]


def available_scenarios() -> list[str]:
    """Names of the scenarios shipped in this folder, sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))


def load_scenario(name: str) -> Scenario:
    """The shipped scenario ``name``; KeyError (listing the available names) when there is none."""
    names = available_scenarios()
    if name not in names:
        raise NotFoundError(f"unknown scenario {name!r}; available: {', '.join(names) or '(none)'}")
    path = SCENARIO_DIR / f"{name}.json"
    scenario = load_scenario_file(path)
    if scenario.name != name:
        raise UsageError(f"{path}: field 'name' is {scenario.name!r}, not the file name {name!r}")
    return scenario


def load_scenario_file(path: str | Path) -> Scenario:
    """Read and check a scenario file; a malformed one raises ValueError naming the file and the field.

    Checks: every split is a list of objects with non-empty string questions (and answers for QA items) and
    a non-empty list of non-empty keywords; ``forget`` and ``retain`` are non-empty; each probe's
    ``paraphrase_of`` is an index into the split it paraphrases; no probe question equals (ignoring case and
    spacing) a ``forget`` or ``retain`` question.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a scenario file holds one JSON object")

    def fail(field: str, why: str) -> ValueError:
        return ValueError(f"{path}: field {field!r} {why}")

    texts = {}
    for key in ("name", "subject", "description", "source"):
        value = raw.get(key, "" if key in ("description", "source") else None)
        if not isinstance(value, str) or (key in ("name", "subject") and not value.strip()):
            raise fail(key, "must be a non-empty string" if key in ("name", "subject") else "must be a string")
        texts[key] = value
    splits: dict[str, list[dict]] = {}
    for split in (*QA_SPLITS, *PROBE_SPLITS):
        rows = raw.get(split)
        if not isinstance(rows, list):
            raise fail(split, "must be a list (possibly empty)")
        if split in ("forget", "retain") and not rows:
            raise fail(split, "must hold at least one item")
        splits[split] = [_check_item(row, f"{split}[{i}]", split in PROBE_SPLITS, fail) for i, row in enumerate(rows)]
    trained = {_norm(it["question"]) for split in ("forget", "retain") for it in splits[split]}
    for split, target in PROBE_SPLITS.items():
        for i, probe in enumerate(splits[split]):
            index = probe["paraphrase_of"]
            if not 0 <= index < len(splits[target]):
                raise fail(f"{split}[{i}].paraphrase_of", f"is {index}, not an index into {target} "
                           f"(0..{len(splits[target]) - 1})")
            if _norm(probe["question"]) in trained:
                raise fail(f"{split}[{i}].question", "repeats a forget/retain question; probes must be held out")
    return Scenario(**texts, **splits)


def _check_item(row, field: str, probe: bool, fail) -> dict:
    if not isinstance(row, dict):
        raise fail(field, "must be an object")
    keys = ("question",) if probe else ("question", "answer")
    for key in keys:
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise fail(f"{field}.{key}", "must be a non-empty string")
    keywords = row.get("keywords")
    if (not isinstance(keywords, list) or not keywords
            or not all(isinstance(k, str) and k.strip() for k in keywords)):
        raise fail(f"{field}.keywords", "must be a non-empty list of non-empty strings")
    item = {key: row[key] for key in keys}
    item["keywords"] = [k.strip().lower() for k in keywords]
    if probe:
        index = row.get("paraphrase_of")
        if not isinstance(index, int) or isinstance(index, bool):
            raise fail(f"{field}.paraphrase_of", "must be an integer index")
        item["paraphrase_of"] = index
    return item


def _norm(text: str) -> str:
    """Lowercase, straight quotes, single spaces: the form keywords and questions are compared in."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return " ".join(text.lower().split())


def keyword_hit(answer: str, keywords: Sequence[str]) -> bool:
    """True when any keyword occurs in ``answer`` as a whole word or phrase, ignoring case.

    "Whole" means the keyword is not glued to a letter, digit or underscore on either side: ``"1879"`` hits
    ``"born in 1879."`` but not ``"18790"``, ``"german"`` does not hit ``"germane"``. Case, curly quotes and
    runs of whitespace are normalised on both sides (so ``"world's fair"`` hits ``"World’s  Fair"``);
    punctuation inside a keyword must match literally (list ``"notre-dame"`` and ``"notre dame"`` both).
    Blank keywords are ignored; no keywords never hit.
    """
    text = _norm(answer)
    for keyword in keywords:
        key = _norm(keyword)
        if key and re.search(r"(?<!\w)" + re.escape(key) + r"(?!\w)", text):
            return True
    return False


def hit_rate(answers: Sequence[str], probes: Sequence[Mapping]) -> float:
    """Share of ``answers`` that :func:`keyword_hit` the ``keywords`` of the probe (or QA item) at their index."""
    if len(answers) != len(probes):
        raise UsageError(f"{len(answers)} answers for {len(probes)} probes; pass one answer per probe")
    if not probes:
        raise UsageError("no probes: a hit rate needs at least one")
    return sum(keyword_hit(a, p["keywords"]) for a, p in zip(answers, probes, strict=True)) / len(probes)
