"""`python -m bench.asu_choices`: what ASU trains on, measured with full rounds on the real model.

The choices of ``ASUConfig`` that decide whether ASU forgets coherently on SmolLM2-135M-Instruct, one full round
each on the ``paris`` scenario (``asu/scenarios/paris.json``: 25 forget QA, 28 retain QA), scored on its held-out
paraphrase probes (never trained on; keyword hits of greedy answers) with the fluency measure:

- ``forget_positions``: ``answer`` (every answer token + EOS, the paper) or ``facts`` (the answer's fact tokens, stop
  tokens removed from the teacher there);
- ``layer_span`` / ``layers``: all layers or the middle third smoothed;
- tau, learning rate, retain weight gamma, forget weight lambda, epochs.

Every other field is ``bench.realmodel.BASE_ROUND`` (asu_gd, 5 epochs, batch 4, lambda 1). Rows are appended to
``--out/asu_choices.json`` (a crash loses nothing measured) and the table is rewritten to ``asu_choices.md``.
This is a measurement of the choices, not a selection: the product chooses per request on its validation split.

    python -m bench.asu_choices --rounds '[{"forget_positions": "facts", "tau": 4.0, "layer_span": "middle_third"}]'
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

COLUMNS = ("forget_probe_hits", "retain_probe_hits", "fluent_share", "refusal_share", "forget_rouge",
           "extraction_strength")


def run(rounds: list[dict], out_dir: Path, work: Path) -> list[dict]:
    """One full round per entry of ``rounds`` (ASUConfig fields over ``BASE_ROUND``), tested on the probes."""
    from asu.config import ASUConfig
    from asu.fluency import FluencyJudge
    from asu.modeling import load_model_and_tokenizer
    from asu.trainer import run_round
    from bench.realmodel import BASE_ROUND, scenario_setting

    setting = scenario_setting("paris")
    model, tokenizer = load_model_and_tokenizer(setting.model_dir)
    judge = FluencyJudge(model, tokenizer)
    path = out_dir / "asu_choices.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    if not any(r["settings"] == "base" for r in rows):
        rows.append({"settings": "base", "seconds": 0, "fluency_reference": judge.settings.reference,
                     **_figures(setting.test(model, tokenizer, judge))})
    for overrides in rounds:
        config = ASUConfig.from_dict({**BASE_ROUND, "method": "asu_gd", **overrides})
        shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        run_round(setting.model_dir, setting.forget, setting.retain, config, work, progress=False)
        seconds = time.perf_counter() - started
        unlearned, tok = load_model_and_tokenizer(work)
        rows.append({"settings": overrides, "seconds": round(seconds), "fluency_reference": judge.settings.reference,
                     **_figures(setting.test(unlearned, tok, judge))})
        logging.getLogger(__name__).warning("%s: %s", overrides, {k: rows[-1][k] for k in COLUMNS})
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        (out_dir / "asu_choices.md").write_text(format_markdown(rows), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _figures(test: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in test.items()}


def format_markdown(rows: list[dict]) -> str:
    lines = ["# What ASU trains on: full rounds on SmolLM2-135M-Instruct, paris scenario", "",
             "asu_gd, 5 epochs, batch 4, lambda 1 unless stated; figures on the 22 held-out forget probes and 23 "
             "retain probes (base model: 1.000 / 1.000 by construction).", "",
             "| forget positions | layers | tau | lr | gamma | other | forget probes correct | retain probes correct | "
             "fluent | forget ROUGE-L | round s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["settings"]
        if s == "base":
            cells = ["(base model)", "-", "-", "-", "-", "-"]
        else:
            layers = s.get("layer_span", "all") if "layers" not in s else "middle_third"
            other = ", ".join(f"{k}={v}" for k, v in s.items()
                              if k not in ("forget_positions", "layer_span", "layers", "tau", "learning_rate",
                                           "retain_weight"))
            cells = [s.get("forget_positions", "answer"), layers, f"{s.get('tau', '-')}",
                     f"{s.get('learning_rate', '-'):g}", f"{s.get('retain_weight', 1.0):g}", other or "-"]
        fluent = f"{row['fluent_share']:.3f}" + ("*" if row.get("fluency_reference") == "calibration" else "")
        cells += [f"{row['forget_probe_hits']:.3f}", f"{row['retain_probe_hits']:.3f}", fluent,
                  f"{row['forget_rouge']:.3f}", "-" if row["seconds"] is None else str(row["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\\* judged with the fluency measure's earlier reference (calibration medians alone); the others "
              "with the per-question reference. A round time of '-': it ran beside another job, so its wall time "
              "is no figure."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", required=True, help="JSON list of ASUConfig overrides, one full round each")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--work-dir", default="runs/bench_asu_choices")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    rows = run(json.loads(args.rounds), Path(args.out), Path(args.work_dir))
    print(format_markdown(rows))


if __name__ == "__main__":
    main()
