"""`asu bench search`: what the automatic temperature search costs and how good its choice is.

For each forget subset (TOFU authors of the embedded model; retain = every other author it knows):

1. run the search (``pipelines.temperature_search.run_search``) and time it;
2. right after, run the full round at the chosen tau and time it: **cost ratio** = search wall time / that
   round's wall time (target <= 1.5). CPU seconds of the process are reported beside the wall seconds: the
   machine is shared, and CPU time is less sensitive to other people's jobs than wall time;
3. unless ``cost_only``: the exhaustive grid, one full round per tau of the search grid, each scored on the
   held-out *test* items (forget items the search never looked at) and the retain items outside the retain
   validation sample. The same floors as the search (relative to the current model, measured on these test
   sets) decide which grid taus are admissible; the best is the admissible tau of highest forget efficacy.
   **Quality**: the chosen tau passes when its FE is at least 95% of the best's at equal-or-better utility
   (``fe_c >= 0.95 fe_best and ru_c >= ru_best``); ``within_5pct_dominance`` is the weaker reading (no grid
   tau of equal-or-better utility has FE more than 5% above the chosen tau's);
4. unless ``cost_only``: the **oracle pass rate** (``oracle_agreement``), from the per-item figures of the grid
   rounds: how often picking tau on a random validation-sized sample of the test items, with the full-round
   models, passes the same check on the rest. It bounds what any search with that many items can reach.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from asu.config import ASUConfig
from asu.embedded import EMBEDDED_SPECS, ensure_embedded_model, tofu_author_items
from asu.modeling import load_model_and_tokenizer
from asu.recipes import get_recipe
from asu.search.halving import Floors
from asu.search.scores import ItemFigures, SetFigures, forget_efficacy, retain_utility, score_items
from asu.trainer import run_round
from pipelines.temperature_search import SearchConfig, run_search, split_validation
from pipelines.temperature_search.search import absolute_floors

logger = logging.getLogger(__name__)
DEFAULT_SUBSETS: tuple[tuple[int, ...], ...] = ((1, 4), (7,), (2, 9))


def subset_sets(variant: str, authors: Sequence[int]) -> tuple[list[dict], list[int], list[dict]]:
    """(forget items, their subjects = author index, retain items = the variant's other authors)."""
    known = EMBEDDED_SPECS[variant].authors
    unknown = [a for a in authors if a not in known]
    if unknown:
        raise ValueError(f"authors {unknown} are not memorised by the {variant!r} model (authors {list(known)})")
    forget = [(a, it) for a in authors for it in tofu_author_items(a)]
    retain = [it for a in known if a not in authors for it in tofu_author_items(a)]
    return [it for _, it in forget], [a for a, _ in forget], retain


def _timed_round(model_dir, forget, retain, config: ASUConfig, out: Path) -> tuple[Path, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_round(model_dir, forget, retain, config, out, progress=False)
    return result.model_dir, time.perf_counter() - wall, time.process_time() - cpu


def _round_figures(forget: SetFigures, ru: float, floors: Floors) -> dict:
    fe, failures = forget_efficacy(forget), floors.failures(forget, ru)
    return {"forget_efficacy": fe, "retain_utility": ru, "fluent_share": forget.fluent_share,
            "token_entropy": forget.token_entropy, "rouge_l_recall": forget.rouge_l_recall,
            "probability": forget.probability, "admissible": not failures, "failures": failures}


def _score_round(model_dir: Path, test, report, config: ASUConfig, cap: int) -> tuple[ItemFigures, float]:
    """Per-item figures on the forget test items and the retain utility on the report items."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    kw = {"prompt_format": config.prompt_format, "max_new_tokens": cap, "max_length": config.max_length}
    figures = score_items(model, tokenizer, {"forget": test, "retain": report}, **kw)
    return figures["forget"], retain_utility(figures["retain"].mean())


def oracle_agreement(base: ItemFigures, base_utility: float, grid: dict[float, tuple[ItemFigures, float]],
                     search: SearchConfig, validation_items: int, splits: int = 200, seed: int = 0) -> dict:
    """How often the quality target can be met at all with ``validation_items`` validation items.

    An oracle picks the best admissible grid tau on ``validation_items`` test items drawn at random, using the
    *full-round* models (no trial is cheaper or closer to the final round than the round itself), and is judged
    on the remaining test items with the same rule as the search (``compare``). Its pass rate bounds what any
    search that sees that many forget items can reach: below it, misses come from item-sampling noise.
    """
    rng = random.Random(seed)
    n, passed = len(base.nll), 0
    for _ in range(splits):
        val = set(rng.sample(range(n), validation_items))
        rest = [i for i in range(n) if i not in val]
        sides = []
        for rows in (sorted(val), rest):
            floors = absolute_floors(search, base.mean(rows), base_utility, 0)
            sides.append({t: _round_figures(f.mean(rows), ru, floors) for t, (f, ru) in grid.items()})
        on_val, on_rest = sides
        feasible = {t: r for t, r in on_val.items() if r["admissible"]}
        choice = min(feasible, key=lambda t: (-feasible[t]["forget_efficacy"], t)) if feasible else None
        passed += bool(compare(choice, on_rest)["within_5pct"])
    return {"validation_items": validation_items, "splits": splits, "pass_rate": passed / splits}


def compare(chosen: float | None, rounds: dict[float, dict]) -> dict:
    """Quality verdict of the chosen tau against the best admissible tau of the exhaustive grid."""
    admissible = {t: r for t, r in rounds.items() if r["admissible"]}
    best = min(admissible, key=lambda t: (-admissible[t]["forget_efficacy"], t)) if admissible else None
    out = {"best_tau": best, "chosen_tau": chosen}
    if chosen is None or best is None:
        agree = chosen is None and best is None  # both say no admissible tau
        out |= {"within_5pct": agree, "within_5pct_dominance": agree}
        return out
    c, b = rounds[chosen], admissible[best]
    better_utility = [r["forget_efficacy"] for r in admissible.values() if r["retain_utility"] >= c["retain_utility"]]
    out |= {
        "fe_ratio_to_best": c["forget_efficacy"] / b["forget_efficacy"] if b["forget_efficacy"] else None,
        "ru_minus_best": c["retain_utility"] - b["retain_utility"],
        "within_5pct": c["admissible"] and c["forget_efficacy"] >= 0.95 * b["forget_efficacy"]
        and c["retain_utility"] >= b["retain_utility"],
        "within_5pct_dominance": c["admissible"] and c["forget_efficacy"] >= 0.95 * max(better_utility),
    }
    return out


def bench_subset(model_dir: Path, variant: str, authors: Sequence[int], config: ASUConfig, search: SearchConfig,
                 work_dir: Path, cost_only: bool) -> dict:
    """Search, chosen-tau round, and (unless cost_only) the exhaustive grid for one forget subset."""
    forget, subjects, retain = subset_sets(variant, authors)
    cpu = time.process_time()
    outcome = run_search(model_dir, forget, retain, config, search, work_dir / "search", subjects=subjects)
    search_cpu = time.process_time() - cpu
    split = split_validation(forget, retain, search, subjects=subjects)
    taus = list(search.tau_grid) if not cost_only else []
    if outcome.tau is not None:
        taus = [outcome.tau, *[t for t in taus if t != outcome.tau]]  # chosen first: timed right after the search
    cap = outcome.config["max_new_tokens"]
    base_test, base_utility = _score_round(model_dir, split.forget_test, split.retain_rest, config, cap)
    floors = absolute_floors(search, base_test.mean(), base_utility, len(split.retain_rest))
    rounds, grid = {}, {}
    for tau in taus:
        out = work_dir / f"round-tau{tau:g}"
        folder, wall, cpu_s = _timed_round(model_dir, forget, split.retain_rest, replace(config, tau=tau), out)
        grid[tau] = _score_round(folder, split.forget_test, split.retain_rest, config, cap)
        rounds[tau] = {"tau": tau, "seconds": wall, "cpu_seconds": cpu_s,
                       **_round_figures(grid[tau][0].mean(), grid[tau][1], floors)}
        shutil.rmtree(out, ignore_errors=True)
        logger.info("bench %s tau=%g: %s", authors, tau, rounds[tau])
    row = {"authors": list(authors), "status": outcome.status, "chosen_tau": outcome.tau,
           "candidates": outcome.candidates, "search_seconds": outcome.seconds["total"], "search_cpu_seconds":
           search_cpu, "search_stage_seconds": outcome.seconds, "reasons": outcome.reasons,
           "evidence": outcome.evidence(), "floors": outcome.floors, "validation_items": len(split.forget_val),
           "test_items": len(split.forget_test),
           "report_retain_items": len(split.retain_rest), "test_floors": vars(floors).copy(),
           "rounds": [rounds[t] for t in sorted(rounds)]}
    if outcome.tau is not None:
        chosen = rounds[outcome.tau]
        row |= {"cost_ratio": outcome.seconds["total"] / chosen["seconds"],
                "cost_ratio_cpu": search_cpu / chosen["cpu_seconds"]}
    if not cost_only:
        row |= compare(outcome.tau, rounds)
        # the oracle at the search's validation size, then with 2x and 3x as many items: does a bigger split help?
        size = len(split.forget_val)
        row["oracle_by_size"] = [oracle_agreement(base_test, base_utility, grid, search, k)
                                 for k in (size, 2 * size, 3 * size) if k == size or k <= len(split.forget_test) - size]
        row["oracle"] = row["oracle_by_size"][0]
    return row


def run_search_bench(
    variant: str = "default",
    subsets: Sequence[Sequence[int]] = DEFAULT_SUBSETS,
    *,
    config: ASUConfig | None = None,
    search: SearchConfig | None = None,
    work_dir: Path = Path("runs/bench_search"),
    out_dir: Path | None = None,
    cost_only: bool = False,
) -> dict:
    """The benchmark over ``subsets``; writes ``search.json`` and ``search.md`` into ``out_dir`` when given."""
    config, search = config or get_recipe("embedded"), search or SearchConfig()
    model_dir = ensure_embedded_model(variant)
    rows = []
    for authors in subsets:
        rows.append(bench_subset(model_dir, variant, authors, config, search,
                                 Path(work_dir) / "-".join(map(str, authors)), cost_only))
        if out_dir is not None:  # partial results survive an interrupted run
            _write(out_dir, variant, config, search, rows, cost_only)
    return _write(out_dir, variant, config, search, rows, cost_only)


def _write(out_dir, variant, config, search, rows, cost_only) -> dict:
    ratios = [r["cost_ratio"] for r in rows if "cost_ratio" in r]
    import torch

    result = {"model": variant, "torch_threads": torch.get_num_threads(), "round_config": config.to_dict(),
              "search_config": search.to_dict(),
              "cost_only": cost_only, "subsets": rows,
              "max_cost_ratio": max(ratios) if ratios else None,
              "all_within_5pct": None if cost_only else all(r.get("within_5pct") for r in rows)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "search.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (out_dir / "search.md").write_text(format_markdown(result), encoding="utf-8")
    return result


def format_markdown(result: dict) -> str:
    """Markdown tables: per subset the cost and the choice, then every grid round."""
    search = result["search_config"]
    lines = [f"# Temperature search benchmark (embedded model `{result['model']}`)", "",
             f"Recipe `embedded` per round; search grid {search['tau_grid']}, stage 2 `{search['stage2']}`, "
             f"floors ({search['floor_mode']}): retain utility {search['utility_floor']}, token entropy "
             f"{search['entropy_floor']}, fluent share {search['fluent_share_floor']}; torch threads "
             f"{result.get('torch_threads', 'n/a')}. Cost ratio = search wall time / wall time of the full round at "
             "the chosen tau, run right after it. Within 5%: FE(chosen) >= 0.95 FE(best admissible grid tau) and "
             "RU(chosen) >= RU(best), figures on the held-out test items; admissible = meets the same floors, "
             "relative to the current model on those test items. Oracle pass rate: share of 200 random splits of the "
             "test items in which the best admissible grid tau on as many items as the search validates on (with "
             "the full-round models) passes the same check on the other test items: the most any search of that "
             "validation size can expect.", "",
             "| forget authors | status | chosen tau | best grid tau | FE chosen / best | RU chosen - best "
             "| within 5% | oracle pass rate | search s | round s | cost ratio (wall) | cost ratio (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["subsets"]:
        chosen = next((x for x in r["rounds"] if x["tau"] == r["chosen_tau"]), None)
        fmt = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)  # noqa: E731
        lines.append(
            f"| {','.join(map(str, r['authors']))} | {r['status']} | {fmt(r['chosen_tau'], '{:g}')} "
            f"| {fmt(r.get('best_tau'), '{:g}')} | {fmt(r.get('fe_ratio_to_best'))} | {fmt(r.get('ru_minus_best'))} "
            f"| {r.get('within_5pct', 'n/a')} | {fmt(r.get('oracle', {}).get('pass_rate'), '{:.2f}')} "
            f"| {r['search_seconds']:.1f} "
            f"| {fmt(chosen and chosen['seconds'], '{:.1f}')} | {fmt(r.get('cost_ratio'), '{:.2f}')} "
            f"| {fmt(r.get('cost_ratio_cpu'), '{:.2f}')} |"
        )
    lines += ["", "Exhaustive grid (full rounds; forget efficacy on the held-out test items, utility on the retain "
              "items outside the validation sample):", "",
              "| forget authors | tau | FE | RU | ROUGE-L | prob | fluent | entropy | admissible | round s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["subsets"]:
        for x in r["rounds"]:
            mark = " (chosen)" if x["tau"] == r["chosen_tau"] else ""
            lines.append(
                f"| {','.join(map(str, r['authors']))} | {x['tau']:g}{mark} | {x['forget_efficacy']:.3f} "
                f"| {x['retain_utility']:.3f} | {x['rouge_l_recall']:.3f} | {x['probability']:.3f} "
                f"| {x['fluent_share']:.2f} | {x['token_entropy']:.3f} | {x['admissible']} | {x['seconds']:.1f} |"
            )
    lines += ["", "What the search saw (full-length trials on the validation items; floors relative to the current "
              "model on those items):", "",
              "| forget authors | validation items | tau | FE | RU | fluent | entropy | entropy floor | meets floors |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["subsets"]:
        floor = r.get("floors", {}).get("token_entropy")
        for e in r["evidence"]:
            if "trial_epochs" in e:
                lines.append(
                    f"| {','.join(map(str, r['authors']))} | {r.get('validation_items', 'n/a')} | {e['tau']:g} "
                    f"| {e['trial_forget_efficacy']:.3f} | {e['trial_retain_utility']:.3f} "
                    f"| {e['trial_fluent_share']:.2f} | {e['trial_token_entropy']:.3f} "
                    f"| {'n/a' if floor is None else f'{floor:.3f}'} | {e['trial_feasible']} |"
                )
    return "\n".join(lines) + "\n"
