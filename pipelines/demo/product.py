"""The product demo's parts: its inputs and settings, its submissions, its summary and sample answers.

``flows.demo.run_product_demo`` strings them together around the continual-unlearning flow:

1. :func:`prepare`: build (or reuse) the model; write three forget requests (the last one urgent), the retain set
   and a holdout set into a fresh work dir ``<root>/<UTC time>/`` (earlier demos are kept). On the embedded model
   the requests are three TOFU authors it was trained on; on a real model (``--model smollm2-135m``) they are
   three parts of the real-world scenario ``paris`` (facts the model knows), with the scenario's neighbouring
   facts as the retain set and the settings search of the pretrained recipe;
2. :func:`submit_all`: submit them through the intake (data contracts, ledger);
3. (the flow) temperature search, ASU round, evaluation, gate, MLflow registration and promotion for each
   request, urgent first;
4. :func:`summarise`: the per-round rows (``RoundRecord.table_row``), two sample forget answers per request before
   and after its round, and where things are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.console import progress

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
logger = logging.getLogger(__name__)

DEMO_SEARCH = {
    # A short grid around the paper's stable region keeps the demo within minutes on 2 CPU cores.
    "tau_grid": [1.5, 2.0, 2.5, 3.0],
    "stage2_candidates": 2,
    # The embedded recipe's learning rate is already calibrated for this model (asu.recipes): a ladder around it.
    "lr_multipliers": [1.0, 2.0],
    # The text request validates on its 3 validation passages (the QA requests bring 5 questions each).
    "min_validation_items": 3,
}
#: The authors whose biographies the default demo's text request forgets (ones the QA requests leave alone).
DEMO_TEXT_AUTHORS = (10, 11)


#: The search on a real model: the pretrained recipe's ladder of learning rates around tau values that the
#: scenario's teacher scan brackets, cut to what fits the demo's time on 2 CPU cores.
REAL_DEMO_SEARCH = {"tau_grid": [1.5, 2.0, 3.0], "stage2_candidates": 2, "max_new_tokens": 48}

#: The tiny variant (4 authors, for smoke tests): two requests, a smaller retain validation sample, short rounds.
TINY_DEMO = {
    "authors": (1, 2),
    "settings": {
        "search": {"tau_grid": [2.0, 3.0], "stage2_candidates": 1, "retain_validation_size": 8, "max_new_tokens": 48,
                   "lr_multipliers": [1.0, 2.0],
                   # the 4-author smoke-test model has barely any language: the full fluency floor would refuse
                   # every round there (measured), and this variant exists to exercise the pipeline
                   "fluent_share_floor": 0.6},
        "overrides": {"epochs": 3}, "report_retain_items": 8, "benchmark_limit": 5, "max_new_tokens": 48,
    },
}  # fmt: skip


def demo_settings(files, variant: str, **overrides: Any) -> dict[str, Any]:
    """Pipeline settings of the demo (a dict, as a Prefect deployment would pass them)."""
    return {
        "base_model": f"embedded:{variant}",
        "retain_file": str(files.retain),
        "holdout_file": str(files.holdout),
        "recipe": "embedded",
        "search": dict(DEMO_SEARCH),
        "gate_file": str(CONFIGS / "gate-demo.yaml"),
        "benchmarks": ["wmdp"],
        "benchmark_limit": 20,
        **overrides,
    }


def real_model_settings(files, model: str) -> dict[str, Any]:
    """Pipeline settings of the demo on a real pretrained model (``model``: a named model or a folder)."""
    return {
        "base_model": model,
        "retain_file": str(files.retain),
        "holdout_file": str(files.holdout),
        "recipe": "pretrained",
        "search": dict(REAL_DEMO_SEARCH),
        "gate_file": str(CONFIGS / "gate-demo-real.yaml"),
        "benchmarks": ["wmdp"],
        "benchmark_limit": 20,
        "max_new_tokens": 48,
    }


@dataclass(frozen=True)
class DemoRun:
    """A prepared demo: its work dir, model, files and pipeline settings (a dict, as a deployment passes them)."""

    work: Path
    model: str
    base_dir: Path
    files: Any
    settings: dict[str, Any]


def prepare(root: str | Path, *, variant: str = "default", model: str | None = None,
            authors: tuple[int, ...] | None = None, settings_overrides: dict | None = None) -> DemoRun:
    """A new work dir under ``root`` with the demo's model, request files and settings.

    ``model``: a real pretrained model (a named model such as ``smollm2-135m``, or a folder) instead of the
    embedded ``variant``. The caller makes the work dir the process's (``pipelines.workspace.using_work_dir``).
    """
    from asu.embedded import DEMO_FORGET_AUTHORS, ensure_embedded_model
    from asu.models import resolve_model
    from pipelines.demo.data import write_demo_files, write_scenario_demo_files

    work = Path(root).resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=False)
    if model is not None:
        progress().info("preparing %s (converted once, then cached)", model)
        base_dir = resolve_model(model, progress=True)
        files = write_scenario_demo_files(work / "inputs")
        settings = {**real_model_settings(files, model), **(settings_overrides or {})}
    else:
        progress().info("preparing the embedded %s model (built once, then cached)", variant)
        base_dir = ensure_embedded_model(variant, progress=True)
        tiny = variant == "tiny"
        authors = authors or (TINY_DEMO["authors"] if tiny else DEMO_FORGET_AUTHORS)
        files = write_demo_files(work / "inputs", variant, authors, text_authors=() if tiny else DEMO_TEXT_AUTHORS)
        settings = demo_settings(files, variant, **(TINY_DEMO["settings"] if tiny else {}),
                                 **(settings_overrides or {}))
    return DemoRun(work, model or f"embedded:{variant}", Path(base_dir), files, settings)


def submit_all(run: DemoRun) -> list[dict[str, Any]]:
    """Submit the demo's request files through the intake (contracts, ledger); one row per submission."""
    from asu.qa_file import load_qa_file
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    retain = load_qa_file(run.settings["retain_file"])
    submitted = []
    with Ledger(default_ledger_url(run.work)) as ledger:
        for path, urgent in run.files.requests:
            sub = submit_request(path, urgent=urgent, ledger=ledger, retain=retain, actor="asu-demo")
            submitted.append({"request_id": sub.request_id, "urgent": urgent, "state": sub.state})
    progress().info("submitted %d requests (%s urgent) through the data contracts into the ledger",
                    len(submitted), sum(s["urgent"] for s in submitted))
    return submitted


