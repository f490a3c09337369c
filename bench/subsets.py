"""`python -m bench.subsets`: the product's automatic settings against an exhaustive grid of full rounds.

For each forget subset (the real-world scenario on SmolLM2-135M-Instruct; single TOFU authors forgotten by the
SmolLM2 TOFU target), three kinds of model are built from the same training items, the items the product's final
round trains on (``pipelines.round.unlearn.final_round``: every forget item plus the search's validation items,
the retain items outside the search's retain validation sample):

- ``auto``: ASU as the product runs it, ``auto_unlearn`` from the ``pretrained`` recipe (search, then the round);
  with ``--search KEY=VALUE`` the search runs with those ``SearchConfig`` overrides and the row is named after them
  (``auto trial_fluency=validation``), so search options are compared on the same items and grid;
- ``grid``: one full round at every point of ``--taus`` x ``--lr-multipliers`` (multiples of the recipe's
  learning rate), the rest of the ``pretrained`` recipe unchanged;
- ``paper``: one round with the paper's fixed recipe (``tofu_paper``: tau 2.3, lr 1e-5, lambda 0.1).

Every model is scored on the subset's *test* items, which no setting was chosen on, by the **combined score** =
hmean(forget efficacy, utility relative to the model before the round (capped at 1), fluent share of the forget
answers), where forget efficacy = 1 - keyword hits of the held-out paraphrase probes (scenario) or 1 - ROUGE-L
recall of the 15 test forget answers (TOFU), and utility = retain-probe hits (scenario) or TOFU model utility.
Targets (issue 12): auto >= 0.9 x the best grid point, and auto >= paper, on every subset.

Writes ``subsets.json`` / ``subsets.md`` after every model, and a rerun keeps what is already measured (a subset's
rows are resumed point by point, and a larger grid adds only its new points to the table's grid), so the run can be
spread over several sessions:

    python -m bench.subsets --subset scenario tofu:1 tofu:3 tofu:5 --out bench/results
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from asu.config import ASUConfig
from asu.errors import UsageError
from asu.fluency import FluencyJudge
from asu.modeling import load_model_and_tokenizer
from asu.recipes import get_recipe
from bench.realmodel import Setting, product_round, selection_score

logger = logging.getLogger(__name__)

#: The search's own ranges (``SearchConfig``: tau 1.25-4, lr 1-30 x the recipe's), at the points where its choices
#: fell: 1 x the recipe's lr (1e-5) forgets nothing on SmolLM2 (realmodel.md), so the grid starts at 3 x.
TAUS = (1.5, 2.0, 3.0, 4.0)
LR_MULTIPLIERS = (3.0, 10.0, 30.0)
TARGET_RATIO = 0.9
RESULTS = "subsets.json"
RowKind = Literal["auto", "paper", "grid"]
ROW_KINDS: tuple[RowKind, ...] = get_args(RowKind)


def grid_points(recipe: ASUConfig, taus: Sequence[float], multipliers: Sequence[float]) -> list[dict]:
    """The grid's settings, as overrides of ``recipe`` (learning rates are multiples of its own)."""
    return [{"tau": float(t), "learning_rate": recipe.learning_rate * m} for t in taus for m in multipliers]


def point_key(point: dict) -> str:
    return "grid " + ", ".join(f"{k} {v:g}" for k, v in point.items())


def auto_key(search: Mapping[str, object]) -> str:
    """``auto`` for the product's own search, else ``auto k=v, ...`` for a search with those overrides."""
    return "auto" + ("" if not search else " " + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(search.items())))


def combined_on_test(test: dict, base: dict) -> dict[str, float]:
    """Combined score on the test items and its parts (``bench.realmodel.selection_score`` on the test figures: see
    the module docstring)."""
    tofu = "forget_probe_hits" not in test
    forget, kept = ("forget_rouge", "model_utility") if tofu else ("forget_probe_hits", "retain_probe_hits")
    return selection_score({"forget_correct": test[forget], "retain_correct": test[kept],
                            "fluent_share": test["fluent_share"]}, {"retain_correct": base[kept]})


