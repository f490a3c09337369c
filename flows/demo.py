"""`asu demo`: the whole product on the embedded model, end to end, on one machine.

1. build (or reuse) the embedded model; write three forget requests (three TOFU authors, the last one urgent),
   the retain set and a holdout set into a fresh work dir ``<root>/<UTC time>/`` (earlier demos are kept);
2. submit them through the intake (data contracts, ledger);
3. run ``continual_unlearning`` through Prefect (ephemeral API): temperature search, ASU round, evaluation, gate,
   MLflow registration and promotion for each request, urgent first;
4. return a per-round summary (tau chosen, forget and retain figures, gate, model version) and where things are.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEMO_SEARCH = {
    # A short grid around the paper's stable region keeps the demo within minutes on 2 CPU cores.
    "tau_grid": [1.5, 2.0, 2.5, 3.0],
    "stage2_candidates": 2,
    # The embedded recipe's learning rate is already calibrated for this model (asu.recipes): a ladder around it.
    "lr_multipliers": [1.0, 2.0],
}


#: The tiny variant (4 authors, for smoke tests): two requests, a smaller retain validation sample, short rounds.
TINY_DEMO = {
    "authors": (1, 2),
    "settings": {
        "search": {"tau_grid": [2.0, 3.0], "stage2_candidates": 1, "retain_validation_size": 8, "max_new_tokens": 48,
                   "lr_multipliers": [1.0, 2.0]},
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
        "gate_file": str(Path(__file__).resolve().parent.parent / "configs" / "gate-demo.yaml"),
        "benchmarks": ["wmdp"],
        "benchmark_limit": 20,
        **overrides,
    }


def run_product_demo(root: str | Path = "runs/demo", *, variant: str = "default",
                     authors: tuple[int, ...] | None = None, settings_overrides: dict | None = None) -> dict[str, Any]:
    """Run the demo in a new work dir under ``root``; returns the summary (rounds, champion, locations)."""
    from asu.embedded import DEMO_FORGET_AUTHORS, ensure_embedded_model
    from pipelines.demo_data import write_demo_files

    started = time.perf_counter()
    work = Path(root).resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=False)
    os.environ["ASU_WORK_DIR"] = str(work)  # ledger, MLflow store, rounds and reports all live here
    ensure_embedded_model(variant, progress=True)
    tiny = variant == "tiny"
    authors = authors or (TINY_DEMO["authors"] if tiny else DEMO_FORGET_AUTHORS)
    files = write_demo_files(work / "inputs", variant, authors)
    settings = demo_settings(files, variant, **(TINY_DEMO["settings"] if tiny else {}), **(settings_overrides or {}))

    from asu.data import load_qa_file
    from flows.continual import continual_unlearning
    from pipelines.intake import submit_request
    from pipelines.ledger import Ledger, default_ledger_url
    from pipelines.registry import ModelRegistry
    from pipelines.settings import PipelineSettings
    from pipelines.tracking import Tracker, tracking_uri

    config = PipelineSettings.from_dict(settings)
    retain = load_qa_file(config.retain_file)
    ledger = Ledger(default_ledger_url(work))
    submitted = []
    try:
        for path, urgent in files.requests:
            sub = submit_request(path, urgent=urgent, ledger=ledger, retain=retain, actor="asu-demo")
            submitted.append({"request_id": sub.request_id, "urgent": urgent, "state": sub.state})
    finally:
        ledger.close()
    outcomes = continual_unlearning(settings)
    champion = ModelRegistry(Tracker(), config.model_name).champion()
    urgent = {s["request_id"]: s["urgent"] for s in submitted}
    rounds = [{
        "request_id": o["request_id"], "urgent": urgent.get(o["request_id"], False), "status": o["status"],
        "tau": o.get("tau"), "model_version": o.get("model_version"), "promoted": o.get("promoted", False),
        "forget_rouge_before": o.get("before", {}).get("forget_rouge"),
        "forget_rouge_after": o.get("after", {}).get("forget_rouge"),
        "retain_rouge_before": o.get("before", {}).get("retain_rouge"),
        "retain_rouge_after": o.get("after", {}).get("retain_rouge"),
        "fluency_after": o.get("after", {}).get("fluency"),
        "earlier_efficacy_after": o.get("after", {}).get("earlier", {}),
        "failed_checks": o.get("failed_checks", []), "report": o.get("report"),
    } for o in outcomes]  # fmt: skip
    return {
        "work_dir": str(work),
        "submitted": submitted,
        "rounds": rounds,
        "champion": champion.version if champion else None,
        "mlflow_uri": tracking_uri(work=work),
        "seconds": time.perf_counter() - started,
    }


def format_summary(s: dict[str, Any]) -> str:
    """The per-round table and where to look next."""

    def fmt(v):
        return "   -  " if v is None else f"{v:6.3f}"

    rows = [
        f"{'request':<16}{'urgent':>7}{'tau':>6}  {'forget ROUGE-L':>16}  {'retain ROUGE-L':>16}"
        f"{'fluent':>8}  {'gate':<12}{'version':>8}",
    ]
    for r in s["rounds"]:
        tau = "  -  " if r["tau"] is None else f"{r['tau']:5.2f}"
        gate = "passed" if r["status"] == "registered" else "FAILED"
        version = r["model_version"] or "-"
        rows.append(
            f"{r['request_id']:<16}{'yes' if r['urgent'] else 'no':>7}{tau:>6}  "
            f"{fmt(r['forget_rouge_before'])}->{fmt(r['forget_rouge_after'])}  "
            f"{fmt(r['retain_rouge_before'])}->{fmt(r['retain_rouge_after'])}{fmt(r['fluency_after']):>8}  "
            f"{gate:<12}{version:>8}"
        )
        if r["failed_checks"]:
            rows.append(f"{'':<16}failed checks: {', '.join(r['failed_checks'])}")
    work = s["work_dir"]
    rows += [
        "",
        f"champion: version {s['champion']} of the registered model (alias 'champion'); {s['seconds']:.0f} s in all",
        f"work dir: {work}",
        f"  evidence reports: {work}/reports/<request id>/report.md   (asu report <request id>)",
        f"  ledger:           asu status --work-dir {work}",
        f"  MLflow UI:        mlflow ui --backend-store-uri {s['mlflow_uri']}",
        "  Prefect UI:       prefect server start   (this demo used Prefect's ephemeral API; see README)",
    ]
    return "\n".join(rows)


__all__ = ["demo_settings", "format_summary", "run_product_demo"]
