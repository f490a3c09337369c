"""Files of the product demo: three forget requests (TOFU authors of the embedded model), optionally a text request,
retain and holdout sets.

Each QA request forgets one author of the embedded default model: 15 of the author's 20 QA pairs are forget records
and 5 are the request's own validation items (held-out questions about the same author), which the temperature
search scores. The text request (``kind: text``) forgets another author's biography as passages: the author's 20
answers joined two by two into 10 passages, 7 to forget and 3 for validation. The retain set is every other
author of the model; the holdout (MIA non-members) is 20 items of TOFU authors the model never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asu.embedded import DEMO_FORGET_AUTHORS, EMBEDDED_SPECS, NUM_TOFU_AUTHORS, tofu_author_items, tofu_items
from asu.errors import UsageError

VALIDATION_EVERY = 4  # every 4th item of an author is a validation item: 5 of 20
MIN_VALIDATION = 5  # the settings search's default min_validation_items
ANSWERS_PER_PASSAGE = 2  # two TOFU answers make a passage past the 80 tokens VerbMem needs (32 + 48)
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


def passage_request_lines(author: int, request_id: str) -> list[dict]:
    """A JSON Lines ``kind: text`` request forgetting TOFU ``author``'s biography as passages (its answers joined
    ``ANSWERS_PER_PASSAGE`` at a time); the last ``TEXT_VALIDATION`` passages are validation passages."""
    answers = [it["answer"] for it in tofu_author_items(author)]
    passages = [" ".join(answers[i:i + ANSWERS_PER_PASSAGE]) for i in range(0, len(answers), ANSWERS_PER_PASSAGE)]
    lines = [{"request_id": request_id, "subject": f"TOFU author {author}'s biography", "kind": "text",
              "requester": "asu-demo", "notes": "demo text request built from TOFU (MIT)"}]
    for i, text in enumerate(passages):
        role = "validation" if i >= len(passages) - TEXT_VALIDATION else "forget"
        lines.append({"record_id": f"p{author}-{i:02d}", "role": role, "text": text})
    return lines


def write_demo_files(folder: Path, variant: str = "default", authors: tuple[int, ...] = DEMO_FORGET_AUTHORS,
                     urgent_author: int | None = None, text_author: int | None = None) -> DemoFiles:
    """Write the retain, holdout and one request file per author (submission order) into ``folder``.

    ``urgent_author``: which of the authors is submitted as urgent (default: the last one submitted).
    ``text_author``: an author whose biography a ``kind: text`` request forgets, submitted last (default: none).
    """
    spec = EMBEDDED_SPECS[variant]
    everyone = (*authors, *(() if text_author is None else (text_author,)))
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
    if text_author is not None:
        path = folder / f"request-passages-author-{text_author}.jsonl"
        lines = passage_request_lines(text_author, f"tofu-passages-{text_author}")
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
