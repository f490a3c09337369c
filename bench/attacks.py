"""`python -m bench.attacks`: every method's chosen model of `bench.realmodel` under the robustness attacks.

Forgotten knowledge can be hidden rather than gone (``realmodel.md`` section 4). For each setting of the real-model
benchmark (``scenario``, ``tofu``) and each method in ``bench/results/realmodel.json`` (ASU as the product runs it,
ASU with fixed grids, every baseline), this rebuilds the model that method's own search chose there (one seeded
round at the recorded settings, the same data; ``asu_auto`` replays the product's final round at the setting its
search chose) and runs ``asu.robustness.attack`` on the forget QA the round trained on:

- ``relearn``: 1 epoch of fine-tuning on the forget QA, lr 2e-5, batch 32 (every item: the sets are smaller);
  on TOFU the retain model, which never saw the forget author, is relearned alongside once, to show how much the
  same steps teach from scratch;
- ``quantize_8bit`` / ``quantize_4bit``: round-to-nearest weight quantisation (groups of 128);
- ``prefix`` ("Sure, here is the answer:"), ``best_of_n`` (8 samples at temperatures 0.7, 1.0, 1.5);
- ``paraphrase`` (scenario only: its held-out probes ask the forget facts in other words; TOFU has no
  paraphrased questions).

Each figure is the mean fact recall of the forget answers (the share of the reference answer's facts stated);
``base`` is the model before unlearning, the level a complete recovery returns to. The rebuilt model's selection
score is recomputed beside the recorded one, so a reader sees that the attacked model is the benchmarked one.

Writes ``attacks.json`` and ``attacks.md`` to ``--out`` after every method (a rerun keeps the rows of methods it
does not run again).

    python -m bench.attacks --setting scenario tofu --out bench/results
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

from asu.config import ASUConfig
from asu.fluency import FluencyJudge
from asu.modeling import load_model_and_tokenizer
from asu.robustness import RobustnessConfig, attack
from asu.trainer import run_round
from bench.realmodel import AUTO, BASE_ROUND, METHODS, Setting, product_round, selection_figures, selection_score

logger = logging.getLogger(__name__)

BASE = "base"
ATTACKS = ("relearn", "quantize_8bit", "quantize_4bit", "prefix", "best_of_n")
#: Where ``asu_auto``'s model comes from: its recorded chosen setting replayed with today's ``pretrained`` recipe,
#: or the product's search run again (the replay is only the benchmarked model while the recipe is unchanged).
AutoSource = Literal["replay", "search"]
PROTOCOLS = RobustnessConfig()  # the published protocols (asu.robustness defaults)


def rebuild(setting: Setting, method: str, row: dict, out: Path) -> Path:
    """The model ``method`` chose in the recorded benchmark row, rebuilt into ``out`` (or the unchanged model)."""
    if method == BASE or (method == AUTO and row.get("status", "chosen") != "chosen"):
        return setting.model_dir
    shutil.rmtree(out, ignore_errors=True)
    if method == AUTO:  # the product's final round (pipelines.round.unlearn.auto_unlearn) at the chosen setting
        from asu.recipes import get_recipe
        from pipelines.round.unlearn import final_round

        return final_round(setting.model_dir, setting.forget, setting.product_retain,
                           replace(get_recipe("pretrained"), **row["chosen"]), setting.search_config(), out,
                           forget_validation=setting.search_validation).model_dir
    config = ASUConfig.from_dict({**BASE_ROUND, **row["chosen"]})
    return run_round(setting.model_dir, setting.forget, setting.retain, config, out, progress=False).model_dir


def search_again(setting: Setting, out: Path) -> tuple[Path, dict]:
    """ASU as the product runs it today (``bench.realmodel.product_round``) into ``out``; returns the model (the
    unchanged one when nothing was chosen) and a row like a recorded one (no recorded selection)."""
    model_dir, result = product_round(setting, out)
    row = {"chosen": result["setting"] or {}, "status": result["status"], "selection": None,
           "search_seconds": result["seconds"]["search"]}
    return model_dir, row


def paraphrase_items(setting: Setting) -> list[dict] | None:
    """Scenario probes as QA items (the question in other words, the answer of the forget item it rephrases)."""
    if not setting.name.startswith("scenario:"):
        return None
    from asu.scenarios import load_scenario

    sc = load_scenario(setting.name.split(":", 1)[1])
    return [{"question": p["question"], "answer": sc.forget[p["paraphrase_of"]]["answer"]} for p in sc.forget_probes]


def attack_method(setting: Setting, method: str, row: dict, judge: FluencyJudge, base: dict, work: Path,
                  robustness: RobustnessConfig, reference=None, auto_source: AutoSource = "replay") -> dict:
    """Rebuild ``method``'s chosen model (``asu_auto`` with ``auto_source='search'``: search again), check it
    against the recorded selection figures, attack it."""
    started = time.perf_counter()
    if method == AUTO and auto_source == "search":
        model_dir, row = search_again(setting, work / method)
    else:
        model_dir = rebuild(setting, method, row, work / method)
    round_seconds = time.perf_counter() - started
    model, tokenizer = load_model_and_tokenizer(model_dir)
    rebuilt = (None if method == BASE else  # the base model's figures are ``base`` itself
               selection_score(selection_figures(model, tokenizer, setting, judge), base))
    paraphrases = paraphrase_items(setting)
    config = replace(robustness, attacks=(*ATTACKS, "paraphrase") if paraphrases else ATTACKS)
    report = attack(model, tokenizer, setting.forget, config, paraphrases=paraphrases, reference=reference)
    del model
    if model_dir != setting.model_dir:
        shutil.rmtree(model_dir, ignore_errors=True)
    logger.warning("%s %s: plain fact recall %.3f; %s", setting.name, method, report.baseline_fact_recall,
                   ", ".join(f"{k} {r.fact_recall:.3f}" for k, r in report.results.items()))
    return {"method": method, "chosen": row.get("chosen", {}), "status": row.get("status"),
            "source": "search" if "search_seconds" in row else "replay" if method != BASE else "-",
            "search_seconds": row.get("search_seconds"),
            # Every part, not just the score: forget score and utility come from greedy answers alone, so they
            # show the rebuilt model is the benchmarked one even where the fluency judge changed since.
            "recorded_selection": row.get("selection"), "rebuilt_selection": rebuilt,
            "robustness": report.to_dict(), "round_seconds": round_seconds, "seconds": time.perf_counter() - started}


def settings_by_name(names: Sequence[str]) -> list[Setting]:
    from bench.realmodel import scenario_setting
    from bench.realmodel_tofu import tofu_setting

    factories = {"scenario": scenario_setting, "tofu": tofu_setting}
    return [factories[name]() for name in names]


def run_attacks_bench(settings: Sequence[Setting], methods: Sequence[str], recorded: dict, work_dir: Path,
                      out_dir: Path | None = None, robustness: RobustnessConfig = PROTOCOLS,
                      auto_source: AutoSource = "replay") -> dict:
    """Attack every method's chosen model of ``recorded`` (a ``realmodel.json``) on every setting with the attacks
    of ``robustness`` (its defaults are the published protocols; ``attacks`` is set per setting)."""
    previous = Path(out_dir or ".") / "attacks.json"
    result = json.loads(previous.read_text()) if out_dir is not None and previous.is_file() else {"settings": {}}
    result["attacks"] = robustness.to_dict()
    for setting in settings:
        rows_recorded = recorded["settings"].get(setting.name, {}).get("rows", {})
        missing = [m for m in methods if m != BASE and m not in rows_recorded
                   and not (m == AUTO and auto_source == "search")]
        if missing:
            raise SystemExit(f"bench/results/realmodel.json has no {setting.name} row for {missing}; run "
                             f"`python -m bench.realmodel --setting {setting.name.split(':')[0]} --methods "
                             f"{' '.join(missing)} --out bench/results` first, or leave them out of --methods")
        started = time.perf_counter()
        judge_model, judge_tok = load_model_and_tokenizer(setting.judge_model or setting.model_dir)
        judge = FluencyJudge(judge_model, judge_tok)
        model, tokenizer = load_model_and_tokenizer(setting.model_dir)
        base = selection_figures(model, tokenizer, setting, judge)
        del model
        reference = None
        if setting.name.startswith("tofu:"):  # the retain model never saw the forget author: relearned once
            from asu.models import resolve_model

            reference = load_model_and_tokenizer(resolve_model("smollm2-135m-tofu-retain"))
        entry = result["settings"].setdefault(setting.name, {"rows": {}})
        work = Path(work_dir) / setting.name.replace(":", "-")
        for method in methods:
            # The retain model's relearning is the same for every method: measured with the base row only.
            ref = reference if method == BASE else None
            entry["rows"][method] = attack_method(setting, method, rows_recorded.get(method, {}), judge, base,
                                                  work, robustness, reference=ref, auto_source=auto_source)
            entry["seconds"] = time.perf_counter() - started
            if out_dir is not None:  # after each method: a crash later loses nothing measured
                write_results(result, Path(out_dir))
        del judge_model, judge, reference
    return result


def _cell(report: dict, name: str) -> str:
    a = report["attacks"].get(name)
    if a is None:
        return "-"
    return f"{a['fact_recall']:.2f} ({a['recovery']:+.2f})"


def format_markdown(result: dict) -> str:
    lines = ["# Every method's chosen model under attack (SmolLM2-135M-Instruct)", "",
             "Fact recall of the forget answers (share of the reference answers' facts stated; recovery against the "
             "plain greedy answers in brackets). `base` is the model before unlearning: a full recovery returns to "
             "its figures. Relearn: 1 epoch on the forget QA at lr 2e-5, batch 32; quantisation: round-to-nearest, "
             "groups of 128; prefix: answers forced to start with \"Sure, here is the answer:\"; best of 8: 8 "
             "samples at temperatures 0.7/1.0/1.5, the best counts; paraphrase: the held-out probes.", ""]
    for name, data in result["settings"].items():
        rows = data["rows"]
        names = [a for a in (*ATTACKS, "paraphrase") if any(a in r["robustness"]["attacks"] for r in rows.values())]
        lines += [f"## {name}", "",
                  "| method | chosen settings | selection score (recorded / rebuilt) | plain | "
                  + " | ".join(names) + " | seconds |",
                  "|---" * (5 + len(names)) + "|"]
        for method, r in rows.items():
            chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r["chosen"].items() if k != "method") or (r["status"] or "-")
            if r.get("source") == "search":
                chosen += f" (searched again: {r['status']}, {r['search_seconds']:.0f} s)"
            score = "-" if method == BASE else " / ".join(
                "-" if r.get(key) is None else f"{r[key]['combined_score']:.3f}"
                for key in ("recorded_selection", "rebuilt_selection"))
            rob = r["robustness"]
            lines.append(f"| {method} | {chosen} | {score} | {rob['baseline_fact_recall']:.2f} | "
                         + " | ".join(_cell(rob, a) for a in names) + f" | {r['seconds']:.0f} |")
        relearn = rows.get(BASE, {}).get("robustness", {}).get("attacks", {}).get("relearn", {})
        if relearn.get("reference_before") is not None:
            lines += ["", f"The retain model (never saw the forget author) under the same relearning: fact recall "
                      f"{relearn['reference_before']:.2f} -> {relearn['reference_after']:.2f}."]
        lines.append("")
    return "\n".join(lines)


def write_results(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attacks.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out_dir / "attacks.md").write_text(format_markdown(result), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", nargs="+", default=["scenario"], choices=["scenario", "tofu"])
    parser.add_argument("--methods", nargs="+", default=[BASE, AUTO, *METHODS], choices=[BASE, AUTO, *METHODS])
    parser.add_argument("--recorded", default="bench/results/realmodel.json",
                        help="the real-model benchmark's results whose chosen settings are attacked")
    parser.add_argument("--auto-source", choices=get_args(AutoSource), default="replay",
                        help="asu_auto: replay the recorded chosen setting (default), or run the product's search "
                             "again (when the recipe changed since the row was recorded)")
    parser.add_argument("--work-dir", default="runs/bench_attacks")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("asu.robustness").setLevel(logging.INFO)  # one line per attack: progress on a long run
    recorded = json.loads(Path(args.recorded).read_text(encoding="utf-8"))
    run_attacks_bench(settings_by_name(args.setting), args.methods, recorded, Path(args.work_dir), Path(args.out),
                      auto_source=args.auto_source)
    print((Path(args.out) / "attacks.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
