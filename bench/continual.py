"""Five successive forget requests through the real pipeline on the SmolLM2 TOFU target, per teacher source.

Requests (in order): TOFU authors 1 and 2, the real-world scenario ``paris`` (facts the pretrained model knew
before it was fine-tuned on TOFU), TOFU authors 3 and 4 -- each through intake (GX contracts, ledger), the
``continual-unlearning`` Prefect flow (settings search, round, measurement, gate, MLflow registration and
promotion), exactly as a deployment runs them. A TOFU request forgets 15 of an author's 20 QA and keeps the
other 5 as its validation items; the scenario request forgets its 25 facts with the scenario's validation items
and the held-out paraphrases of its facts as validation. The retain set is the target's other authors (0, 5) and
the scenario's neighbouring facts. Fluency is judged by the pretrained SmolLM2 (``fluency_model``).

Run per ``teacher_source``, the chains in lockstep (``previous``: the model the round starts from, smoothed;
``original``: the target, smoothed, for every round). Per round: the chosen settings, the request's forget
efficacy (1 - fact recall) before and after, retain ROUGE-L (utility) against the target's, fluency and refusal
shares of the forget answers, the gate, and every earlier request's forget efficacy now against what was recorded
after its own round (resurgence). Writes ``bench/results/continual.{json,md,png}`` after each round.

    OMP_NUM_THREADS=2 python -m bench.continual [--teacher-source previous original]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from asu.embedded import tofu_author_items

MODEL = "smollm2-135m-tofu"
JUDGE = "smollm2-135m"
TOFU_REQUESTS = (1, 2, 3, 4)
RETAIN_AUTHORS = (0, 5)
HOLDOUT_AUTHOR = 199
SEARCH = {"tau_grid": [1.5, 2.0, 3.0], "stage2_candidates": 2, "max_new_tokens": 64}
#: Attacks on every candidate (``asu.robustness``): the two the literature finds most damaging, cheap on CPU.
ROBUSTNESS = {"attacks": ["relearn", "quantize_4bit"], "max_new_tokens": 64}
GATE = Path(__file__).resolve().parent.parent / "configs" / "gate-demo-real.yaml"
logger = logging.getLogger("bench.continual")


def write_files(folder: Path) -> tuple[Path, Path, list[Path]]:
    """(retain file, holdout file, request files in submission order)."""
    from asu.scenarios import load_scenario
    from pipelines.demo.data import request_lines, scenario_request_lines

    folder.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario("paris")
    retain = folder / "retain.json"
    items = [it for a in RETAIN_AUTHORS for it in tofu_author_items(a)] + scenario.qa_items("retain")
    retain.write_text("\n".join(json.dumps(it) for it in items))
    holdout = folder / "holdout.json"
    holdout.write_text("\n".join(json.dumps(it) for it in tofu_author_items(HOLDOUT_AUTHOR)))
    requests = []
    for author in TOFU_REQUESTS[:2]:
        requests.append(request_lines(author, f"tofu-author-{author}"))
    requests.append(scenario_request_lines(scenario, 0, 1))
    for author in TOFU_REQUESTS[2:]:
        requests.append(request_lines(author, f"tofu-author-{author}"))
    paths = []
    for lines in requests:
        path = folder / f"request-{lines[0]['request_id']}.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in lines))
        paths.append(path)
    return retain, holdout, paths


def chain_settings(teacher_source: str, work: Path, search: dict | None = None) -> dict:
    """The pipeline settings of the chain in ``work`` (its inputs written by :func:`write_files`); ``search``:
    ``SearchConfig`` overrides on top of the bench's :data:`SEARCH`."""
    return {"base_model": MODEL, "retain_file": str(work / "inputs" / "retain.json"),
            "holdout_file": str(work / "inputs" / "holdout.json"), "recipe": "pretrained",
            "search": {**SEARCH, **(search or {})},
            "gate_file": str(GATE), "benchmarks": [], "max_new_tokens": 64, "fluency_model": JUDGE,
            "teacher_source": teacher_source, "robustness": dict(ROBUSTNESS)}


