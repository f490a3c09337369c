"""Config validation and the objective registry: bad values fail at construction with the fix named."""

import pytest

from asu.config import ASUConfig
from asu.objectives import Objective, available_objectives, get_objective, register_objective


def test_defaults_are_the_papers_tofu_recipe():
    config = ASUConfig()
    assert (config.method, config.tau, config.forget_weight, config.retain_weight) == ("asu_gd", 2.3, 0.1, 1.0)
    assert (config.learning_rate, config.weight_decay, config.epochs, config.seed) == (1e-5, 0.01, 5, 1001)
    assert config.layers is None and config.teacher == "precomputed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.5}, "tau=0.5 is invalid.*>= 1"),
        ({"tau": float("nan")}, "tau=nan"),
        ({"forget_weight": -0.1}, "forget_weight=-0.1 must be a finite number >= 0"),
        ({"layers": ()}, "use layers=None to smooth all layers"),
        ({"layers": (0, -1)}, "non-negative"),
        ({"epochs": 0}, "epochs=0 must be >= 1"),
        ({"teacher": "adapter_disabled"}, "needs finetune='lora'"),
    ],
)
def test_bad_values_raise_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ASUConfig(**kwargs)


def test_unknown_objective_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean 'asu_gd'.*one of: asu_gd, asu_kl, ga, gd, idk, npo"):
        ASUConfig(method="asu_dg")


def test_from_dict_round_trip_and_unknown_keys():
    config = ASUConfig(tau=2.0, layers=(0, 2))
    assert ASUConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown ASUConfig field 'temperature'; known fields: batch_size"):
        ASUConfig.from_dict({"temperature": 2.0})


def test_registry_is_loud():
    assert available_objectives() == ["asu_gd", "asu_kl", "ga", "gd", "idk", "npo", "rmu", "simnpo"]
    assert get_objective("asu_kl").needs_retain_reference and get_objective("npo").needs_forget_reference
    with pytest.raises(ValueError, match="already registered"):
        register_objective(Objective("gd", "ga", "nll", "duplicate"))


def test_every_field_has_help():
    assert all(ASUConfig.describe().values())
