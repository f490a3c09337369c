"""One unlearning round: model folder + forget set + retain set + config -> unlearned model folder.

Runs with ``accelerate``: CPU, one GPU (bf16 when supported) or several processes under ``accelerate launch``
(DDP). Every forget item is paired 1:1 with a retain item drawn by the seeded schedule of ``asu.data``;
gradient accumulation, AdamW with linear decay and a warm-up of one epoch's steps (when an epoch has more
than one step), gradient clipping. The trained model is saved as a safetensors Hugging Face folder with
``round.json`` (config, metrics, training curve).

Crash-resume (``asu.checkpoint``): while training, checkpoints go to ``<output_dir>/.checkpoint/`` at the cadence
``ASUConfig.checkpoint_every``; a call that finds a checkpoint of the same round resumes from it and ends at the same
weights as an uninterrupted run (bit-identical on CPU). The final model files and then ``round.json`` are written
only at the very end, ``round.json`` last: a folder without it is never a finished model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from asu.attention import disable_smoothing, enable_smoothing, num_decoder_layers, validate_layers
from asu.checkpoint import Progress, RoundCheckpoints, round_fingerprint
from asu.config import ASUConfig
from asu.data import Encoded, QAItem, collate, encode_items, pairing_schedule
from asu.device import Placement
from asu.errors import DiskFull, UsageError
from asu.modeling import load_model_and_tokenizer
from asu.passages import is_passage
from asu.sharding import (
    check_sharded_config,
    fsdp_requested,
    is_sharded,
    local_item_ids,
    make_accelerator,
    max_over_processes,
)
from asu.step import objective_loss
from asu.teacher import (
    PrecomputedTeacher,
    Teacher,
    adapter_disabled_teacher,
    check_rmu_layer,
    frozen_copy_teacher,
    stop_token_ids,
)
from asu.tracking import MetricLogger, NullLogger

#: Float32 master weights on the CPU; ``accelerate`` moves them to its device and casts per step.
TRAINING = Placement().for_training()
logger = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """What a round produced: the model folder, summary metrics and the per-step training curve."""

    model_dir: Path
    metrics: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def load(cls, model_dir: str | Path) -> RoundResult:
        """The result of a finished round from its folder's ``round.json`` (written last, so a folder without it
        holds no finished round: ``FileNotFoundError`` naming the folder)."""
        path = Path(model_dir) / "round.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {model_dir} holds no finished round; run the round again")
        saved = json.loads(path.read_text(encoding="utf-8"))
        return cls(Path(model_dir), saved["metrics"], saved["curve"])


@dataclass
class PreparedData:
    """Tokenised forget items, the retain items the schedule uses (by retain index), and the schedule."""

    forget: list[Encoded]
    retain: dict[int, Encoded]
    schedule: list[tuple[int, int]]
    excluded: list[int] | None = None  # token ids removed from the forget targets (forget_positions='facts')


def prepare_data(
    tokenizer,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    config: ASUConfig,
    refusals: Sequence[str] | None = None,
) -> PreparedData:
    """Validate and tokenise the sets; for ``idk`` replace forget answers by seeded refusal strings."""
    if not forget:
        raise UsageError("the forget set is empty; an unlearning round needs at least one forget item")
    needs_retain = config.objective.retain != "none"
    if needs_retain and not retain:
        raise UsageError(
            f"the retain set is empty but method={config.method!r} has a retain term; "
            "pass retain items or use method='ga'"
        )
    forget = list(forget)
    if config.objective.forget == "idk" and any(is_passage(it) for it in forget):
        raise UsageError("method='idk' does not apply to passages: it trains refusals as the answers to forget "
                         "questions, and a passage has no question; use asu_gd, asu_kl, ga, gd, npo, simnpo or rmu")
    if config.objective.forget == "idk":
        if refusals is None:
            from asu.embedded import refusal_strings

            refusals = refusal_strings()
        rng = random.Random(config.seed)
        forget = [{"question": it["question"], "answer": rng.choice(list(refusals))} for it in forget]
    kw = {"max_length": config.max_length, "prompt_format": config.prompt_format,
          "chunk_overlap": config.chunk_overlap, "max_chunks": config.max_passage_chunks}
    forget_seqs = encode_items(tokenizer, forget, what="forget", facts_only=config.forget_positions == "facts",
                               **kw)  # a passage: one sequence per chunk
    retain_seqs = encode_items(tokenizer, retain, what="retain", **kw) if needs_retain else []
    schedule = pairing_schedule(len(forget_seqs), len(retain_seqs), config.epochs, config.seed)
    used = sorted({r for _, r in schedule if r >= 0})
    excluded = stop_token_ids(tokenizer) if config.forget_positions == "facts" else None
    return PreparedData(forget_seqs, {i: retain_seqs[i] for i in used}, schedule, excluded)


def build_teacher(model, data: PreparedData, config: ASUConfig, pad_id: int) -> Teacher:
    """The configured teacher, built from ``model`` before its first update."""
    if config.teacher == "frozen_copy":
        return frozen_copy_teacher(model, config, data.excluded)
    if config.teacher == "adapter_disabled":
        return adapter_disabled_teacher(model, config, data.excluded)
    return PrecomputedTeacher.build(model, config, data.forget, data.retain, pad_id, config.batch_size,
                                   data.excluded)


def make_loader(data: PreparedData, config: ASUConfig, pad_id: int) -> DataLoader:
    """Batches of (forget batch, retain batch or None) following the fixed schedule (no further shuffling)."""

    def collate_pairs(pairs: list[tuple[int, int]]):
        forget = collate([data.forget[f] for f, _ in pairs], pad_id, [f for f, _ in pairs])
        if pairs[0][1] < 0:
            return forget, None
        return forget, collate([data.retain[r] for _, r in pairs], pad_id, [r for _, r in pairs])

    return DataLoader(data.schedule, batch_size=config.batch_size, shuffle=False, collate_fn=collate_pairs)


def warmup_steps(steps_per_epoch: int, config: ASUConfig) -> int:
    """One epoch of steps when an epoch has more than one step, else none (the paper's recipe)."""
    return steps_per_epoch if config.warmup == "one_epoch" and steps_per_epoch > 1 else 0


def _mixed_precision(config: ASUConfig) -> str:
    if config.precision == "bf16" or (
        config.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        return "bf16"
    return "no"


def _apply_lora(model, config: ASUConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise UsageError("finetune='lora' needs peft: pip install 'asu-pipeline[lora]'") from err
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _enable_checkpointing(model, config: ASUConfig) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant ``torch.utils.checkpoint``).

    With LoRA every base weight is frozen, so no input of a checkpointed layer needs a gradient; reentrant
    checkpointing then drops the adapters' gradients (open-unlearning's LoRA runs left ``lora_B`` at zero).
    Non-reentrant checkpointing has no such gap, and the embedding outputs are made to require grad as well so that
    a model class that forces reentrant checkpointing still trains its adapters.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UsageError(f"{type(model).__name__} does not support gradient checkpointing: set "
                         "gradient_checkpointing=false (or finetune='lora' to cut the training memory instead)")
    model.config.use_cache = False
    # transformers 5 renamed the method; both take the checkpoint kwargs as their first argument.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    if config.finetune == "lora":
        model.enable_input_require_grads()


def _adapter_snapshot(model, config: ASUConfig) -> dict[str, torch.Tensor]:
    """A copy of every trainable LoRA tensor before training (a few MB: rank x width per linear layer)."""
    if config.finetune != "lora":
        return {}
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _unmoved_adapter_tensors(model, start: dict[str, torch.Tensor]) -> list[str]:
    """Names of the adapter tensors the round left exactly as they started (logged: a gradient that never reached
    them, e.g. checkpointing without input gradients, leaves ``lora_B`` at its zero initialisation)."""
    now = dict(model.named_parameters())
    unmoved = [n for n, t in start.items() if torch.equal(now[n].detach().to(t.device), t)]
    if unmoved:
        logger.warning("%d of %d LoRA tensors did not change in this round (first: %s): their gradient never "
                       "arrived", len(unmoved), len(start), unmoved[0])
    return unmoved


def _teacher_model(teacher_model_dir: str | Path, student, config: ASUConfig):
    """The separate teacher model (smoothing enabled), checked to share the student's vocabulary."""
    if config.teacher == "adapter_disabled":
        raise UsageError("teacher='adapter_disabled' uses the student's own base weights; a separate "
                         "teacher_model_dir needs teacher='precomputed' or 'frozen_copy'")
    teacher, _ = load_model_and_tokenizer(teacher_model_dir, trust_remote_code=config.trust_remote_code,
                                          placement=TRAINING)
    if teacher.config.vocab_size != student.config.vocab_size:
        raise UsageError(f"teacher model {teacher_model_dir} has vocabulary {teacher.config.vocab_size}, the student "
                         f"{student.config.vocab_size}: the teacher must be the same model family (e.g. the original "
                         "model of a continual chain)")
    if config.objective.needs_teacher:
        enable_smoothing(teacher)
        validate_layers(teacher, config.layers)
    return teacher.eval().requires_grad_(False)


def run_round(
    model_dir: str | Path,
    forget: Sequence[QAItem],
    retain: Sequence[QAItem],
    config: ASUConfig,
    output_dir: str | Path,
    *,
    metric_logger: MetricLogger | None = None,
    progress: bool = True,
    refusals: Sequence[str] | None = None,
    teacher_model_dir: str | Path | None = None,
) -> RoundResult:
    """Run one unlearning round and save the result to ``output_dir``.

    Args:
        model_dir: local Hugging Face folder (safetensors) of the model to unlearn from.
        forget, retain: QA items ``{"question", "answer"}``.
        config: the round's configuration.
        output_dir: where the unlearned model folder is written (created). A checkpoint left there by an
            interrupted call with the same model, items and config is resumed; one of another round raises
            ``asu.checkpoint.CheckpointMismatchError``.
        metric_logger: receives params once and per-step metrics; defaults to a no-op.
        progress: show a progress bar over optimizer steps (main process only).
        refusals: ``idk`` refusal strings (default: ``asu.embedded.refusal_strings()``).
        teacher_model_dir: the model whose outputs are the teacher / reference targets (the smoothed forget
            teacher, retain KL and NPO references); None = ``model_dir`` itself, the paper's setting. In continual
            unlearning the original model can be the teacher of every round (``teacher_source='original'``).

    The result's ``metrics["resumed_from_step"]`` is the optimizer step the call resumed after (0: fresh start).
    """
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    metric_logger = metric_logger or NullLogger()
    _optimizer(config)  # a missing optional package fails here, before any model is loaded
    if fsdp_requested():
        check_sharded_config(config, separate_teacher=teacher_model_dir is not None)
    # RMU's loss reads a decoder layer's output: the layers above it and the LM head get no gradient, which DDP
    # only tolerates when told to look for unused parameters.
    find_unused = config.objective.uses_layer_activations
    accelerator = make_accelerator(
        mixed_precision=_mixed_precision(config),
        gradient_accumulation_steps=config.grad_accum_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
    )
    set_seed(config.seed)
    started, output_dir = time.perf_counter(), Path(output_dir)
    model, tokenizer = load_model_and_tokenizer(model_dir, trust_remote_code=config.trust_remote_code,
                                                placement=TRAINING)
    if config.layer_span != "all":
        config = config.for_depth(num_decoder_layers(model))
    data = prepare_data(tokenizer, forget, retain, config, refusals)
    checkpoints = RoundCheckpoints(
        output_dir,
        lambda: round_fingerprint(
            model_dir, forget, retain, refusals, config, accelerator.num_processes, accelerator.mixed_precision,
            teacher_model_dir,
        ),
        config.checkpoint_every,
    )
    _ = checkpoints.resume_from  # a checkpoint of another round fails here, before any work
    if config.gradient_checkpointing:
        _enable_checkpointing(model, config)
    if config.finetune == "lora":
        model = _apply_lora(model, config)
    adapter_start = _adapter_snapshot(model, config)
    if config.objective.needs_teacher:
        enable_smoothing(model)
        validate_layers(model, config.layers)
    if config.objective.uses_layer_activations:
        check_rmu_layer(model, config)
    model.to(accelerator.device)
    # Built from the round's original weights on every call: a resumed student's weights are loaded only in _train.
    if is_sharded(accelerator):  # each process computes its own items' targets from the sharded model, in _train
        teacher_for = _sharded_teacher
    else:
        with accelerator.autocast():
            if teacher_model_dir is None:
                teacher = build_teacher(model, data, config, tokenizer.pad_token_id)
            else:
                teacher = build_teacher(_teacher_model(teacher_model_dir, model, config).to(accelerator.device),
                                        data, config, tokenizer.pad_token_id)

        def teacher_for(*_) -> Teacher:
            return teacher
    metric_logger.log_params({**config.to_dict(), "num_forget": len(data.forget), "num_retain_used": len(data.retain)})
    curve, resumed, teacher = _train(
        accelerator, model, data, teacher_for, config, tokenizer.pad_token_id, metric_logger, progress, checkpoints
    )
    frozen = _unmoved_adapter_tensors(accelerator.unwrap_model(model), adapter_start)
    out = _save(accelerator, model, tokenizer, config, output_dir)
    metrics = {
        "seconds": time.perf_counter() - started,
        "optimizer_steps": float(len(curve)),
        "resumed_from_step": float(resumed),
        "teacher_extra_mb": teacher.extra_bytes() / 2**20,
        **({"unmoved_adapter_tensors": float(len(frozen))} if config.finetune == "lora" else {}),
        **{f"final_{k}": v for k, v in (curve[-1] if curve else {}).items() if k != "step"},
    }
    if accelerator.is_main_process:
        _write_json_atomically(out / "round.json", {"config": config.to_dict(), "metrics": metrics, "curve": curve})
        checkpoints.remove()
    accelerator.wait_for_everyone()
    metric_logger.log_metrics({f"round_{k}": v for k, v in metrics.items()})
    return RoundResult(out, metrics, curve)


def _train(
    accelerator,
    model,
    data: PreparedData,
    teacher_for: Callable[..., Teacher],
    config: ASUConfig,
    pad_id: int,
    metric_logger: MetricLogger,
    progress: bool,
    checkpoints: RoundCheckpoints,
) -> tuple[list[dict[str, float]], int, Teacher]:
    """The optimisation loop, resumed from ``checkpoints`` when one matches; returns (curve, resumed step, teacher).

    ``teacher_for(accelerator, model, data, loader, config, pad_id)`` gives the teacher, called after ``prepare``
    and before a checkpoint's weights are restored (targets of the original model): the teacher built before
    training, or in a sharded round :func:`_sharded_teacher`.

    The curve has one row per optimizer step, including the steps done before a resume.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    optimizer = _optimizer(config)(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    model.train()
    model, optimizer, loader = accelerator.prepare(model, optimizer, make_loader(data, config, pad_id))
    total = math.ceil(len(loader) / config.grad_accum_steps)
    per_epoch = max(1, total // config.epochs)
    # Not prepared: accelerate would step a prepared scheduler once per process per step.
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(per_epoch, config), total)
    teacher = teacher_for(accelerator, model, data, loader, config, pad_id)
    done = checkpoints.restore(accelerator, model, optimizer, scheduler)
    if done.micro_batches:  # the loader follows a fixed schedule: skipping the consumed batches restores its position
        loader = accelerator.skip_first_batches(loader, done.micro_batches)
    curve, window, micro_batches = list(done.curve), [], done.micro_batches
    bar = tqdm(
        total=total, initial=done.step, desc="unlearning", disable=not (progress and accelerator.is_local_main_process)
    )
    for forget_batch, retain_batch in loader:
        with accelerator.accumulate(model):
            loss, parts = objective_loss(model, forget_batch, retain_batch, teacher, config)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        window.append(parts)
        micro_batches += 1
        if accelerator.sync_gradients:
            scheduler.step()
            row = {k: sum(p[k] for p in window) / len(window) for k in window[0]}
            row |= {"step": float(len(curve) + 1), "lr": scheduler.get_last_lr()[0]}
            curve.append(row)
            metric_logger.log_metrics({k: v for k, v in row.items() if k != "step"}, step=len(curve))
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            window = []
            if checkpoints.due(len(curve), total, per_epoch):
                checkpoints.save(accelerator, model, optimizer, scheduler, Progress(len(curve), micro_batches, curve))
    bar.close()
    return curve, done.step, teacher


def _sharded_teacher(accelerator, model, data: PreparedData, loader, config: ASUConfig, pad_id: int) -> Teacher:
    """This process's precomputed teacher: the targets of the items in its own batches, from the sharded model."""
    forget_ids, retain_ids = local_item_ids(loader)
    with accelerator.autocast():
        return PrecomputedTeacher.build(
            model, config, data.forget, {i: data.retain[i] for i in retain_ids}, pad_id, config.batch_size,
            data.excluded, forget_ids=forget_ids, agree=lambda n: max_over_processes(accelerator, n),
        )


def _optimizer(config: ASUConfig):
    """The optimizer class named by ``config.optimizer``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError as err:
        raise UsageError("optimizer='adamw_8bit' needs the bitsandbytes package: pip install bitsandbytes (or use "
                         "optimizer='adamw')") from err
    return bitsandbytes.optim.AdamW8bit


def _save(accelerator, model, tokenizer, config: ASUConfig, out: Path) -> Path:
    """Save the unwrapped (LoRA-merged) model as safetensors with the stock attention implementation.

    A ``round.json`` of an earlier round in ``out`` is deleted first: it must never vouch for these new weights.
    """
    accelerator.wait_for_everyone()
    # Sharded: gathered into one full state dict on the main process (every process takes part).
    state = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    model = accelerator.unwrap_model(model)
    if config.finetune == "lora":
        model = model.merge_and_unload()
    disable_smoothing(model)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "round.json").unlink(missing_ok=True)
        try:
            model.save_pretrained(out, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(out)
        except Exception as err:
            if DiskFull.matches(err):  # the folder stays without round.json: never taken for a result
                raise DiskFull(f"no space left writing the unlearned model to {out} ({err}); free disk space or "
                               "choose another --out, then run again") from err
            raise
        logger.info("saved the unlearned model to %s", out)
    accelerator.wait_for_everyone()
    return out


def _write_json_atomically(path: Path, payload: dict) -> None:
    """Write ``path`` via a temporary file and a rename, so a reader sees the whole file or none."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(payload, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
