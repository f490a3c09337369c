"""layer_span='middle_third': the named choice of smoothed layers, resolved against the model's depth."""

from __future__ import annotations

from dataclasses import replace

import pytest
from safetensors.torch import load_file

from asu.config import ASUConfig
from asu.errors import UsageError
from asu.trainer import run_round


@pytest.mark.parametrize(("depth", "layers"), [(30, tuple(range(10, 20))), (12, (4, 5, 6, 7)), (4, (1,)),
                                               (2, (0,)), (1, (0,))])
def test_middle_third_by_depth(depth, layers):
    resolved = ASUConfig(layer_span="middle_third").for_depth(depth)
    assert resolved.layers == layers and resolved.layer_span == "all"
    assert ASUConfig().for_depth(depth).layers is None  # 'all' stays None: every layer


def test_bad_layer_span():
    with pytest.raises(UsageError, match="layer_span='last'.*'all' or 'middle_third'"):
        ASUConfig(layer_span="last")
    with pytest.raises(UsageError, match="both choose the smoothed layers"):
        ASUConfig(layers=(0,), layer_span="middle_third")


def test_a_middle_third_round_is_the_round_on_those_layers(tiny_model_dir, tiny_sets, tmp_path):
    base = ASUConfig(tau=3.0, learning_rate=1e-3, epochs=1, batch_size=4, grad_accum_steps=1, max_length=256,
                     checkpoint_every="never")
    named = run_round(tiny_model_dir, *tiny_sets, replace(base, layer_span="middle_third"), tmp_path / "named",
                      progress=False)
    explicit = run_round(tiny_model_dir, *tiny_sets, replace(base, layers=(0,)), tmp_path / "explicit",
                         progress=False)
    a = load_file(str(named.model_dir / "model.safetensors"))
    b = load_file(str(explicit.model_dir / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
