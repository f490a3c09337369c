"""`python -m bench.realmodel`: every unlearning method side by side on a real model, each with its own settings.

Settings (identical data for every method):

- **scenario** (``asu/scenarios/paris.json``): SmolLM2-135M-Instruct already knows facts about one famous subject.
  A round trains on the ``forget`` QA and keeps the ``retain`` QA. Test figures use the held-out paraphrase
  probes (``forget_probes``, ``retain_probes``), never trained on and never used to choose settings.
- **tofu** (needs the TOFU target/retain models of ``asu model finetune-tofu``): the SmolLM2 target forgets its
  forget author; test figures are on the forget items the selection did not look at, forget quality against the
  retain model, model utility on the target's retain authors, Real Authors and World Facts.

A **fair fight**: every method gets the same budget, ``len(GRIDS[method])`` full rounds (2: two learning rates,
its own second knob held at one value, see ``SECOND_KNOB``), and keeps the round of highest *selection score*
on the same validation items: hmean(forget score, utility relative to the base model, fluent share), where
forget score = 1 - keyword hit rate (scenario) or 1 - ROUGE-L recall (TOFU) of the greedy answers to the
validation forget questions, utility = retain-validation hit rate (ROUGE-L recall) relative to the base model's
(capped at 1), and fluent share = share of validation forget answers ``asu.fluency`` judges fluent with the base
model. No method keeps a default tuned for another; the grids are in ``GRIDS``.

``asu_auto`` is ASU as the product runs it: ``pipelines.round.unlearn.auto_unlearn`` (the settings search, then the
final round), from the ``pretrained`` recipe; its search validates on the setting's own validation items, and the
table reports its search and round seconds beside the others' two rounds.

Writes ``realmodel.json``, ``realmodel.md`` and ``realmodel.png`` (utility against forget score, one point
per method, hollow where the fluent share of forget answers is below 0.9) to ``--out``.

    python -m bench.realmodel --setting scenario --out bench/results      (or `python -m bench.realmodel`)
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asu.config import ASUConfig
from asu.evaluation import generate_answers, rouge_l_recall
from asu.fluency import FluencyJudge, FluencySummary
from asu.metrics.formulas import extraction_strength, harmonic_mean
from asu.modeling import load_model_and_tokenizer
from asu.scenarios import keyword_hit, load_scenario
from asu.trainer import run_round

logger = logging.getLogger(__name__)

METHODS = ("asu_gd", "asu_kl", "ga", "gd", "npo", "simnpo", "idk", "rmu")
#: ASU as the product runs it: settings chosen by the product's own search (``asu unlearn --auto``).
AUTO = "asu_auto"
#: The round every method starts from (sized for a 135M model on CPU); the grid varies the strength knobs.
BASE_ROUND = {"epochs": 5, "batch_size": 4, "grad_accum_steps": 1, "max_length": 256, "forget_weight": 1.0,
              "checkpoint_every": "never", "seed": 1001}
LEARNING_RATES = (5e-5, 2e-4)
#: Each method's own second knob, held at one value: its published default, except ASU's tau, held at 1.5 because
#: on SmolLM2 the teacher at tau >= 2 already answers with empty strings (realmodel.md §3). Budget: 2 learning
#: rates = 2 full rounds per method (4 per method, over two values of this knob, cost more CPU time than one
#: session had: about 3 minutes a round on 2 cores).
SECOND_KNOB: dict[str, tuple[str, object]] = {
    "asu_gd": ("tau", 1.5),
    "asu_kl": ("tau", 1.5),
    "ga": ("epochs", 5),
    "gd": ("forget_weight", 1.0),
    "npo": ("npo_beta", 0.1),
    "simnpo": ("simnpo_beta", 4.5),
    "idk": ("forget_weight", 1.0),
    "rmu": ("rmu_steering_coeff", 2.0),
}
GRIDS: dict[str, list[dict]] = {
    method: [{"method": method, "learning_rate": lr, knob: value} for lr in LEARNING_RATES]
    for method, (knob, value) in SECOND_KNOB.items()
}
FLUENCY_FLOOR = 0.9
MAX_NEW_TOKENS = 48  # the scenario's answers are one sentence; a degenerate answer shows within 48 tokens


@dataclass
class Setting:
    """One benchmark setting: the model to unlearn, what a round trains on, and how models are scored."""

    name: str
    model_dir: Path
    forget: list[dict]
    retain: list[dict]
    select_forget: list[dict]  # validation forget items (question, answer, keywords?)
    select_retain: list[dict]
    test: Callable[[object, object, FluencyJudge], dict]  # (model, tokenizer, judge) -> test figures
    efficacy: str  # "keywords" or "rouge"
    notes: list[str] = field(default_factory=list)
    # The model whose language judges fluency: the model before unlearning, or for a fine-tuned target the
    # pretrained model it came from (a target that memorised its answers finds any other answer unlikely).
    judge_model: Path | None = None
    search_validation: list[dict] | None = None  # forget validation items the product's search may use
    search_retain: list[dict] | None = None  # retain items of the product's search (default: ``retain``)
    search_overrides: dict = field(default_factory=dict)  # SearchConfig fields the setting's sizes need

    @property
    def product_retain(self) -> list[dict]:
        """The retain items the product's search and final round use."""
        return self.search_retain or self.retain

    def search_config(self):
        """The product's ``SearchConfig`` with this setting's overrides."""
        from pipelines.temperature_search import SearchConfig

        return SearchConfig.from_dict(self.search_overrides)


