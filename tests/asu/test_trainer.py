"""One unlearning round on the tiny embedded model: outputs, teachers, invariants, forgetting, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from asu.config import ASUConfig
from asu.data import collate
from asu.modeling import ModelLoadError, load_model_and_tokenizer
from asu.step import objective_loss
from asu.teacher import PrecomputedTeacher, adapter_disabled_teacher, frozen_copy_teacher
from asu.trainer import prepare_data, run_round

FAST = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=1, batch_size=4, grad_accum_steps=1, max_length=256)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_round_saves_a_plain_loadable_model(tiny_model_dir, tiny_sets, tmp_path):
    from transformers import AutoModelForCausalLM

    result = run_round(tiny_model_dir, *tiny_sets, replace(FAST, grad_accum_steps=2), tmp_path / "out", progress=False)
    assert (result.model_dir / "model.safetensors").is_file()
    assert not list(result.model_dir.glob("*.bin"))
    reloaded = AutoModelForCausalLM.from_pretrained(result.model_dir)  # no asu registration needed
    assert reloaded.config._attn_implementation == "sdpa"
    assert len(result.curve) == result.metrics["optimizer_steps"] == 3  # 20 forget items / 4 per batch / 2 accumulated
    assert [row["step"] for row in result.curve] == [1.0, 2.0, 3.0]
    saved = json.loads((result.model_dir / "round.json").read_text())
    assert saved["config"]["tau"] == 3.0 and len(saved["curve"]) == 3
    assert max_diff(weights(result.model_dir), weights(tiny_model_dir)) > 0


def _step_losses(model_dir, sets, config, teachers):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    from asu.attention import enable_smoothing

    enable_smoothing(model)
    data = prepare_data(tokenizer, *sets, replace(config, epochs=1))
    pairs = data.schedule[:4]
    forget = collate([data.forget[f] for f, _ in pairs], tokenizer.pad_token_id, [f for f, _ in pairs])
    retain = collate([data.retain[r] for _, r in pairs], tokenizer.pad_token_id, [r for _, r in pairs])
    out = {}
    for name in teachers:
        if name == "precomputed":
            teacher = PrecomputedTeacher.build(model, config, data.forget, data.retain, tokenizer.pad_token_id)
        else:
            teacher = frozen_copy_teacher(model, config)
        out[name] = objective_loss(model, forget, retain, teacher, config)[1]
    return out


@pytest.mark.parametrize("method", ["asu_gd", "asu_kl", "npo"])
def test_precomputed_teacher_matches_frozen_copy(tiny_model_dir, tiny_sets, method):
    config = replace(FAST, method=method)
    losses = _step_losses(tiny_model_dir, tiny_sets, config, ["precomputed", "frozen_copy"])
    for part in losses["frozen_copy"]:
        assert losses["precomputed"][part] == pytest.approx(losses["frozen_copy"][part], rel=1e-5, abs=1e-7)


def test_top_k_teacher_is_close_to_exact(tiny_model_dir, tiny_sets):
    """Over budget, top-k + tail targets give a forget loss within 2% of the exact one (k = 64 of 1024)."""
    exact = _step_losses(tiny_model_dir, tiny_sets, FAST, ["precomputed"])["precomputed"]
    compressed_config = replace(FAST, teacher_memory_budget_mb=0.0, teacher_top_k=64)
    compressed = _step_losses(tiny_model_dir, tiny_sets, compressed_config, ["precomputed"])["precomputed"]
    assert compressed["forget_loss"] == pytest.approx(exact["forget_loss"], rel=0.02)
    assert compressed["forget_loss"] <= exact["forget_loss"] + 1e-7  # coarsened KL is a lower bound


def test_precomputed_and_frozen_copy_rounds_end_at_the_same_weights(tiny_model_dir, tiny_sets, tmp_path):
    a = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "pre", progress=False)
    b = run_round(tiny_model_dir, *tiny_sets, replace(FAST, teacher="frozen_copy"), tmp_path / "copy", progress=False)
    assert a.metrics["teacher_extra_mb"] > 0 and b.metrics["teacher_extra_mb"] > 0
    assert max_diff(weights(a.model_dir), weights(b.model_dir)) < 1e-5


def test_a_separate_teacher_model_teaches_the_round(tiny_model_dir, tiny_sets, tmp_path):
    """teacher_model_dir: the same model as teacher changes nothing; another model's targets change the result."""
    plain = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "plain", progress=False)
    same = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "same", progress=False,
                     teacher_model_dir=tiny_model_dir)
    assert max_diff(weights(plain.model_dir), weights(same.model_dir)) < 1e-6
    # The first round's model as the student, the original as teacher (continual teacher_source='original').
    second = run_round(plain.model_dir, *tiny_sets, FAST, tmp_path / "second-previous", progress=False)
    original = run_round(plain.model_dir, *tiny_sets, FAST, tmp_path / "second-original", progress=False,
                         teacher_model_dir=tiny_model_dir)
    assert max_diff(weights(second.model_dir), weights(original.model_dir)) > 1e-4
    with pytest.raises(ValueError, match="adapter_disabled"):
        run_round(tiny_model_dir, *tiny_sets, replace(FAST, teacher="adapter_disabled", finetune="lora"),
                  tmp_path / "lora", progress=False, teacher_model_dir=tiny_model_dir)


