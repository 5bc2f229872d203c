"""TrialConfig / DataConfig validation: errors name the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError


def test_defaults_are_the_papers_ten_qubit_single_encoder_head():
    c = TrialConfig()
    assert (
        c.qubits,
        c.encoders,
        c.reuploads,
        c.reupload_layers,
        c.main_layers,
        c.connectivity,
    ) == (10, 1, 4, 1, 2, 1)
    assert c.batch_size == 16 and c.epochs == 800 and c.final_linear


def test_yaml_numbers_are_coerced_to_the_field_type():
    c = TrialConfig.from_dict({"learning_rate": "1e-3", "qubits": 12.0, "final_linear": "false"})
    assert c.learning_rate == 0.001 and c.qubits == 12 and c.final_linear is False


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"qbits": 3}, "unknown setting fixed.qbits"),
        ({"head": "transformer"}, "fixed.head = 'transformer' is not allowed; allowed: quantum"),
        (
            {"qubits": 4, "connectivity": 4},
            "fixed.connectivity = 4 is not allowed for qubits = 4; allowed: 1..3",
        ),
        ({"noise_p1": 1.5}, "fixed.noise_p1 = 1.5 is not a probability"),
        ({"qubits": "many"}, "fixed.qubits = 'many' is not an integer"),
        ({"final_linear": 3}, "fixed.final_linear = 3 is not a boolean"),
        ({"qubits": 40}, "fixed.qubits = 40 is too large"),
        ({"learning_rate": 0}, "fixed.learning_rate = 0.0 must be > 0"),
    ],
)
def test_errors_name_key_value_and_allowed(values, needle):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(values, where="fixed")
    assert needle in str(err.value)


def test_data_config_validation():
    assert DataConfig.from_dict({"source": "demo", "n_per_class": 10}).n_per_class == 10
    with pytest.raises(
        ConfigError, match="data.protocol = 'fewshot' is not allowed; allowed: paper, splits"
    ):
        DataConfig.from_dict({"protocol": "fewshot"})
    with pytest.raises(ConfigError, match="data.val_fraction = 1.0"):
        DataConfig.from_dict({"val_fraction": 1})


def test_replace_revalidates():
    with pytest.raises(ConfigError):
        TrialConfig().replace(batch_size=0)