def _answers(model, tokenizer, items: Sequence[dict]) -> list[str]:
    return generate_answers(model, tokenizer, [it["question"] for it in items], max_new_tokens=MAX_NEW_TOKENS)


def _correct(items: Sequence[dict], answers: Sequence[str], mode: str) -> list[float]:
    """Per item: 1/0 keyword hit (``keywords``) or the ROUGE-L recall against the reference answer (``rouge``)."""
    if mode == "keywords":
        return [float(keyword_hit(a, it["keywords"])) for a, it in zip(answers, items, strict=True)]
    return rouge_l_recall(answers, [it["answer"] for it in items])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def selection_figures(model, tokenizer, setting: Setting, judge: FluencyJudge) -> dict[str, float]:
    """Forget correctness, retain correctness and fluent share on the validation items."""
    forget_answers = _answers(model, tokenizer, setting.select_forget)
    retain_answers = _answers(model, tokenizer, setting.select_retain)
    verdicts = judge.judge([it["question"] for it in setting.select_forget], forget_answers)
    return {"forget_correct": _mean(_correct(setting.select_forget, forget_answers, setting.efficacy)),
            "retain_correct": _mean(_correct(setting.select_retain, retain_answers, setting.efficacy)),
            "fluent_share": FluencySummary.of(verdicts).fluent_share}


