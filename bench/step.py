"""`python -m bench.step`: the cost of one ASU training step against plain fine-tuning, side by side.

Three step kinds run interleaved on identical batches in one process (the machine is shared and noisy, so
only ratios measured together mean anything):
- ``plain``: forget NLL + retain NLL, backward, optimizer step (fine-tuning on both sets);
- ``asu_frozen_copy``: the ASU objective with a frozen second copy of the model run at every step (the
  official implementation);
- ``asu_precomputed``: the ASU objective with teacher distributions computed once before training.
Reports the median seconds per step, the ratio to ``plain``, the extra memory each teacher holds, and on a
GPU the peak allocated memory of each kind. Both teachers stay resident during the whole run, so the peaks
include both; the teacher-memory column is what tells the two apart.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from asu.attention import enable_smoothing
from asu.config import ASUConfig
from asu.data import collate
from asu.losses import nll_loss
from asu.modeling import load_model_and_tokenizer
from asu.step import objective_loss
from asu.teacher import PrecomputedTeacher, frozen_copy_teacher
from asu.trainer import prepare_data

KINDS = ("plain", "asu_frozen_copy", "asu_precomputed")


def _batches(data, batch_size: int, pad_id: int, device) -> tuple[dict, dict]:
    pairs = data.schedule[:batch_size]
    forget = collate([data.forget[f] for f, _ in pairs], pad_id, [f for f, _ in pairs])
    retain = collate([data.retain[r] for _, r in pairs], pad_id, [r for _, r in pairs])
    move = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
    return move(forget), move(retain)


def _plain_loss(model, forget, retain):
    logits = lambda b: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # noqa: E731
    return nll_loss(logits(forget), forget["labels"]) + nll_loss(logits(retain), retain["labels"])


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


SYNTHETIC_SIZES = {
    # name: (hidden, layers, heads, intermediate); vocabulary 32000 as Llama-2 (KL cost grows with it)
    "llama-160m": (768, 12, 12, 2048),
    "llama-1b": (2048, 16, 16, 5504),
    "llama-tiny": (64, 2, 4, 128),  # CPU smoke runs of bench.gpu_check (4.2M parameters, 4.1M of them vocabulary)
}


def synthetic_model(tokenizer, size: str):
    """A randomly initialised Llama of a named size (step cost does not depend on the weights' values)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, intermediate = SYNTHETIC_SIZES[size]
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def run_step_bench(
    model_dir: str | Path,
    forget,
    retain,
    config: ASUConfig,
    *,
    steps: int = 20,
    warmup: int = 3,
    synthetic: str | None = None,
) -> dict:
    """Time the three step kinds interleaved; returns a JSON-friendly dict of medians, ratios and memory.

    ``synthetic`` replaces the model of ``model_dir`` (its tokenizer is kept) by a random Llama of that size.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # As in a round: fp32 weights, bf16 autocast on a GPU (the frozen copy is then fp32 too).
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    model, tokenizer = load_model_and_tokenizer(model_dir)
    if synthetic:
        model = synthetic_model(tokenizer, synthetic)
    model = model.to(device)
    enable_smoothing(model)
    data = prepare_data(tokenizer, forget, retain, replace(config, epochs=1))
    forget_batch, retain_batch = _batches(data, config.batch_size, tokenizer.pad_token_id, device)
    with autocast:
        precomputed = PrecomputedTeacher.build(
            model, config, data.forget, data.retain, tokenizer.pad_token_id, config.batch_size
        )
    teachers = {"asu_precomputed": precomputed, "asu_frozen_copy": frozen_copy_teacher(model, config)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    model.train()

    def step(kind: str) -> float:
        _sync(device)
        start = time.perf_counter()
        with autocast:
            if kind == "plain":
                loss = _plain_loss(model, forget_batch, retain_batch)
            else:
                loss, _ = objective_loss(model, forget_batch, retain_batch, teachers[kind], config)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    peaks: dict[str, int] = {k: 0 for k in KINDS}
    for i in range(warmup + steps):
        for kind in KINDS:  # interleaved, so drift on a shared machine hits every kind alike
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            elapsed = step(kind)
            if i >= warmup:
                times[kind].append(elapsed)
                if device.type == "cuda":
                    peaks[kind] = max(peaks[kind], torch.cuda.max_memory_allocated())
    medians = {k: statistics.median(v) for k, v in times.items()}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "model": synthetic or str(model_dir),
        "parameters": model.num_parameters(),
        "batch": {
            "forget": config.batch_size,
            "retain": config.batch_size,
            "forget_tokens": int(forget_batch["attention_mask"].sum()),
            "method": config.method,
        },
        "steps": steps,
        "median_seconds": medians,
        "ratio_to_plain": {k: medians[k] / medians["plain"] for k in KINDS},
        "weights_mb": weights / 2**20,
        "teacher_extra_mb": {k: t.extra_bytes() / 2**20 for k, t in teachers.items()},
        "peak_allocated_mb": {k: v / 2**20 for k, v in peaks.items()} if device.type == "cuda" else None,
    }


def format_report(result: dict) -> str:
    """Human-readable table of a ``run_step_bench`` result."""
    lines = [
        f"device {result['device']} ({result['threads']} threads), model {result['model']} "
        f"({result['parameters'] / 1e6:.1f}M parameters, weights {result['weights_mb']:.1f} MB)",
        f"batch: {result['batch']['forget']} forget + {result['batch']['retain']} retain items, "
        f"method {result['batch']['method']}, median of {result['steps']} interleaved steps",
        f"{'step':<18}{'median s':>10}{'x plain':>9}{'teacher MB':>12}{'peak MB':>10}  (peak: both teachers resident)",
    ]
    for kind in KINDS:
        extra = result["teacher_extra_mb"].get(kind, 0.0)
        peak = result["peak_allocated_mb"][kind] if result["peak_allocated_mb"] else float("nan")
        lines.append(
            f"{kind:<18}{result['median_seconds'][kind]:>10.4f}{result['ratio_to_plain'][kind]:>9.3f}"
            f"{extra:>12.2f}{peak:>10.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.step``: ASU step vs plain fine-tuning step on identical batches."""
    import argparse
    from dataclasses import replace

    from cli.common import model_path, round_config, with_config
    from pipelines.demo.one_round import demo_sets

    parser = with_config(argparse.ArgumentParser(prog="python -m bench.step", description=main.__doc__))
    parser.add_argument("--model", default="default", help="default | tiny | smollm2-135m | a model folder")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--synthetic", choices=["llama-160m", "llama-1b"], help="time a random Llama of this size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    variant = args.model if args.model in ("default", "tiny") else None
    model_dir = model_path(args.model, progress=not args.json)
    forget, retain = demo_sets(variant or "default")
    config = replace(round_config(args), batch_size=args.batch_size)
    result = run_step_bench(model_dir, forget, retain, config, steps=args.steps, synthetic=args.synthetic)
    print(json.dumps(result) if args.json else format_report(result))


if __name__ == "__main__":
    main()
