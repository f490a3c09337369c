"""The placement of models (``asu.device``) and the tolerance of bfloat16 scoring against float32."""

from __future__ import annotations

import pytest
import torch

from asu.device import Placement


def test_auto_resolves_to_the_cpu_in_float32_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert Placement().torch_device() == torch.device("cpu") and Placement().torch_dtype() == torch.float32
    assert Placement("cpu", "bfloat16").torch_dtype() == torch.bfloat16
    assert Placement("cuda", "bfloat16").for_training() == Placement("cpu", "float32")


def test_loaded_model_is_on_the_placement(tiny_model_dir):
    from asu.modeling import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(tiny_model_dir, placement=Placement("cpu", "bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_bfloat16_scoring_within_the_stated_tolerance_of_float32(tiny_model_dir, tiny_sets):
    """The tolerance ``asu.device`` states: probabilities within 0.02, ROUGE-L and fact recall within 0.05."""
    from asu.evaluation import score_qa
    from asu.modeling import load_model_and_tokenizer

    forget, retain = tiny_sets
    items = forget[:10] + retain[:10]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        model, tokenizer = load_model_and_tokenizer(tiny_model_dir, placement=Placement("cpu", dtype))
        scores[dtype] = score_qa(model, tokenizer, items, prompt_format="chat_template", max_new_tokens=48)
    full, half = scores["float32"], scores["bfloat16"]
    assert half.probability == pytest.approx(full.probability, abs=0.02)
    assert half.rouge_l_recall == pytest.approx(full.rouge_l_recall, abs=0.05)
    assert half.fact_recall == pytest.approx(full.fact_recall, abs=0.05)
