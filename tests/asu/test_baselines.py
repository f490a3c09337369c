"""SimNPO and RMU: loss values computed by hand, config checks, and a round of each on the tiny model."""

from __future__ import annotations

import json
import math
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
from asu.losses import IGNORE_INDEX, activation_mse, rmu_steering_vector, simnpo_loss
from asu.modeling import load_model_and_tokenizer
from asu.objectives import get_objective
from asu.step import objective_loss
from asu.teacher import PrecomputedTeacher, frozen_copy_teacher
from asu.trainer import prepare_data, run_round

X = IGNORE_INDEX
FAST = ASUConfig(learning_rate=1e-3, epochs=1, batch_size=4, grad_accum_steps=1, max_length=256)


def log_softmax_at(logits: list[float], index: int) -> float:
    return logits[index] - math.log(sum(math.exp(v) for v in logits))


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_simnpo_loss_hand_value_is_length_normalised(gamma):
    beta = 4.5
    # Sequence 0: answer labels 0, 1 at positions 1, 2 (predicted by logits at 0, 1): |y| = 2.
    # Sequence 1: one answer label 2 at position 1 (predicted by logits at 0), then padding: |y| = 1.
    seq0 = [[1.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 0.0]]
    seq1 = [[0.0, 0.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    logits = torch.tensor([seq0, seq1])
    labels = torch.tensor([[X, 0, 1], [X, 2, X]])
    loglik0 = log_softmax_at(seq0[0], 0) + log_softmax_at(seq0[1], 1)
    loglik1 = log_softmax_at(seq1[0], 2)

    def term(loglik: float, length: int) -> float:
        # -(2/beta) * logsigmoid(x) with x = -(beta/|y|) log pi - gamma, and -logsigmoid(x) = log(1 + exp(-x))
        return (2 / beta) * math.log(1 + math.exp(beta * loglik / length + gamma))

    expected = (term(loglik0, 2) + term(loglik1, 1)) / 2
    got = simnpo_loss(logits, labels, beta, gamma).item()
    assert got == pytest.approx(expected, abs=1e-6)
    unnormalised = (term(loglik0, 1) + term(loglik1, 1)) / 2
    assert got != pytest.approx(unnormalised, abs=1e-3)


def test_simnpo_all_masked_batch_gives_zero_with_a_graph():
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    loss = simnpo_loss(logits, torch.full((1, 3), X), beta=4.5, gamma=0.0)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_rmu_steering_vector_is_seeded_uniform_scaled_to_the_coefficient():
    vector = rmu_steering_vector(hidden_size=8, coeff=2.0, seed=1001)
    assert vector.shape == (8,) and (vector >= 0).all()
    assert vector.norm().item() == pytest.approx(2.0, abs=1e-6)
    uniform = torch.rand(8, generator=torch.Generator().manual_seed(1001))
    assert torch.allclose(vector, 2.0 * uniform / uniform.norm())
    assert torch.equal(vector, rmu_steering_vector(8, 2.0, 1001))
    assert not torch.equal(vector, rmu_steering_vector(8, 2.0, 1002))


def test_rmu_forget_and_retain_mse_hand_values():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[0.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])
    # Answer tokens (no shift): sequence 0 positions 1, 2; sequence 1 position 1 (position 2 is padding).
    labels = torch.tensor([[X, 7, 7], [X, 7, X]])
    # Forget: one target vector (1, 1) everywhere; per token ||h - t||^2 / H with H = 2.
    seq0 = ((3 - 1) ** 2 + (4 - 1) ** 2) / 2, ((5 - 1) ** 2 + (6 - 1) ** 2) / 2  # 6.5, 20.5
    seq1 = ((2 - 1) ** 2 + (0 - 1) ** 2) / 2  # 1.0
    forget = activation_mse(hidden, labels, torch.tensor([1.0, 1.0]))
    assert forget.item() == pytest.approx((sum(seq0) / 2 + seq1) / 2)  # 7.25
    # Retain: one target row per selected token, row-major (seq 0 pos 1, seq 0 pos 2, seq 1 pos 1).
    reference = torch.tensor([[3.0, 3.0], [5.0, 5.0], [1.0, 1.0]])
    seq0 = ((3 - 3) ** 2 + (4 - 3) ** 2) / 2, ((5 - 5) ** 2 + (6 - 5) ** 2) / 2  # 0.5, 0.5
    seq1 = ((2 - 1) ** 2 + (0 - 1) ** 2) / 2  # 1.0
    assert activation_mse(hidden, labels, reference).item() == pytest.approx((sum(seq0) / 2 + seq1) / 2)  # 0.75
    with pytest.raises(ValueError, match="cover 2 tokens but the batch selects 3"):
        activation_mse(hidden, labels, reference[:2])


@pytest.mark.parametrize(
    ("field", "value"),
    [("simnpo_beta", 0.0), ("simnpo_beta", math.inf), ("simnpo_gamma", -0.1), ("simnpo_gamma", math.nan),
     ("rmu_layer", -1), ("rmu_layer", True), ("rmu_steering_coeff", 0.0), ("rmu_steering_coeff", math.inf)],
)  # fmt: skip
def test_config_rejects_bad_baseline_values(field, value):
    with pytest.raises(ValueError, match=field):
        ASUConfig(**{field: value})


def test_registry_and_defaults():
    config = ASUConfig(method="rmu")
    assert (config.simnpo_beta, config.simnpo_gamma, config.rmu_layer, config.rmu_steering_coeff) == (4.5, 0.0, 7, 2.0)
    assert get_objective("rmu").needs_retain_activations and get_objective("rmu").uses_layer_activations
    simnpo = get_objective("simnpo")
    assert simnpo.retain == "nll" and not (simnpo.needs_forget_reference or simnpo.uses_layer_activations)
    assert ASUConfig.from_dict(config.to_dict()) == config


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("config", [replace(FAST, method="simnpo"), replace(FAST, method="rmu", rmu_layer=0)])
def test_baseline_round_runs_and_changes_the_weights(tiny_model_dir, tiny_sets, tmp_path, config):
    result = run_round(tiny_model_dir, *tiny_sets, config, tmp_path / "out", progress=False)
    assert len(result.curve) == 5  # 20 forget items / 4 per step
    assert all(math.isfinite(v) for row in result.curve for v in row.values())
    assert all({"forget_loss", "retain_loss"} <= row.keys() for row in result.curve)
    assert max_diff(weights(result.model_dir), weights(tiny_model_dir)) > 0
    if config.method == "rmu":
        # The first step sees the original weights: its retain activations equal the precomputed reference.
        assert result.curve[0]["retain_loss"] < 1e-8 < result.curve[-1]["retain_loss"]
        assert result.curve[-1]["forget_loss"] < result.curve[0]["forget_loss"]  # pulled toward c * u


def test_rmu_precomputed_retain_activations_match_frozen_copy(tiny_model_dir, tiny_sets):
    """Both teachers give the original model's layer output; after the student moves, both losses agree.

    (Whole rounds are not compared: at the first steps the retain MSE is ~1e-14 noise that Adam amplifies.)
    """
    config = replace(FAST, method="rmu", rmu_layer=1)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    data = prepare_data(tokenizer, *tiny_sets, config)
    pairs = data.schedule[:4]
    forget = collate([data.forget[f] for f, _ in pairs], tokenizer.pad_token_id, [f for f, _ in pairs])
    retain = collate([data.retain[r] for _, r in pairs], tokenizer.pad_token_id, [r for _, r in pairs])
    pre = PrecomputedTeacher.build(model, config, data.forget, data.retain, tokenizer.pad_token_id)
    frozen = frozen_copy_teacher(model, config)
    hidden_size = model.config.hidden_size
    assert pre.retain_activations(retain).shape == (int((retain["labels"] != X).sum()), hidden_size)
    assert torch.allclose(pre.retain_activations(retain), frozen.retain_activations(retain), atol=1e-5)
    assert pre.extra_bytes() > 0
    with torch.no_grad():
        torch.manual_seed(0)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss_pre = objective_loss(model, forget, retain, pre, config)[1]
    loss_frozen = objective_loss(model, forget, retain, frozen, config)[1]
    assert loss_pre["retain_loss"] > 1e-4
    for part in loss_frozen:
        assert loss_pre[part] == pytest.approx(loss_frozen[part], rel=1e-5)


def test_rmu_layer_out_of_range_is_a_clear_error(tiny_model_dir, tiny_sets, tmp_path):
    with pytest.raises(ValueError, match=r"rmu_layer=7 is out of range: the model has 2 decoder layers"):
        run_round(tiny_model_dir, *tiny_sets, replace(FAST, method="rmu"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_rmu_runs_under_two_process_ddp(tiny_model_dir, tiny_sets, tmp_path):
    """The layers above ``rmu_layer`` and the LM head get no gradient: DDP must be told (find_unused_parameters)."""
    files = {}
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(it) for it in items))
    config = replace(FAST, method="rmu", rmu_layer=0, batch_size=2)
    overrides = [arg for k, v in config.to_dict().items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cli.main",
               "unlearn", "--model", str(tiny_model_dir), "--forget", str(files["forget"]),
               "--retain", str(files["retain"]), "--out", str(tmp_path / "ddp"), *overrides]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_diff(weights(tmp_path / "ddp"), weights(tiny_model_dir)) > 0