def selection_score(figures: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """hmean(forget score, utility relative to the base model, fluent share) and its parts."""
    efficacy = max(0.0, 1.0 - figures["forget_correct"])
    utility = min(1.0, figures["retain_correct"] / base["retain_correct"]) if base["retain_correct"] > 0 else 0.0
    return {"forget_score": efficacy, "relative_utility": utility, "fluent_share": figures["fluent_share"],
            "combined_score": harmonic_mean([efficacy, utility, figures["fluent_share"]])}


def extraction(model, tokenizer, items: Sequence[dict]) -> float:
    """Mean extraction strength of the forget answers (teacher-forced argmax; EOS dropped)."""
    from asu.metrics.passes import encode_pairs, token_stats

    encoded = encode_pairs(tokenizer, [it["question"] for it in items], [it["answer"] for it in items],
                           prompt_format="chat_template", max_length=256, source="forget set")
    stats = token_stats(model, encoded, pad_id=tokenizer.pad_token_id)
    return _mean([extraction_strength(s.predictions[:-1].tolist(), s.labels[:-1].tolist()) for s in stats])


def scenario_setting(name: str = "paris", model: str = "smollm2-135m") -> Setting:
    """The real-world scenario ``name`` on ``model``: selection on the trained forget questions and the retain
    validation items; test on the held-out probes."""
    from asu.models import resolve_model

    sc = load_scenario(name)

    def test(m, tok, judge: FluencyJudge) -> dict:
        probe_answers = _answers(m, tok, sc.forget_probes)
        forget_answers = _answers(m, tok, sc.forget)
        retain_answers = _answers(m, tok, sc.retain_probes)
        prompts = [it["question"] for it in (*sc.forget, *sc.forget_probes)]
        verdicts = judge.judge(prompts, [*forget_answers, *probe_answers])
        summary = FluencySummary.of(verdicts)
        return {
            "forget_rouge": _mean(rouge_l_recall(forget_answers, [it["answer"] for it in sc.forget])),
            "forget_probe_hits": _mean(_correct(sc.forget_probes, probe_answers, "keywords")),
            "retain_probe_hits": _mean(_correct(sc.retain_probes, retain_answers, "keywords")),
            "fluent_share": summary.fluent_share, "refusal_share": summary.refusal_share,
            "empty_share": summary.empty_share,
            "extraction_strength": extraction(m, tok, sc.qa_items("forget")),
            "samples": [{"question": q["question"], "answer": a} for q, a in
                        zip(sc.forget_probes[:3], probe_answers[:3], strict=True)],
        }

    forget = sc.qa_items("forget")
    return Setting(f"scenario:{name}", resolve_model(model, progress=True), forget, sc.qa_items("retain"),
                   select_forget=sc.forget, select_retain=sc.retain_validation, test=test, efficacy="keywords",
                   notes=[f"subject {sc.subject}: {len(sc.forget)} forget QA, {len(sc.forget_probes)} held-out forget "
                          f"probes, {len(sc.retain)} retain QA, {len(sc.retain_probes)} retain probes",
                          f"{AUTO}: the search validates on the {len(sc.validation)} extra forget-subject QA and 10 of "
                          f"the {len(sc.retain) + len(sc.retain_validation)} retain + retain-validation QA; the "
                          "final round trains on the forget QA, the validation QA and the other retain QA"],
                   search_validation=sc.qa_items("validation"),
                   search_retain=[*sc.qa_items("retain"), *sc.qa_items("retain_validation")],
                   search_overrides={"retain_validation_size": 10})


def run_method(setting: Setting, method: str, judge: FluencyJudge, base: dict, work: Path) -> dict:
    """Every grid round of ``method``; keeps the best by selection score and tests it."""
    trials, best, best_dir = [], None, None
    started = time.perf_counter()
    for i, overrides in enumerate(GRIDS[method]):
        config = ASUConfig.from_dict({**BASE_ROUND, **overrides})
        out = work / f"{method}-{i}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        run_round(setting.model_dir, setting.forget, setting.retain, config, out, progress=False)
        train_seconds = time.perf_counter() - t0
        model, tokenizer = load_model_and_tokenizer(out)
        figures = selection_score(selection_figures(model, tokenizer, setting, judge), base)
        del model
        trial = {"settings": overrides, "train_seconds": train_seconds, **figures}
        trials.append(trial)
        logger.warning("%s %s %s: score %.3f (FS %.2f, utility %.2f, fluent %.2f) in %.0f s", setting.name, method,
                       overrides, figures["combined_score"], figures["forget_score"], figures["relative_utility"],
                       figures["fluent_share"], train_seconds)
        if best is None or figures["combined_score"] > best["combined_score"]:
            if best_dir is not None:
                shutil.rmtree(best_dir, ignore_errors=True)
            best, best_dir = trial, out
        else:
            shutil.rmtree(out, ignore_errors=True)
    model, tokenizer = load_model_and_tokenizer(best_dir)
    test = setting.test(model, tokenizer, judge)
    shutil.rmtree(best_dir, ignore_errors=True)
    return {"method": method, "chosen": best["settings"], "selection": {k: best[k] for k in
            ("forget_score", "relative_utility", "fluent_share", "combined_score")}, "test": test, "trials": trials,
            "round_seconds": best["train_seconds"], "search_seconds": time.perf_counter() - started}


def product_round(setting: Setting, out: Path, recipe: ASUConfig | None = None) -> tuple[Path, dict]:
    """ASU as the product runs it on ``setting``: ``pipelines.round.unlearn.auto_unlearn`` from ``recipe`` (default
    ``pretrained``) into ``out``, the search's work dir removed afterwards. Returns the model folder (the unchanged
    model when nothing was chosen) and ``auto_unlearn``'s result.

    The search sees the setting's training items only (its validation split comes out of them, or the setting's
    ``search_validation`` items).
    """
    from asu.recipes import get_recipe
    from pipelines.round.unlearn import auto_unlearn

    work = out.with_name(out.name + ".search")
    for folder in (out, work):
        shutil.rmtree(folder, ignore_errors=True)
    result = auto_unlearn(setting.model_dir, setting.forget, setting.product_retain, out,
                          recipe or get_recipe("pretrained"), setting.search_config(), work,
                          forget_validation=setting.search_validation)
    shutil.rmtree(work, ignore_errors=True)
    return (Path(result["model_dir"]) if result["model_dir"] else setting.model_dir), result


def run_auto(setting: Setting, judge: FluencyJudge, base: dict, work: Path) -> dict:
    """ASU with every setting chosen by the product's search (:func:`product_round`), then tested; the selection
    figures are computed as for every other method, for the table."""
    started = time.perf_counter()
    model_dir, result = product_round(setting, work / AUTO)
    row = {"method": AUTO, "status": result["status"], "chosen": result["setting"] or {},
           "reasons": result["reasons"][:6], "search_seconds": result["seconds"]["search"],
           "round_seconds": result["seconds"].get("round", 0.0), "search_over_round":
           result["seconds"].get("search_over_round"), "before": result.get("before"), "after": result.get("after")}
    model, tokenizer = load_model_and_tokenizer(model_dir)
    row["selection"] = selection_score(selection_figures(model, tokenizer, setting, judge), base)
    row["test"] = setting.test(model, tokenizer, judge)
    row["total_seconds"] = time.perf_counter() - started
    if model_dir != setting.model_dir:
        shutil.rmtree(model_dir, ignore_errors=True)
    return row


#: Selection keys of results written before the search's vocabulary was unified (issue 13) -> today's names.
_OLD_SELECTION_KEYS = {"forget_efficacy": "forget_score", "score": "combined_score"}


def upgrade(result: dict) -> dict:
    """A results file of an earlier version with today's key names (kept rows are merged with new ones)."""
    for data in result.get("settings", {}).values():
        for row in data.get("rows", {}).values():
            row["selection"] = {_OLD_SELECTION_KEYS.get(k, k): v for k, v in row.get("selection", {}).items()}
    return result


def run_realmodel_bench(settings: Sequence[Setting], methods: Sequence[str], work_dir: Path,
                        out_dir: Path | None = None) -> dict:
    """Base figures, then every method on every setting; writes the results when ``out_dir`` is given (the rows
    of methods not run again, and settings not run again, are kept from ``out_dir/realmodel.json``)."""
    random.seed(0)
    previous = Path(out_dir or ".") / "realmodel.json"
    kept = upgrade(json.loads(previous.read_text())) if out_dir is not None and previous.is_file() else {}
    grids = {**kept.get("grids", {}), **{m: GRIDS[m] for m in methods if m in GRIDS}}
    result = {"methods": [*dict.fromkeys([*kept.get("methods", []), *methods])], "grids": grids,
              "base_round": BASE_ROUND, "settings": dict(kept.get("settings", {}))}
    for setting in settings:
        started = time.perf_counter()
        judge_model, judge_tok = load_model_and_tokenizer(setting.judge_model or setting.model_dir)
        judge = FluencyJudge(judge_model, judge_tok)
        model, tokenizer = load_model_and_tokenizer(setting.model_dir)
        base = selection_figures(model, tokenizer, setting, judge)
        rows = {"base": {"test": setting.test(model, tokenizer, judge), "selection": selection_score(base, base)}}
        del model
        old = result["settings"].get(setting.name, {}).get("rows", {})
        rows |= {m: r for m, r in old.items() if m not in methods and m != "base"}
        for method in methods:
            work = Path(work_dir) / setting.name.replace(":", "-")
            rows[method] = (run_auto(setting, judge, base, work) if method == AUTO
                            else run_method(setting, method, judge, base, work))
            result["settings"][setting.name] = {"rows": rows, "notes": setting.notes, "base_selection": base,
                                                "judge_reference": judge.reference.to_dict(),
                                                "judge_model": str(setting.judge_model or setting.model_dir),
                                                "seconds": time.perf_counter() - started}
            if out_dir is not None:  # after each method: a crash later loses nothing measured
                write_results(result, Path(out_dir))
        del judge_model, judge
    return result


COLUMNS = (("forget_rouge", "forget ROUGE-L"), ("forget_probe_hits", "forget probes correct"),
           ("retain_probe_hits", "retain probes correct"), ("forget_quality", "forget quality"),
           ("model_utility", "model utility"), ("fluent_share", "fluent"), ("refusal_share", "refusal"),
           ("extraction_strength", "extraction strength"))


def format_markdown(result: dict) -> str:
    lines = ["# Every method on SmolLM2-135M-Instruct", ""]
    for name, data in result["settings"].items():
        lines += [f"## {name}", "", *[f"- {n}" for n in data["notes"]],
                  f"- each method: {len(next(iter(result['grids'].values())))} full rounds over its own grid, the "
                  "best selection score kept (validation items only); test figures on held-out items", ""]
        header = ["method", "chosen settings", "selection score", *[c for _, c in COLUMNS], "round s", "search s"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, row in data["rows"].items():
            t = row["test"]
            chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.get("chosen", {}).items() if k != "method") or "-"
            figures = [f"{t[k]:.3f}" if isinstance(t.get(k), float) and math.isfinite(t[k]) else "-"
                       for k, _ in COLUMNS]
            cells = [method, chosen, f"{row['selection']['combined_score']:.3f}", *figures,
                     f"{row.get('round_seconds', 0):.0f}", f"{row.get('search_seconds', 0):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Sample forget-probe answers of each method's chosen model:", ""]
        for method, row in data["rows"].items():
            for s in row["test"].get("samples", [])[:2]:
                lines.append(f"- `{method}`: {s['question']} -> {json.dumps(s['answer'][:160])}")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(result["settings"].items())
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 5), squeeze=False)
    for ax, (name, data) in zip(axes[0], settings, strict=True):
        for method, row in data["rows"].items():
            t = row["test"]
            efficacy = 1.0 - t.get("forget_probe_hits", t.get("forget_rouge", 0.0))
            utility = t.get("retain_probe_hits", t.get("model_utility", 0.0))
            fluent = t.get("fluent_share", 0.0) >= FLUENCY_FLOOR
            ax.scatter([efficacy], [utility], s=80, facecolors="C0" if fluent else "none", edgecolors="C0")
            ax.annotate(method + ("" if fluent else " (not fluent)"), (efficacy, utility), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="forget score (1 - forget probes correct)", ylabel="retain probes correct", title=name,
               xlim=(-0.05, 1.1), ylim=(-0.05, 1.1))
    fig.suptitle("Filled: fluent share of forget answers >= 0.9; hollow: below")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "realmodel.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out_dir / "realmodel.md").write_text(format_markdown(result), encoding="utf-8")
    plot(result, out_dir / "realmodel.png")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", nargs="+", default=["scenario"], choices=["scenario", "tofu"])
    parser.add_argument("--methods", nargs="+", default=[AUTO, *METHODS], choices=[AUTO, *METHODS])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--work-dir", default="runs/bench_realmodel")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    settings = []
    if "scenario" in args.setting:
        settings.append(scenario_setting("paris", args.model))
    if "tofu" in args.setting:
        from bench.realmodel_tofu import tofu_setting

        settings.append(tofu_setting())
    result = run_realmodel_bench(settings, args.methods, Path(args.work_dir), Path(args.out))
    print(json.dumps(result) if args.json else format_markdown(result))


if __name__ == "__main__":
    main()
