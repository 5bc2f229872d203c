"""The one reader of trial YAML and --set (orchestrator.configfile): one rule for all commands."""

from __future__ import annotations

import pytest

from model.errors import ConfigError
from orchestrator.configfile import (
    load_trial_file,
    parse_sets,
    parse_value,
    trial_mapping,
    trial_settings,
)


def test_parse_value_reads_yaml_scalars():
    assert (
        parse_value("1e-3") == 0.001
        and parse_value("true") is True
        and parse_value("[1, 2]") == [1, 2]
    )
    assert parse_value("rot") == "rot"


def test_parse_sets_splits_trial_and_data_settings():
    trial, data = parse_sets(
        ["qubits=12", "trial.epochs=3", "fixed.rotation=ry", "data.n_per_class=8"]
    )
    assert trial == {"qubits": 12, "epochs": 3, "rotation": "ry"} and data == {"n_per_class": 8}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_sets(["qubits"])


def test_trial_and_fixed_are_one_mapping_and_both_is_an_error():
    assert trial_mapping({"trial": {"qubits": 4}}) == ("trial", {"qubits": 4})
    assert trial_mapping({"fixed": None}) == ("fixed", {})
    with pytest.raises(ConfigError, match="not both"):
        trial_mapping({"trial": {}, "fixed": {"qubits": 4}})
    with pytest.raises(ConfigError, match="must be a mapping"):
        trial_mapping({"fixed": [1]})


def test_study_file_gives_its_first_point(tmp_path):
    doc = {"fixed": {"epochs": 2}, "factors": {"qubits": [9, 10], "epochs": [5], "lr": {"low": 1}}}
    assert trial_settings(doc) == ("fixed", {"epochs": 2, "qubits": 9})
    path = tmp_path / "s.yaml"
    path.write_text("trial: {epochs: 2}\nfixed: {qubits: 3}\n")
    with pytest.raises(ConfigError, match="s.yaml: give either"):
        load_trial_file(path)
    path.write_text("fixed: {epochs: 2}\nfactors: {qubits: [4, 5]}\ndata: {source: demo}\n")
    trial, data = load_trial_file(path, sets=["data.n_per_class=8", "epochs=3"], encoder="minilm")
    assert (trial.epochs, trial.qubits) == (3, 4)
    assert (data.source, data.n_per_class, data.encoder) == ("demo", 8, "minilm")