def subset_setting(name: str, model: str = "smollm2-135m") -> Setting:
    """``scenario`` (the paris scenario) or ``tofu:N`` (TOFU author N forgotten by the SmolLM2 target)."""
    if name == "scenario":
        from bench.realmodel import scenario_setting

        return scenario_setting("paris", model)
    if name.startswith("tofu:"):
        from bench.realmodel_tofu import tofu_setting

        setting = tofu_setting(forget_author=int(name.split(":", 1)[1]))
        # The search validates on the selection items only; the final round trains on all 20 forget items.
        chosen = {id(it) for it in setting.select_forget}
        return replace(setting, forget=[it for it in setting.forget if id(it) not in chosen],
                       search_validation=list(setting.select_forget))
    raise ValueError(f"unknown subset {name!r}: use 'scenario' or 'tofu:N' with N a TOFU target author")


def _round(setting: Setting, config, out: Path) -> tuple[Path, float]:
    from pipelines.round.unlearn import final_round

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = final_round(setting.model_dir, setting.forget, setting.product_retain, config,
                         setting.search_config(), out, forget_validation=setting.search_validation)
    return result.model_dir, time.perf_counter() - started


def _auto(setting: Setting, recipe: ASUConfig, out: Path) -> tuple[Path, dict]:
    model_dir, result = product_round(setting, out, recipe)
    row = {"status": result["status"], "chosen": result["setting"] or {}, "reasons": result["reasons"][:4],
           "search_seconds": result["seconds"]["search"], "round_seconds": result["seconds"].get("round")}
    return model_dir, row


def _test(setting: Setting, model_dir: Path, judge: FluencyJudge) -> dict:
    model, tokenizer = load_model_and_tokenizer(model_dir)
    test = setting.test(model, tokenizer, judge)
    test.pop("samples", None)
    return test


def run_subset(setting: Setting, recipe: ASUConfig, paper: ASUConfig, points: Sequence[dict], work: Path, kept: dict,
               save: Callable[[dict], None], kinds: Sequence[RowKind] = ROW_KINDS,
               search: Mapping[str, object] = MappingProxyType({})) -> dict:
    """Base, then the auto, paper and grid rows of one subset (those of ``kinds``); rows already in ``kept`` are not
    measured again. ``search``: ``SearchConfig`` overrides of the auto row's search (see :func:`auto_key`)."""
    judge_model, judge_tok = load_model_and_tokenizer(setting.judge_model or setting.model_dir)
    judge = FluencyJudge(judge_model, judge_tok)
    data = {"notes": setting.notes, "rows": dict(kept.get("rows", {}))}
    rows = data["rows"]
    if "base" not in rows:
        rows["base"] = {"test": _test(setting, setting.model_dir, judge)}
    base = rows["base"]["test"]
    todo = [*([(auto_key(search), None)] if "auto" in kinds else []), *([("paper", paper)] if "paper" in kinds else []),
            *([(point_key(p), replace(recipe, **p)) for p in points] if "grid" in kinds else [])]
    for key, config in todo:
        if key in rows:
            continue
        out = work / key.replace(" ", "").replace(",", "_")
        if config is None:
            searched = replace(setting, search_overrides={**setting.search_overrides, **search})
            model_dir, row = _auto(searched, recipe, out)
        else:
            model_dir, seconds = _round(setting, config, out)
            row = {"settings": {k: getattr(config, k) for k in ("tau", "learning_rate", "forget_weight")},
                   "round_seconds": seconds}
        row["test"] = _test(setting, model_dir, judge)
        shutil.rmtree(out, ignore_errors=True)
        rows[key] = row
        logger.warning("%s %s: test %s", setting.name, key, {k: round(v, 3) for k, v in
                                                               combined_on_test(row["test"], base).items()})
        save(data)
    return data