def test_round_is_deterministic_and_accumulation_invariant(tiny_model_dir, tiny_sets, tmp_path):
    first = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "a", progress=False)
    again = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "b", progress=False)
    assert max_diff(weights(first.model_dir), weights(again.model_dir)) == 0.0
    # batch 2 x 2 accumulated == batch 4: per-sequence means over equal micro-batches average exactly
    accum = run_round(
        tiny_model_dir, *tiny_sets, replace(FAST, batch_size=2, grad_accum_steps=2), tmp_path / "c", progress=False
    )
    assert max_diff(weights(first.model_dir), weights(accum.model_dir)) < 1e-5


@pytest.mark.parametrize("method", ["asu_kl", "ga", "gd", "npo", "idk"])
def test_every_objective_runs_in_the_same_trainer(tiny_model_dir, tiny_sets, tmp_path, method):
    result = run_round(tiny_model_dir, *tiny_sets, replace(FAST, method=method), tmp_path / method, progress=False)
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in result.curve)
    assert ("retain_loss" in result.curve[0]) == (method != "ga")


def test_lora_with_adapter_disabled_teacher(tiny_model_dir, tiny_sets, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    config = replace(FAST, finetune="lora", teacher="adapter_disabled", learning_rate=1e-2)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    from asu.attention import enable_smoothing

    enable_smoothing(model)
    data = prepare_data(tokenizer, *tiny_sets, config)
    exact = PrecomputedTeacher.build(model, config, data.forget, data.retain, tokenizer.pad_token_id)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    batch = collate(data.forget[:4], tokenizer.pad_token_id, [0, 1, 2, 3])
    live = adapter_disabled_teacher(lora, config).forget_targets(batch)
    assert torch.allclose(live.logprobs, exact.forget_targets(batch).logprobs, atol=1e-5)
    result = run_round(tiny_model_dir, *tiny_sets, config, tmp_path / "lora", progress=False)
    assert max_diff(weights(result.model_dir), weights(tiny_model_dir)) > 0  # merged adapter changed the weights


def test_gradient_checkpointing_ends_at_the_same_weights(tiny_model_dir, tiny_sets, tmp_path):
    """Recomputing activations in the backward pass (smoothing hooks included) changes memory, not the result."""
    plain = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "plain", progress=False)
    ckpt = run_round(tiny_model_dir, *tiny_sets, replace(FAST, gradient_checkpointing=True), tmp_path / "ckpt",
                     progress=False)
    assert max_diff(weights(plain.model_dir), weights(ckpt.model_dir)) < 1e-5


@pytest.mark.parametrize("teacher", ["precomputed", "adapter_disabled"])
def test_lora_with_gradient_checkpointing_trains_every_adapter_tensor(tiny_model_dir, tiny_sets, tmp_path, teacher):
    """open-unlearning's LoRA + checkpointing runs left lora_B at zero: here every adapter tensor moves (no weight
    decay, so only a gradient can move one) and the round reports none unmoved."""
    pytest.importorskip("peft")
    config = replace(FAST, finetune="lora", teacher=teacher, gradient_checkpointing=True, weight_decay=0.0,
                     learning_rate=1e-2)
    result = run_round(tiny_model_dir, *tiny_sets, config, tmp_path / "lora", progress=False)
    assert result.metrics["unmoved_adapter_tensors"] == 0.0
    assert max_diff(weights(result.model_dir), weights(tiny_model_dir)) > 0


