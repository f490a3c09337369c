"""Files of the product demo: three forget requests (TOFU authors of the embedded model), optionally a text request,
retain and holdout sets.

Each QA request forgets one author of the embedded default model: 15 of the author's 20 QA pairs are forget records
and 5 are the request's own validation items (held-out questions about the same author), which the temperature
search scores. The text request (``kind: text``) forgets two other authors' biographies as passages: their 40
answers joined in order into passages of at least 70 words (10 for the demo's authors), the last 3 for validation.
The retain set is every other author of the model; the holdout (MIA non-members) is 20 items of TOFU authors the
model never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asu.embedded import DEMO_FORGET_AUTHORS, EMBEDDED_SPECS, NUM_TOFU_AUTHORS, tofu_author_items, tofu_items
from asu.errors import UsageError

VALIDATION_EVERY = 4  # every 4th item of an author is a validation item: 5 of 20
MIN_VALIDATION = 5  # the settings search's default min_validation_items
#: A passage gets answers until it has this many words: past the 80 tokens VerbMem needs (32 + 48) with room to
#: spare (70 words made 112-168 tokens with the embedded model's tokenizer; single answers run from 15 words).
PASSAGE_MIN_WORDS = 70
TEXT_VALIDATION = 3  # the text request's last 3 passages are its validation passages


@dataclass(frozen=True)
class DemoFiles:
    """Paths written by ``write_demo_files``; ``requests``: (request file, urgent) in submission order."""

    retain: Path
    holdout: Path
    requests: list[tuple[Path, bool]]


def request_lines(author: int, request_id: str) -> list[dict]:
    """A JSON Lines request forgetting TOFU ``author``: header line, then forget and validation records."""
    lines = [{"request_id": request_id, "subject": f"TOFU author {author}", "kind": "qa",
              "requester": "asu-demo", "notes": "demo request built from TOFU (MIT)"}]
    for i, item in enumerate(tofu_author_items(author)):
        role = "validation" if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "forget"
        lines.append({"record_id": f"a{author}-{i:02d}", "role": role, **item})
    return lines


def biography_passages(authors: tuple[int, ...]) -> list[str]:
    """The TOFU ``authors``' answers, in order, joined into passages of at least ``PASSAGE_MIN_WORDS`` words (a
    short remainder joins the last passage)."""
    passages: list[str] = []
    current: list[str] = []
    for item in tofu_items(authors):
        current.append(item["answer"])
        if sum(len(a.split()) for a in current) >= PASSAGE_MIN_WORDS:
            passages.append(" ".join(current))
            current = []
    if current:
        passages[-1:] = [" ".join([*passages[-1:], *current])]
    return passages


def passage_request_lines(authors: tuple[int, ...], request_id: str) -> list[dict]:
    """A JSON Lines ``kind: text`` request forgetting the TOFU ``authors``' biographies as passages
    (:func:`biography_passages`); the last ``TEXT_VALIDATION`` passages are validation passages."""
    passages = biography_passages(authors)
    names = " and ".join(str(a) for a in authors)
    lines = [{"request_id": request_id, "subject": f"biographies of TOFU authors {names}", "kind": "text",
              "requester": "asu-demo", "notes": "demo text request built from TOFU (MIT)"}]
    for i, text in enumerate(passages):
        role = "validation" if i >= len(passages) - TEXT_VALIDATION else "forget"
        lines.append({"record_id": f"passage-{i:02d}", "role": role, "text": text})
    return lines


def write_demo_files(folder: Path, variant: str = "default", authors: tuple[int, ...] = DEMO_FORGET_AUTHORS,
                     urgent_author: int | None = None, text_authors: tuple[int, ...] = ()) -> DemoFiles:
    """Write the retain, holdout and one request file per author (submission order) into ``folder``.

    ``urgent_author``: which of the authors is submitted as urgent (default: the last one submitted).
    ``text_authors``: authors whose biographies a ``kind: text`` request forgets, submitted last (default: none).
    """
    spec = EMBEDDED_SPECS[variant]
    everyone = (*authors, *text_authors)
    missing = [a for a in everyone if a not in spec.authors]
    if missing or not authors or len(set(everyone)) != len(everyone):
        raise UsageError(f"demo authors {list(everyone)} must be distinct authors of the {variant} model "
                         f"{list(spec.authors)}")
    urgent_author = authors[-1] if urgent_author is None else urgent_author
    folder.mkdir(parents=True, exist_ok=True)
    retain = folder / "retain.json"
    retain.write_text("\n".join(json.dumps(it) for it in tofu_items(a for a in spec.authors if a not in everyone)))
    unseen = next(a for a in range(NUM_TOFU_AUTHORS) if a not in spec.authors)
    holdout = folder / "holdout.json"
    holdout.write_text("\n".join(json.dumps(it) for it in tofu_author_items(unseen)))
    requests = []
    for author in authors:
        path = folder / f"request-author-{author}.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in request_lines(author, f"tofu-author-{author}")))
        requests.append((path, author == urgent_author))
    if text_authors:
        path = folder / "request-passages.jsonl"
        lines = passage_request_lines(text_authors, "tofu-passages")
        path.write_text("\n".join(json.dumps(line) for line in lines))
        requests.append((path, False))
    return DemoFiles(retain, holdout, requests)





def scenario_request_lines(scenario, part: int, parts: int) -> list[dict]:
    """A JSON Lines request forgetting part ``part`` (0-based) of ``parts`` of a real-world scenario's facts.

    The scenario's forget items are cut into ``parts`` contiguous chunks (a scenario lists its facts grouped by
    topic). Validation items (held-out questions the search scores) are the scenario's validation items, dealt
    round-robin to the parts, plus the held-out paraphrase probes of the part's own facts, answered with the fact's
    answer.
    """
    forget = scenario.qa_items("forget")
    size = -(-len(forget) // parts)
    chosen = range(part * size, min(len(forget), (part + 1) * size))
    validation = scenario.qa_items("validation")[part::parts] + [
        {"question": probe["question"], "answer": forget[probe["paraphrase_of"]]["answer"]}
        for probe in scenario.forget_probes if probe["paraphrase_of"] in chosen]
    if not chosen or len(validation) < MIN_VALIDATION:
        raise UsageError(f"scenario {scenario.name!r} has too few forget ({len(forget)}) or validation items for "
                         f"{parts} requests (part {part + 1} gets {len(validation)} validation items, the search "
                         f"needs {MIN_VALIDATION}); use fewer parts")
    lines = [{"request_id": f"{scenario.name}-part-{part + 1}", "subject": f"{scenario.subject} ({part + 1}/{parts})",
              "kind": "qa", "requester": "asu-demo", "notes": f"demo request built from the {scenario.name} scenario"}]
    for role, items in (("forget", [forget[i] for i in chosen]), ("validation", validation)):
        lines += [{"record_id": f"{scenario.name}-{part + 1}-{role[0]}{i:02d}", "role": role, **item}
                  for i, item in enumerate(items)]
    return lines


def write_scenario_demo_files(folder: Path, scenario_name: str = "paris", parts: int = 3) -> DemoFiles:
    """The demo on a real pretrained model: ``parts`` requests, each forgetting a part of a real-world scenario's
    facts (the model knows them; the last request is urgent), the scenario's neighbouring facts as the retain set
    and a TOFU author (invented, known to no model) as the holdout."""
    from asu.scenarios import load_scenario

    scenario = load_scenario(scenario_name)
    folder.mkdir(parents=True, exist_ok=True)
    retain = folder / "retain.json"
    retain.write_text("\n".join(json.dumps(it) for it in scenario.qa_items("retain")))
    holdout = folder / "holdout.json"
    holdout.write_text("\n".join(json.dumps(it) for it in tofu_author_items(NUM_TOFU_AUTHORS - 1)))
    requests = []
    for part in range(parts):
        lines = scenario_request_lines(scenario, part, parts)
        path = folder / f"request-{lines[0]['request_id']}.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in lines))
        requests.append((path, part == parts - 1))
    return DemoFiles(retain, holdout, requests)


__all__ = ["DemoFiles", "request_lines", "scenario_request_lines", "write_demo_files", "write_scenario_demo_files"]