def submit_chain(teacher_source: str, work: Path, search: dict | None = None) -> dict:
    """A fresh work dir holding the five requests, queued; returns the chain's pipeline settings."""
    from asu.data import load_qa_file
    from pipelines.intake.submit import submit_request
    from pipelines.ledger.store import Ledger, default_ledger_url

    work.mkdir(parents=True, exist_ok=False)
    _, _, requests = write_files(work / "inputs")
    settings = chain_settings(teacher_source, work, search)
    ledger = Ledger(default_ledger_url(work))
    try:
        retain = load_qa_file(settings["retain_file"])
        for path in requests:
            submit_request(path, urgent=False, ledger=ledger, retain=retain, actor="bench-continual")
    finally:
        ledger.close()
    return settings


def run(sources: list[str], root: Path, stamp: str, on_round, search: dict | None = None) -> dict[str, list[dict]]:
    """Both chains in lockstep, one request of each in turn (so that, stopped at any point, they have run the same
    rounds); ``on_round(source, rows)`` after each round."""
    from flows.continual import continual_unlearning

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    works = {source: root / f"{stamp}-{source}" for source in sources}
    chains = {source: submit_chain(source, works[source], search) for source in sources}
    rows: dict[str, list[dict]] = {source: [] for source in sources}
    for _ in range(len(TOFU_REQUESTS) + 1):  # one request per flow run: rows are written as each round ends
        for source in sources:
            os.environ["ASU_WORK_DIR"] = str(works[source])
            started = time.perf_counter()
            for outcome in continual_unlearning(chains[source], max_requests=1):
                rows[source].append(round_row(works[source], outcome, time.perf_counter() - started))
                on_round(source, rows[source])
    return rows


def resume(source: str, work: Path, rows: list[dict], on_round, search: dict | None = None) -> list[dict]:
    """Continue the chain in ``work`` (an interrupted run) until its queue is empty, appending to ``rows``
    (``search``: the overrides the chain started with)."""
    from flows.continual import continual_unlearning
    from pipelines.ledger.store import Ledger, default_ledger_url

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["ASU_WORK_DIR"] = str(work)
    settings = chain_settings(source, work, search)
    while True:
        with Ledger(default_ledger_url(work)) as ledger:
            if not ledger.list_requests(["queued", "running"]):
                return rows
        started = time.perf_counter()
        for outcome in continual_unlearning(settings, max_requests=1):
            rows.append(round_row(work, outcome, time.perf_counter() - started))
            on_round(source, rows)


def round_row(work: Path, o: dict, seconds: float) -> dict:
    search = json.loads((work / "rounds" / o["request_id"] / "search" / "search.json").read_text())
    before, after = o.get("before", {}), o.get("after", {})
    row = {"request_id": o["request_id"], "status": o["status"], "reason": o.get("reason"),
           "setting": search.get("setting"), "search_seconds": search.get("seconds"), "seconds": seconds,
           "model_version": o.get("model_version"), "failed_checks": o.get("failed_checks", []),
           "attempt": o.get("attempt", 1), "failed_attempts": o.get("failed_attempts", [])}
    if o.get("settings"):  # the setting the figures are of: the search's choice or, after a gate retry, its runner-up
        row["setting"] = {k: o["settings"][k] for k in ("tau", "learning_rate", "forget_weight")}
    for key in ("forget_efficacy", "forget_rouge", "forget_fact_recall", "retain_rouge", "fluency", "refusal"):
        row[f"{key}_before"], row[f"{key}_after"] = before.get(key), after.get(key)
    row["earlier_after"] = after.get("earlier", {})
    row["attack_recovery"] = {name: r.get("recovery") for name, r in (after.get("robustness") or {}).items()}
    return row


def add_resurgence(rows: list[dict]) -> None:
    """Per row: the largest fall of an earlier request's forget efficacy since its own round (None: none yet)."""
    recorded = {}
    for row in rows:
        falls = [recorded[r] - eff for r, eff in row["earlier_after"].items() if r in recorded]
        row["max_resurgence"] = max(falls) if falls else None
        if row["status"] == "registered":
            recorded[row["request_id"]] = row["forget_efficacy_after"]