def test_an_unavailable_8bit_optimizer_is_a_clear_error_before_any_work(tiny_model_dir, tiny_sets, tmp_path):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed: the 8-bit optimizer is available")
    with pytest.raises(ValueError, match="optimizer='adamw_8bit' needs the bitsandbytes package: pip install"):
        run_round(tiny_model_dir, *tiny_sets, replace(FAST, optimizer="adamw_8bit"), tmp_path / "bnb", progress=False)
    assert not (tmp_path / "bnb").exists()


def test_asu_forgets_the_forget_author_and_keeps_the_rest(tiny_model_dir, tiny_sets, tmp_path):
    """On a model that memorised its data, ASU lowers forget ROUGE-L while retain ROUGE-L stays."""
    from asu.evaluation import score_qa

    forget, retain = tiny_sets
    config = replace(FAST, tau=5.0, epochs=10, batch_size=8)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    before = {name: score_qa(model, tokenizer, items, max_new_tokens=80) for name, items in tiny_sets_dict(tiny_sets)}
    result = run_round(tiny_model_dir, forget, retain, config, tmp_path / "out", progress=False)
    model, tokenizer = load_model_and_tokenizer(result.model_dir)
    after = {name: score_qa(model, tokenizer, items, max_new_tokens=80) for name, items in tiny_sets_dict(tiny_sets)}
    assert before["forget"].rouge_l_recall > 0.9
    assert after["forget"].rouge_l_recall < 0.8 * before["forget"].rouge_l_recall
    assert after["retain"].rouge_l_recall >= 0.95 * before["retain"].rouge_l_recall
    assert after["forget"].fluent_share == 1.0


def tiny_sets_dict(sets):
    return [("forget", sets[0]), ("retain", sets[1])]


def test_two_process_ddp_on_cpu_matches_one_process(tiny_model_dir, tiny_sets, tmp_path):
    """`accelerate launch` with 2 CPU processes x batch 2 gives the weights of 1 process x batch 4."""
    files = {}
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(it) for it in items))
    launcher = Path(sys.executable).parent / "accelerate"
    ddp_config = replace(FAST, batch_size=2)  # 2 processes x 2 items = the single process's batch of 4
    overrides = [arg for k, v in ddp_config.to_dict().items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cli.main", "unlearn",
               "--model", str(tiny_model_dir), "--forget", str(files["forget"]), "--retain", str(files["retain"]),
               "--out", str(tmp_path / "ddp"), *overrides]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"model_dir"') == 1  # reported once, by rank 0
    single = run_round(tiny_model_dir, *tiny_sets, FAST, tmp_path / "single", progress=False)
    update = max_diff(weights(single.model_dir), weights(tiny_model_dir))
    assert max_diff(weights(tmp_path / "ddp"), weights(single.model_dir)) < 1e-5 < update  # measured 2e-6 vs 2e-3


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("missing", ModelLoadError, "does not exist"),
        ("bin_only", ModelLoadError, "only safetensors are loaded"),
        ("no_pad", ModelLoadError, "no padding token"),
        ("no_eos", ModelLoadError, "no EOS token"),
    ],
)
def test_bad_model_folders(tiny_model_dir, tmp_path, change, error, message):
    import shutil

    folder = tmp_path / "model"
    if change != "missing":
        shutil.copytree(tiny_model_dir, folder)
    if change == "bin_only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    if change in ("no_pad", "no_eos"):
        config_file = folder / "tokenizer_config.json"
        values = json.loads(config_file.read_text())
        values["pad_token" if change == "no_pad" else "eos_token"] = None
        config_file.write_text(json.dumps(values))
    with pytest.raises(error, match=message):
        load_model_and_tokenizer(folder)


def test_non_decoder_model_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="'bert' is not a decoder-only causal language model"):
        load_model_and_tokenizer(tmp_path / "bert")


def test_empty_sets_and_bad_layers(tiny_model_dir, tiny_sets, tmp_path):
    forget, retain = tiny_sets
    with pytest.raises(ValueError, match="the forget set is empty"):
        run_round(tiny_model_dir, [], retain, FAST, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="the retain set is empty.*method='ga'"):
        run_round(tiny_model_dir, forget, [], FAST, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="layers"):
        run_round(tiny_model_dir, forget, retain, replace(FAST, layers=(7,)), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
