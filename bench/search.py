"""`python -m bench.search`: what the automatic search costs, and how its choice compares with an exhaustive grid.

Per forget subset (TOFU authors of the embedded model, TOFU authors of the SmolLM2 TOFU target, or a real-world
scenario on SmolLM2):

1. the search (``pipelines.temperature_search.run_search``) on the subset's request, timed;
2. right after, the final round at the chosen settings, timed: **cost ratio** = search wall time / that round's
   wall time (target <= 2). CPU seconds of the process are reported beside wall seconds (the machine is shared);
3. unless ``cost_only``: the **exhaustive grid**, one full round per setting of the search's own space (every tau
   of ``tau_grid`` x every learning rate of ``lr_multipliers``, the recipe's lambda; ``--grid-taus`` narrows it),
   plus the **paper's fixed recipe** (``tofu_paper``: tau 2.3, lambda 0.1, lr 1e-5, 5 epochs, accumulation 4).
   Every round is scored on the *test* items: forget items the search never validated on, and retain items
   outside its retain validation sample. **Combined score** = hmean(forget score, retain score relative to
   the current model (capped at 1), fluent share of the forget answers), as the search ranks
   (``asu.search.scores.combined_score``), fluency judged by ``asu.fluency`` with the subset's judge model.
   **Quality** passes when score(chosen) >= 0.9 x the best grid score and score(chosen) >= score(paper).
   A search that chooses nothing is scored as the unchanged model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from asu.config import ASUConfig
from asu.fluency import FluencyJudge
from asu.modeling import load_model_and_tokenizer
from asu.recipes import get_recipe
from asu.search.scores import combined_score, forget_score, retain_score, score_sets
from asu.trainer import run_round
from pipelines.temperature_search import SearchConfig, round_items, run_search, split_validation

logger = logging.getLogger(__name__)
DEFAULT_SUBSETS: tuple[str, ...] = ("1,4", "7", "2,9", "0,5")
QUALITY_RATIO = 0.9
PAPER = "tofu_paper"


@dataclass
class BenchSubset:
    """One forget request to search for: the model, its forget/retain items and who judges fluency."""

    name: str
    model_dir: Path
    forget: list[dict]
    retain: list[dict]
    subjects: list | None = None
    forget_validation: list[dict] | None = None
    judge_model: Path | None = None  # default: the model itself (see bench.realmodel.Setting.judge_model)
    recipe: str = "embedded"


def embedded_subset(variant: str, authors: Sequence[int]) -> BenchSubset:
    """TOFU ``authors`` of the embedded model; retain = the other authors it knows."""
    from asu.embedded import EMBEDDED_SPECS, ensure_embedded_model, tofu_author_items

    known = EMBEDDED_SPECS[variant].authors
    unknown = [a for a in authors if a not in known]
    if unknown:
        raise ValueError(f"authors {unknown} are not memorised by the {variant!r} model (authors {list(known)})")
    forget = [(a, it) for a in authors for it in tofu_author_items(a)]
    retain = [it for a in known if a not in authors for it in tofu_author_items(a)]
    return BenchSubset(",".join(map(str, authors)), ensure_embedded_model(variant), [it for _, it in forget], retain,
                       subjects=[a for a, _ in forget])


def tofu_target_subset(authors: Sequence[int]) -> BenchSubset:
    """TOFU ``authors`` of the SmolLM2 TOFU target (``smollm2-135m-tofu``); retain = its other authors; fluency
    judged with the pretrained SmolLM2 it was fine-tuned from."""
    from asu.embedded import tofu_items
    from asu.models import resolve_model
    from asu.models.tofu_finetune import TOFU_TARGET_DEFAULT

    spec = TOFU_TARGET_DEFAULT
    unknown = [a for a in authors if a not in spec.authors]
    if unknown:
        raise ValueError(f"authors {unknown} are not in the SmolLM2 TOFU target (authors {list(spec.authors)})")
    forget = [(a, it) for a in authors for it in tofu_items([a])]
    return BenchSubset(f"tofu:{','.join(map(str, authors))}", resolve_model("smollm2-135m-tofu", progress=True),
                       [it for _, it in forget], tofu_items([a for a in spec.authors if a not in authors]),
                       subjects=[a for a, _ in forget], judge_model=resolve_model(spec.base, progress=True),
                       recipe="pretrained")


def scenario_subset(name: str, model: str = "smollm2-135m") -> BenchSubset:
    """A real-world scenario: forget its forget QA (its validation QA are the request's validation items)."""
    from asu.models import resolve_model
    from asu.scenarios import load_scenario

    sc = load_scenario(name)
    return BenchSubset(f"scenario:{name}", resolve_model(model, progress=True), sc.qa_items("forget"),
                       [*sc.qa_items("retain"), *sc.qa_items("retain_validation")],
                       forget_validation=sc.qa_items("validation"), recipe="pretrained")


def parse_subset(text: str, variant: str) -> BenchSubset:
    """``1,4`` (embedded authors), ``tofu:1`` (SmolLM2 TOFU target authors) or ``scenario:paris``."""
    kind, _, rest = text.rpartition(":")
    if kind == "scenario":
        return scenario_subset(rest)
    try:
        authors = [int(a) for a in rest.split(",")]
    except ValueError:
        raise ValueError(f"subset {text!r}: use authors '1,4', 'tofu:1,3' or 'scenario:NAME'") from None
    if kind == "tofu":
        return tofu_target_subset(authors)
    if kind:
        raise ValueError(f"subset {text!r}: unknown kind {kind!r}; use 'tofu:' or 'scenario:'")
    return embedded_subset(variant, authors)


def _timed_round(model_dir, forget, retain, config: ASUConfig, out: Path) -> tuple[Path, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_round(model_dir, forget, retain, config, out, progress=False)
    return result.model_dir, time.perf_counter() - wall, time.process_time() - cpu


def score_on_test(model_dir: Path, test: list, retain: list, config: ASUConfig, cap: int, judge,
                  base_utility: float | None = None) -> dict:
    """Forget and retain figures of ``model_dir`` on the test items; combined score when ``base_utility`` is given."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    sets = score_sets(model, tokenizer, {"forget": test, "retain": retain}, prompt_format=config.prompt_format,
                      max_new_tokens=cap, max_length=config.max_length, judge=judge)
    fgt, ret = sets["forget"], sets["retain"]
    out = {"forget_score": forget_score(fgt), "retain_score": retain_score(ret),
           "fluent_share": fgt.fluent_share, "refusal_share": fgt.refusal_share,
           "rouge_l_recall": fgt.rouge_l_recall, "fact_recall": fgt.fact_recall, "probability": fgt.probability}
    return with_score(out, base_utility) if base_utility is not None else out


def with_score(figures: dict, base_utility: float) -> dict:
    """``figures`` plus the utility relative to the current model's and the combined score."""
    relative = figures["retain_score"] / base_utility if base_utility > 0 else 1.0
    return {**figures, "relative_utility": relative,
            "combined_score": combined_score(figures["forget_score"], relative, figures["fluent_share"])}


def grid_settings(config: ASUConfig, search: SearchConfig, taus: Sequence[float] | None) -> list[dict]:
    """The search's own space as full-round settings: every tau x learning rate (the recipe's lambda)."""
    weights = search.weights(config.forget_weight)
    return [{"tau": t, "learning_rate": m * config.learning_rate, "forget_weight": w}
            for t in (taus or search.tau_grid) for m in search.lr_multipliers for w in weights]


def compare(chosen: dict, grid: Sequence[dict], paper: dict) -> dict:
    """Quality verdict: the chosen round's score against the best grid round's and the paper recipe's."""
    best = max(grid, key=lambda r: r["combined_score"])
    return {"best_setting": best["setting"], "best_score": best["combined_score"],
            "paper_score": paper["combined_score"],
            "ratio_to_best": chosen["combined_score"] / best["combined_score"] if best["combined_score"] > 0 else None,
            "within_90pct": chosen["combined_score"] >= QUALITY_RATIO * best["combined_score"],
            "at_least_paper": chosen["combined_score"] >= paper["combined_score"]}


def bench_subset(subset: BenchSubset, search: SearchConfig, work_dir: Path, cost_only: bool,
                 overrides: dict | None = None, grid_taus: Sequence[float] | None = None) -> dict:
    """Search, the chosen round, and (unless cost_only) the grid and the paper recipe for one subset."""
    config = ASUConfig.from_dict({**get_recipe(subset.recipe).to_dict(), **(overrides or {})})
    cpu = time.process_time()
    outcome = run_search(subset.model_dir, subset.forget, subset.retain, config, search, work_dir / "search",
                         subjects=subset.subjects, forget_validation=subset.forget_validation)
    search_cpu = time.process_time() - cpu
    split = split_validation(subset.forget, subset.retain, search, subjects=subset.subjects,
                             forget_validation=subset.forget_validation)
    train_forget, train_retain = round_items(subset.forget, split, subset.forget_validation)
    cap = outcome.config["max_new_tokens"]
    judge_model, judge_tok = load_model_and_tokenizer(subset.judge_model or subset.model_dir)
    judge = FluencyJudge(judge_model, judge_tok, prompt_format=config.prompt_format)
    del judge_model
    test = (split.forget_test, split.retain_rest)
    base = score_on_test(subset.model_dir, *test, config, cap, judge)
    base = with_score(base, base["retain_score"])

    def full_round(name: str, round_config: ASUConfig) -> dict:
        out = work_dir / f"round-{name}"
        shutil.rmtree(out, ignore_errors=True)
        folder, wall, cpu_s = _timed_round(subset.model_dir, train_forget, train_retain, round_config, out)
        figures = score_on_test(folder, *test, config, cap, judge, base["retain_score"])
        shutil.rmtree(out, ignore_errors=True)
        row = {"setting": {k: getattr(round_config, k) for k in ("tau", "learning_rate", "forget_weight")},
               "seconds": wall, "cpu_seconds": cpu_s, **figures}
        logger.warning("bench %s %s: score %.3f (FS %.3f, RS %.3f, fluent %.2f) in %.0f s", subset.name, name,
                       row["combined_score"], row["forget_score"], row["retain_score"], row["fluent_share"], wall)
        return row

    row = {"subset": subset.name, "status": outcome.status, "setting": outcome.setting,
           "candidates": outcome.candidates, "trials": len(outcome.trials), "search_seconds": outcome.seconds["total"],
           "search_cpu_seconds": search_cpu, "search_stage_seconds": outcome.seconds, "reasons": outcome.reasons,
           "floors": outcome.floors, "validation_items": len(split.forget_val), "test_items": len(split.forget_test),
           "base": base, "recipe": subset.recipe}
    if outcome.setting is not None:
        chosen = full_round("chosen", outcome.round_config(config))
        row |= {"chosen": chosen, "cost_ratio": outcome.seconds["total"] / chosen["seconds"],
                "cost_ratio_cpu": search_cpu / chosen["cpu_seconds"]}
    else:
        chosen = {**base, "setting": None}
        row["chosen"] = chosen
    if not cost_only:
        grid = [full_round(f"tau{s['tau']:g}-lr{s['learning_rate']:.3g}", replace(config, **s))
                for s in grid_settings(config, search, grid_taus)]
        paper = full_round("paper", get_recipe(PAPER))
        row |= {"grid": grid, "paper": paper, **compare(chosen, grid, paper)}
    return row


def run_search_bench(
    subsets: Sequence[str] = DEFAULT_SUBSETS,
    *,
    variant: str = "default",
    search: SearchConfig | None = None,
    overrides: dict | None = None,
    work_dir: Path = Path("runs/bench_search"),
    out_dir: Path | None = None,
    cost_only: bool = False,
    grid_taus: Sequence[float] | None = None,
) -> dict:
    """The benchmark over ``subsets`` (see :func:`parse_subset`); writes ``search.json`` and ``search.md`` into
    ``out_dir`` after every subset (rows of subsets not run again are kept)."""
    search = search or SearchConfig()
    previous = Path(out_dir or ".") / "search.json"
    kept = json.loads(previous.read_text()).get("rows", []) if out_dir is not None and previous.is_file() else []
    rows = [r for r in kept if r.get("subset") not in subsets]
    for text in subsets:
        subset = parse_subset(text, variant)
        rows.append(bench_subset(subset, search, Path(work_dir) / text.replace(":", "-").replace(",", "-"),
                                 cost_only, overrides, grid_taus))
        if out_dir is not None:  # partial results survive an interrupted run
            _write(out_dir, search, rows)
    return _write(out_dir, search, rows)


def _write(out_dir, search: SearchConfig, rows: list[dict]) -> dict:
    import torch

    ratios = [r["cost_ratio"] for r in rows if "cost_ratio" in r]
    graded = [r for r in rows if "within_90pct" in r]
    result = {"torch_threads": torch.get_num_threads(), "search_config": search.to_dict(), "rows": rows,
              "max_cost_ratio": max(ratios) if ratios else None,
              "quality_passed": sum(bool(r["within_90pct"] and r["at_least_paper"]) for r in graded),
              "quality_graded": len(graded)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "search.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (out_dir / "search.md").write_text(format_markdown(result), encoding="utf-8")
    return result


def _fmt(value, spec: str = "{:.3f}") -> str:
    return "n/a" if value is None else spec.format(value)


def _setting(s: dict | None) -> str:
    return "none" if not s else f"tau {s['tau']:g}, lr {s['learning_rate']:.2g}, lambda {s['forget_weight']:g}"


def format_markdown(result: dict) -> str:
    """Markdown tables: per subset the cost and the choice, then every grid round."""
    search = result["search_config"]
    lines = ["# Settings search benchmark", "",
             f"Search: tau grid {search['tau_grid']}, stage 2 `{search['stage2']}`, learning rates "
             f"{search['lr_multipliers']} x the recipe's, minimum forget-efficacy gain {search['min_forget_gain']}, "
             f"floors: retain score {search['utility_floor']} ({search['floor_mode']}), retain ROUGE-L "
             f"{search.get('retain_rouge_floor', '-')} (relative), fluent share {search['fluent_share_floor']}, "
             f"forget efficacy {search.get('forget_efficacy_floor', '-')}; torch threads {result['torch_threads']}. "
             "Cost ratio = search wall "
             "time / wall time of the final round at the chosen settings, run right after. Scores: hmean(forget "
             "efficacy, relative retain score, fluent share) on the test items (never validated on). Quality: "
             f"chosen >= {QUALITY_RATIO} x the best grid round and >= the paper's fixed recipe.", "",
             f"Quality passed on {result['quality_passed']} of {result['quality_graded']} graded subsets; "
             f"largest cost ratio {_fmt(result['max_cost_ratio'], '{:.2f}')}.", "",
             "| subset | status | chosen | trials | score chosen | best grid | best grid score | paper score "
             "| chosen / best | >= paper | search s | round s | cost ratio | cost ratio (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        chosen = r.get("chosen") or {}
        lines.append(
            f"| {r['subset']} | {r['status']} | {_setting(r['setting'])} | {r['trials']} "
            f"| {_fmt(chosen.get('combined_score'))} "
            f"| {_setting(r.get('best_setting'))} | {_fmt(r.get('best_score'))} | {_fmt(r.get('paper_score'))} "
            f"| {_fmt(r.get('ratio_to_best'))} | {r.get('at_least_paper', 'n/a')} | {r['search_seconds']:.0f} "
            f"| {_fmt(chosen.get('seconds'), '{:.0f}')} | {_fmt(r.get('cost_ratio'), '{:.2f}')} "
            f"| {_fmt(r.get('cost_ratio_cpu'), '{:.2f}')} |")
    lines += ["", "Every full round (test items):", "",
              "| subset | round | score | FS | RS (relative) | fluent | refusal | ROUGE-L | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        named = [("base (no round)", r["base"])]
        if r.get("setting"):
            named.append(("chosen: " + _setting(r["setting"]), r["chosen"]))
        named += [(_setting(g["setting"]), g) for g in r.get("grid", [])]
        if "paper" in r:
            named.append(("paper recipe (" + _setting(r["paper"]["setting"]) + ")", r["paper"]))
        for name, x in named:
            lines.append(f"| {r['subset']} | {name} | {_fmt(x.get('combined_score'))} | {x['forget_score']:.3f} "
                         f"| {x['retain_score']:.3f} ({_fmt(x.get('relative_utility'), '{:.2f}')}) "
                         f"| {x['fluent_share']:.2f} | {x['refusal_share']:.2f} | {x['rouge_l_recall']:.3f} "
                         f"| {_fmt(x.get('seconds'), '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.search``: the settings search's cost and quality against a full grid of rounds."""
    import argparse

    from cli.common import parse_overrides

    parser = argparse.ArgumentParser(prog="python -m bench.search", description=main.__doc__)
    parser.add_argument("--model", default="default", choices=["default", "tiny"],
                        help="embedded model of the plain author subsets")
    parser.add_argument("--subsets", nargs="+", default=["1,4", "7", "2,9", "0,5"],
                        help="forget subsets: embedded authors '1,4', SmolLM2 TOFU target authors 'tofu:1' "
                        "(needs asu model finetune-tofu), or a scenario 'scenario:paris'")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a field of each subset's recipe (embedded or pretrained)")
    parser.add_argument("--search", action="append", metavar="KEY=VALUE", help="override a SearchConfig field")
    parser.add_argument("--grid-taus", nargs="+", help="taus of the exhaustive grid (default: tau_grid)")
    parser.add_argument("--cost-only", action="store_true", help="skip the exhaustive grid of full rounds")
    parser.add_argument("--work-dir", default="runs/bench_search", help="trials and rounds go here")
    parser.add_argument("--out", help="write search.json and search.md here (e.g. bench/results)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_search_bench(
        args.subsets, variant=args.model, search=SearchConfig.from_dict(parse_overrides(args.search, "--search")),
        overrides=parse_overrides(args.set), work_dir=Path(args.work_dir),
        out_dir=Path(args.out) if args.out else None, cost_only=args.cost_only,
        grid_taus=[float(t) for t in args.grid_taus] if args.grid_taus else None,
    )
    print(json.dumps(result) if args.json else format_markdown(result))


if __name__ == "__main__":
    main()
