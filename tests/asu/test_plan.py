"""``asu.plan``: parameter counts from a config alone and the per-setting memory estimate, against hand counts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from asu.plan import GIB, RESERVED_GB, PlanRequest, estimate, model_shape, plan

V, H, I, L, HEADS, KV = 1000, 64, 128, 3, 4, 2  # noqa: E741 - I is the MLP width, as in the papers


def _config_folder(tmp_path, tied: bool):
    folder = tmp_path / ("tied" if tied else "untied")
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H,
        "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": HEADS, "num_key_value_heads": KV,
        "tie_word_embeddings": tied}))
    return folder  # no weights: the plan must never need them


def _hand_counts(tied: bool) -> tuple[int, int, int]:
    kv_width = KV * (H // HEADS)
    linears = [(H, H), (H, kv_width), (H, kv_width), (H, H), (H, I), (H, I), (I, H)]  # q k v o gate up down
    layer = sum(i * o for i, o in linears) + 2 * H  # + two RMSNorms
    total = V * H + L * layer + H + (0 if tied else V * H)
    return total, layer, sum(i + o for i, o in linears) * L


@pytest.mark.parametrize("tied", [True, False])
def test_the_shape_is_counted_from_the_config_alone(tmp_path, tied):
    shape = model_shape(_config_folder(tmp_path, tied))
    total, layer, lora_per_rank = _hand_counts(tied)
    assert (shape.parameters, shape.largest_layer_parameters, shape.lora_parameters_per_rank) == (
        total, layer, lora_per_rank)
    assert (shape.layers, shape.hidden, shape.vocab) == (L, H, V)


def test_each_setting_adds_up_the_documented_terms(tmp_path):
    shape = model_shape(_config_folder(tmp_path, tied=False))
    p, req = shape.parameters, PlanRequest(gpus=4, gpu_memory_gb=80, batch_size=2, max_length=100, lora_rank=8,
                                           teacher_memory_budget_mb=512)
    tokens = 2 * 2 * 100
    acts, logits = L * 34 * tokens * H / GIB, 10 * tokens * V / GIB
    full = estimate(shape, req, "full")
    assert (full.weights_gb, full.gradients_gb, full.optimizer_gb) == pytest.approx(
        (4 * p / GIB, 4 * p / GIB, 8 * p / GIB), abs=1e-3)
    assert (full.activations_gb, full.logits_gb, full.teacher_gb) == pytest.approx((acts, logits, 0.5), abs=1e-3)
    assert full.total_gb == pytest.approx(16 * p / GIB + acts + logits + 0.5 + RESERVED_GB, abs=5e-3)
    fsdp = estimate(shape, req, "fsdp")
    gathered = 4 * shape.largest_layer_parameters / GIB
    assert fsdp.optimizer_gb == pytest.approx(2 * p / GIB, abs=1e-3)  # 8 bytes / 4 GPUs
    assert fsdp.weights_gb == pytest.approx(p / GIB + gathered, abs=1e-3)
    lora = estimate(shape, req, "lora")
    adapter = 8 * shape.lora_parameters_per_rank
    assert (lora.weights_gb, lora.gradients_gb, lora.optimizer_gb) == pytest.approx(
        ((4 * p + 4 * adapter) / GIB, 4 * adapter / GIB, 8 * adapter / GIB), abs=1e-3)
    assert lora.activations_gb == pytest.approx((L * 2 + 34) * tokens * H / GIB, abs=1e-3)  # checkpointed
    eight_bit = estimate(shape, replace(req, optimizer="adamw_8bit"), "full")
    assert eight_bit.optimizer_gb == pytest.approx(2 * p / GIB, abs=1e-3)


def test_the_recommendation_is_the_first_setting_that_fits(tmp_path):
    folder = _config_folder(tmp_path, tied=True)
    assert plan(folder, PlanRequest(gpus=1, gpu_memory_gb=80))["recommended"] == "full"
    one = plan(folder, PlanRequest(gpus=1, gpu_memory_gb=1.0))
    assert [e["setting"] for e in one["estimates"]] == ["full", "lora"]  # FSDP needs several GPUs
    assert one["recommended"] is None and not any(e["fits"] for e in one["estimates"])  # reserve alone is 1.5 GB
    # A budget between the sharded and the unsharded total picks FSDP.
    shape = model_shape(folder)
    req = PlanRequest(gpus=8, batch_size=64, max_length=2000, teacher_memory_budget_mb=0)
    full, fsdp = estimate(shape, req, "full").total_gb, estimate(shape, req, "fsdp").total_gb
    assert fsdp < full
    assert plan(folder, replace(req, gpu_memory_gb=(full + fsdp) / 2))["recommended"] == "fsdp"


def test_bad_plan_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--gpus 0: give the number of GPUs"):
        PlanRequest(gpus=0)
    with pytest.raises(ValueError, match="--gpu-memory -1"):
        PlanRequest(gpu_memory_gb=-1)
    with pytest.raises(ValueError, match="has no config.json"):
        model_shape(tmp_path)


def test_asu_plan_prints_the_table_and_json(tmp_path, capsys):
    from cli.main import main

    folder = _config_folder(tmp_path, tied=True)
    assert main(["plan", "--model", str(folder), "--gpus", "2", "--gpu-memory", "40"]) == 0
    text = capsys.readouterr().out
    assert "fsdp" in text and "recommended: full" in text
    assert main(["plan", "--model", str(folder), "--gpu-memory", "1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["recommended"] is None
    assert main(["plan", "--model", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["recommended"] == "full"
    assert main(["plan", "--model", str(folder), "--gpu-memory", "1"]) == 1  # nothing fits: exit 1, says what would
    assert "nothing fits: lower --batch-size" in capsys.readouterr().out