def summarise(run: DemoRun, submitted: list[dict], results: list[dict], seconds: float) -> dict[str, Any]:
    """The demo's summary: per-round rows from the records, sample answers, the champion, where to look."""
    from pipelines.settings import PipelineSettings
    from pipelines.tracking.registry import ModelRegistry
    from pipelines.tracking.runs import Tracker, tracking_uri

    config = PipelineSettings.from_dict(run.settings)
    champion = ModelRegistry(Tracker(), config.model_name).champion()
    urgent = {s["request_id"]: s["urgent"] for s in submitted}
    samples = sample_answers(run.base_dir, run.work, run.files, results, config)
    rounds = [{"request_id": r["request_id"], "urgent": urgent.get(r["request_id"], False), "status": r["status"],
               "table": r["table"], "samples": samples.get(r["request_id"], [])} for r in results]
    return {"model": run.model, "work_dir": str(run.work), "submitted": submitted, "rounds": rounds,
            "champion": champion.version if champion else None, "mlflow_uri": tracking_uri(work=run.work),
            "seconds": seconds}


def sample_answers(base_dir: Path, work: Path, files, outcomes: list[dict], config, per_request: int = 2
                   ) -> dict[str, list[dict[str, str]]]:
    """Greedy answers to the first ``per_request`` forget questions of each processed request, by the model its
    round started from and by the round's model: {request id: [{"question", "before", "after"}]}.

    The demo's requests are its own public files, so showing their text is fine here (the pipeline itself never
    copies request content into logs or reports).
    """
    from asu.evaluation import generate_answers
    from asu.modeling import load_model_and_tokenizer

    loaded: dict[Path, tuple] = {}  # the model the next round starts from stays loaded (one load per model)

    def answers(model_dir: Path, questions: list[str]) -> list[str]:
        if model_dir not in loaded:
            loaded.clear()
            loaded[model_dir] = load_model_and_tokenizer(model_dir, placement=config.placement)
        model, tokenizer = loaded[model_dir]
        return generate_answers(model, tokenizer, questions, prompt_format=config.round.prompt_format,
                                max_new_tokens=config.max_new_tokens)

    questions = {}
    for path, _ in files.requests:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        forget = [line["question"] for line in lines[1:] if line.get("role") == "forget" and "question" in line]
        questions[lines[0]["request_id"]] = forget[:per_request]
    current, out = base_dir, {}
    for o in outcomes:  # processing order: each round starts from the model the previous one promoted
        round_model = work / "rounds" / o["request_id"] / "model"
        asked = questions.get(o["request_id"], [])
        if not asked or not (round_model / "config.json").is_file():
            continue
        before = answers(current, asked)
        after = answers(round_model, asked)
        out[o["request_id"]] = [{"question": q, "before": b, "after": a} for q, b, a in zip(asked, before, after,
                                                                                          strict=True)]
        if o.get("promoted"):
            current = round_model
    return out


def _clip(text: str, width: int = 96) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(s: dict[str, Any]) -> str:
    """The per-round table (``pipelines.round.record.format_rounds``), sample answers and where to look next."""
    from pipelines.round.record import format_rounds

    urgent = {r["request_id"]: r["urgent"] for r in s["rounds"]}
    rows = [format_rounds([r["table"] for r in s["rounds"]], urgent=urgent)]
    samples = [r for r in s["rounds"] if r.get("samples")]
    if samples:
        rows += ["", "sample forget answers, before -> after the request's round:"]
    for r in samples:
        for item in r["samples"]:  # two per request (sample_answers)
            rows += [f"  [{r['request_id']}] {_clip(item['question'])}",
                     f"      before: {_clip(item['before'])}", f"      after:  {_clip(item['after'])}"]
    work = s["work_dir"]
    rows += [
        "",
        f"champion: version {s['champion']} of the registered model (alias 'champion'); {s['seconds']:.0f} s in all",
        f"work dir: {work}",
        f"  evidence reports: {work}/reports/<request id>/report.md   (asu report <request id> --work-dir {work})",
        f"  ledger:           asu status --work-dir {work}",
        f"  MLflow UI:        mlflow ui --backend-store-uri {s['mlflow_uri']}",
        "  Prefect UI:       prefect server start   (this demo used Prefect's ephemeral API; see README)",
    ]
    return "\n".join(rows)


__all__ = ["DemoRun", "demo_settings", "format_summary", "prepare", "real_model_settings", "submit_all", "summarise"]