def summarise(data: dict, grid_size: int, auto_row: str = "auto") -> dict:
    """Scores of every row, the best grid point, and the two targets' verdicts for ``auto_row`` (None while a row is
    missing, or while fewer than ``grid_size`` grid points are measured: a partial grid's best is no verdict)."""
    base = data["rows"]["base"]["test"]
    scores = {k: combined_on_test(r["test"], base) for k, r in data["rows"].items()}
    grid = {k: s["combined_score"] for k, s in scores.items() if k.startswith("grid ")}
    best = max(grid, key=grid.get) if grid else None
    auto = scores.get(auto_row, {}).get("combined_score")
    paper = scores.get("paper", {}).get("combined_score")
    complete = len(grid) >= grid_size
    ratio = auto / grid[best] if auto is not None and complete and grid[best] > 0 else None
    return {"scores": scores, "best_grid": best, "auto_over_best": ratio,
            "meets_ratio": None if ratio is None else ratio >= TARGET_RATIO,
            "beats_paper": None if auto is None or paper is None else auto >= paper}


def _row_order(item: tuple[str, dict]) -> tuple:
    """base, auto, paper, then the grid by tau and learning rate (runs merged in any order read the same)."""
    key, row = item
    settings = row.get("settings", {})
    kind = "auto" if key.startswith("auto") else key
    return ({"base": 0, "auto": 1, "paper": 2}.get(kind, 3), key != "auto", settings.get("tau", 0),
            settings.get("learning_rate", 0))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_markdown(result: dict) -> str:
    lines = ["# Automatic settings against an exhaustive grid of full rounds (SmolLM2-135M)", "",
             f"Grid: tau {result['taus']} x learning rate {result['lr_multipliers']} x the `pretrained` recipe's; "
             "test figures on items no setting was chosen on. Combined = hmean(forget efficacy, relative utility, "
             f"fluent share). Targets: auto >= {TARGET_RATIO} x best grid point; auto >= paper's fixed recipe.", "",
             "| subset | auto (chosen) | auto score | best grid point | its score | auto / best | paper score | "
             "targets |", "|---|---|---|---|---|---|---|---|"]
    grid_size = len(result["taus"]) * len(result["lr_multipliers"])
    for name, data in result["subsets"].items():
        # the product's search first, then any search variant measured on the same items (``--search``)
        for auto_row in sorted((k for k in data["rows"] if k.startswith("auto")), key=lambda k: (k != "auto", k)):
            s = summarise(data, grid_size, auto_row)
            auto = data["rows"][auto_row]
            chosen = f"{auto['status']}: " + ", ".join(f"{k} {v:g}" for k, v in auto["chosen"].items())
            verdict = ("(incomplete)" if s["meets_ratio"] is None or s["beats_paper"] is None else
                       f"ratio {'met' if s['meets_ratio'] else 'MISSED'}, "
                       f"paper {'beaten' if s['beats_paper'] else 'NOT beaten'}")
            label = name if auto_row == "auto" else f"{name} ({auto_row})"
            lines.append(f"| {label} | {chosen} | {_fmt(s['scores'][auto_row]['combined_score'])} | "
                         f"{s['best_grid'] or '-'} | "
                         f"{_fmt(s['scores'].get(s['best_grid'], {}).get('combined_score'))} | "
                         f"{_fmt(s['auto_over_best'])} | {_fmt(s['scores'].get('paper', {}).get('combined_score'))} | "
                         f"{verdict} |")
    for name, data in result["subsets"].items():
        s = summarise(data, grid_size)
        lines += ["", f"## {name}", "", *[f"- {n}" for n in data["notes"]], "",
                  "| model | forget efficacy | relative utility | fluent share | combined | round s | search s |",
                  "|---|---|---|---|---|---|---|"]
        for key, row in sorted(data["rows"].items(), key=_row_order):
            sc = s["scores"][key]
            seconds = [row.get("round_seconds"), row.get("search_seconds")]
            lines.append(f"| {key} | {sc['forget_score']:.3f} | {sc['relative_utility']:.3f} | "
                         f"{sc['fluent_share']:.3f} | {sc['combined_score']:.3f} | " +
                         " | ".join("-" if v is None else f"{v:.0f}" for v in seconds) + " |")
    return "\n".join(lines) + "\n"


