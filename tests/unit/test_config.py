"""Config files -> Ensemble: valid configs build, invalid ones name the field and the allowed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensemble_core import ConfigError, Ensemble, Price
from ensemble_core.config import PackagedMemberConfig, load_config


def test_yaml_file_builds_members_with_prices_and_the_strategy(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("BIG_KEY", "sk-secret-value")
    path = tmp_path / "ensemble.yaml"
    path.write_text(
        f"""
members:
  - {{type: hf, name: local, path: "{tiny_model_dir}", price: {{input_per_token: 0.5}}}}
  - {{type: openai, name: big, base_url: "http://127.0.0.1:9/v1", model: m, api_key_env: BIG_KEY,
     score: false, price: {{input_per_token: 0.000001, output_per_token: 0.000002}}}}
strategy: {{name: fallback, params: {{order: [big, local]}}}}
"""
    )
    ens = Ensemble.from_config(path)
    assert list(ens.members) == ["local", "big"]
    assert (
        isinstance(ens.members["big"].price, Price) and ens.members["big"].price.output_per_token == 0.000002
    )
    assert ens.members["local"].price.input_per_token == 0.5
    assert ens.strategy.members == ["big", "local"]
    assert "sk-secret-value" not in repr(ens.members["big"]) + repr(load_config(path))


def test_json_config_and_dicts_work_too(tmp_path, tiny_model_dir):
    data = {
        "members": [{"type": "hf", "name": "t", "path": str(tiny_model_dir)}],
        "strategy": {"name": "single", "params": {"member": "t"}},
    }
    path = tmp_path / "e.json"
    path.write_text(json.dumps(data))
    assert Ensemble.from_config(path).strategy.member == "t"
    assert Ensemble.from_config(data).strategy.member == "t"


def test_a_config_can_ask_for_packed_float32_weights(tiny_model_dir):
    member = {
        "type": "hf",
        "name": "t",
        "path": str(tiny_model_dir),
        "dtype": "float32",
        "pack_weights": True,
    }
    assert Ensemble.from_config({"members": [member]}).members["t"].pack_weights
    packaged = PackagedMemberConfig(type="packaged", model="qwen15", dtype="float32", pack_weights=True)
    assert packaged._kwargs("type", "model")["pack_weights"] is True  # what build() hands the factory


def test_a_config_can_ask_for_int8_weights_and_refuses_other_schemes(tiny_model_dir):
    member = {
        "type": "hf",
        "name": "t",
        "path": str(tiny_model_dir),
        "dtype": "bfloat16",
        "quantization": "int8",
    }
    assert Ensemble.from_config({"members": [member]}).members["t"].quantization == "int8"
    packaged = PackagedMemberConfig(type="packaged", model="qwen05", quantization="int8")
    assert packaged._kwargs("type", "model")["quantization"] == "int8"
    with pytest.raises(ConfigError, match="quantization"):
        Ensemble.from_config({"members": [{**member, "quantization": "int4"}]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"members": [{"type": "packaged", "model": "gpt5"}]},
            "members.0.packaged.model: Input should be 'smollm2', 'gemma3', 'qwen05' or 'qwen15'",
        ),
        (
            {"members": [{"type": "packaged", "model": "smollm2"}], "strategy": {"name": "nope"}},
            "unknown strategy 'nope' (allowed: ",
        ),
        (
            {"members": [{"type": "hf", "name": "x", "path": "/m", "colour": 1}]},
            "members.0.hf.colour: unknown field",
        ),
        ({"members": []}, "members: List should have at least 1 item"),
        ({"members": [{"type": "vllm"}]}, "members.0: Input tag 'vllm'"),
        ({"strategy": {"name": "single"}}, "members: Field required"),
        (
            {"members": [{"type": "openai", "name": "o", "base_url": "u", "model": "m", "timeout_s": -1}]},
            "timeout_s: Input should be greater than 0",
        ),
    ],
)
def test_invalid_config_names_field_and_allowed_values(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert message in str(info.value)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=str)
def test_every_shipped_config_is_valid_with_its_strategy_params(path):
    config = load_config(path)
    assert config.build_strategy().name == config.strategy.name


def test_strategy_params_are_checked_when_building(tiny_model_dir):
    data = {
        "members": [{"type": "hf", "name": "t", "path": str(tiny_model_dir)}],
        "strategy": {"name": "single", "params": {"membre": "t"}},
    }
    with pytest.raises(ConfigError, match="membre: unknown field"):
        Ensemble.from_config(data)


def test_missing_env_key_and_bad_files_are_clear(tmp_path):
    data = {
        "members": [
            {"type": "openai", "name": "o", "base_url": "u", "model": "m", "api_key_env": "NOPE_NOT_SET"}
        ]
    }
    with pytest.raises(ConfigError, match="NOPE_NOT_SET.*not set"):
        Ensemble.from_config(data)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("members: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