def format_markdown(result: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    def g(v):  # a setting as written (3e-05, not the float's repr 3.0000000000000004e-05)
        return v if isinstance(v, str) else f"{v:g}"

    lines = []
    for source, rows in result["runs"].items():
        target = rows[0]["retain_rouge_before"] if rows else None
        lines += [f"teacher_source `{source}` (retain ROUGE-L of the target: {f(target)})", "",
                  "| round | request | status | tau | lr | lambda | forget efficacy | retain ROUGE-L (rel. target) | "
                  "fluent | refusal | max resurgence | recovery: relearn / 4-bit | seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in enumerate(rows, start=1):
            s = r["setting"] or {}
            rec = r.get("attack_recovery") or {}
            rel = None if not target or r["retain_rouge_after"] is None else r["retain_rouge_after"] / target
            retried = "".join(  # gate retries: the settings whose rounds failed before this row's
                f"; tau {g(a['settings']['tau'])} lr {g(a['settings']['learning_rate'])} failed "
                f"{', '.join(a['failed_checks'])} first" for a in r.get("failed_attempts") or ())
            lines.append(
                f"| {k} | {r['request_id']} | {r['status']}{' (' + r['reason'] + ')' if r['reason'] else ''}"
                f"{retried} | "
                f"{g(s.get('tau', '-'))} | {g(s.get('learning_rate', '-'))} | {g(s.get('forget_weight', '-'))} | "
                f"{f(r['forget_efficacy_before'])} -> {f(r['forget_efficacy_after'])} | "
                f"{f(r['retain_rouge_after'])} ({f(rel)}) | {f(r['fluency_after'])} | {f(r['refusal_after'])} | "
                f"{f(r['max_resurgence'])} | {f(rec.get('relearn'))} / {f(rec.get('quantize_4bit'))} | "
                f"{r['seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for source, rows in result["runs"].items():
        x = list(range(1, len(rows) + 1))
        axes[0].plot(x, [r["forget_efficacy_after"] for r in rows], marker="o", label=source)
        axes[1].plot(x, [r["retain_rouge_after"] for r in rows], marker="o", label=source)
        axes[2].plot(x, [r["fluency_after"] for r in rows], marker="o", label=source)
    for ax, title in zip(axes, ("forget efficacy of the round's request", "retain ROUGE-L (utility)",
                                "fluent share of forget answers"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1.05)
        ax.legend(title="teacher_source", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-source", nargs="+", default=["previous", "original"],
                        choices=["previous", "original"])
    parser.add_argument("--work-dir", default="runs/bench_continual")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue the interrupted chain in this work dir (one --teacher-source), appending to "
                             "its rows in the results")
    parser.add_argument("--search", action="append", metavar="KEY=VALUE",
                        help="a SearchConfig override of every round's search (repeatable; give the same ones to "
                             "--resume), e.g. --search trial_items=round")
    args = parser.parse_args(argv)
    from cli.common import parse_overrides

    search = parse_overrides(args.search, "--search") if args.search else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    result_path = out / "continual.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"runs": {}}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    def save(source: str, rows: list[dict]) -> None:
        add_resurgence(rows)
        result["runs"][source] = rows
        result_path.write_text(json.dumps(result, indent=1))
        (out / "continual.md").write_text(format_markdown(result))
        plot(result, out / "continual.png")
        logger.info("round %d of teacher_source=%s written", len(rows), source)

    if args.resume is not None:
        if len(args.teacher_source) != 1:
            parser.error("--resume continues one chain: name its --teacher-source")
        source = args.teacher_source[0]
        resume(source, args.resume, list(result["runs"].get(source, [])), save, search)
    else:
        run(list(args.teacher_source), Path(args.work_dir), stamp, save, search)
    print(format_markdown(result))


if __name__ == "__main__":
    main()