def run_subsets(names: Sequence[str], setting_of: Callable[[str], Setting], work_dir: Path, out_dir: Path, *,
                taus: Sequence[float] = TAUS, multipliers: Sequence[float] = LR_MULTIPLIERS,
                recipe: ASUConfig | None = None, paper: ASUConfig | None = None,
                kinds: Sequence[RowKind] = ROW_KINDS, search: Mapping[str, object] = MappingProxyType({})) -> dict:
    """Every subset in turn; ``out_dir/subsets.json`` is written after every model and resumed from.

    ``recipe`` (default ``pretrained``) is what the search starts from and the grid varies; ``paper`` (default
    ``tofu_paper``) the fixed recipe compared with.
    """
    recipe, paper = recipe or get_recipe("pretrained"), paper or get_recipe("tofu_paper")
    path = out_dir / RESULTS
    result = json.loads(path.read_text()) if path.is_file() else {}
    # The grid of the table is every point measured so far: a run measures the points of its own grid not yet in.
    result = {"taus": sorted({*taus, *result.get("taus", ())}),
              "lr_multipliers": sorted({*multipliers, *result.get("lr_multipliers", ())}),
              "subsets": result.get("subsets", {})}

    def save(data: dict, name: str) -> None:
        result["subsets"][name] = data
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        (out_dir / "subsets.md").write_text(format_markdown(result), encoding="utf-8")

    for name in names:
        points = grid_points(recipe, taus, multipliers)
        data = run_subset(setting_of(name), recipe, paper, points, work_dir / name.replace(":", "-"),
                          result["subsets"].get(name, {}), lambda d, n=name: save(d, n), kinds, search)
        save(data, name)
    return result


def merge_results(sources: Sequence[Path], out_dir: Path) -> dict:
    """Rows of other runs' ``subsets.json`` added to ``out_dir``'s (a row measured in both keeps ``out_dir``'s); the
    table's grid becomes the union. Rewrites ``out_dir/subsets.{json,md}``."""
    path = out_dir / RESULTS
    result = json.loads(path.read_text()) if path.is_file() else {"taus": [], "lr_multipliers": [], "subsets": {}}
    for source in sources:
        other = json.loads(Path(source).read_text())
        result["taus"] = sorted({*result["taus"], *other["taus"]})
        result["lr_multipliers"] = sorted({*result["lr_multipliers"], *other["lr_multipliers"]})
        for name, data in other["subsets"].items():
            mine = result["subsets"].setdefault(name, {"notes": data["notes"], "rows": {}})
            mine["rows"] = {**data["rows"], **mine["rows"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out_dir / "subsets.md").write_text(format_markdown(result), encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", nargs="+", default=["scenario", "tofu:1", "tofu:3", "tofu:5"])
    parser.add_argument("--taus", type=float, nargs="+", default=list(TAUS))
    parser.add_argument("--lr-multipliers", type=float, nargs="+", default=list(LR_MULTIPLIERS))
    parser.add_argument("--rows", nargs="+", default=list(ROW_KINDS), choices=ROW_KINDS,
                        help="which models to build (base is always measured): two processes can share a subset's "
                             "grid, e.g. one with --taus 1.5 2 and one with --rows grid --taus 3 4 --out OTHER")
    parser.add_argument("--search", action="append", metavar="KEY=VALUE",
                        help="SearchConfig override of the auto row's search (repeatable); the row is named after "
                             "them, e.g. --search trial_fluency=validation -> 'auto trial_fluency=\"validation\"'")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only add the rows of these subsets.json files (other runs) to --out's, and render")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--work-dir", default="runs/bench_subsets")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.merge:
        print(format_markdown(merge_results([Path(m) for m in args.merge], Path(args.out))))
        return
    if any(not (math.isfinite(t) and t >= 1) for t in args.taus):
        parser.error(f"--taus {args.taus}: attention temperatures must be finite and >= 1")
    from cli.common import parse_overrides
    from pipelines.temperature_search import SearchConfig

    try:  # a wrong key or value fails here, before any model is built
        search = parse_overrides(args.search, "--search")
        SearchConfig.from_dict(search)
    except UsageError as err:
        parser.error(str(err))
    result = run_subsets(args.subset, lambda name: subset_setting(name, args.model), Path(args.work_dir),
                         Path(args.out), taus=args.taus, multipliers=args.lr_multipliers, kinds=args.rows,
                         search=search)
    print(format_markdown(result))


if __name__ == "__main__":
    main()
