"""Members: one module per backend. `HFMember` and `OpenAICompatMember` import lazily (torch, openai)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ensemble_core.members.base import Capability, Member, Price

_LAZY = {
    "HFMember": "ensemble_core.members.hf",
    "OpenAICompatMember": "ensemble_core.members.openai_compat",
    "ScriptedMember": "ensemble_core.members.scripted",
}

__all__ = ["Capability", "Member", "Price", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ensemble_core.members' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
