"""langchain-tests' `ChatModelUnitTests`, in full, against `EnsembleChatModel` with scripted members."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from ensemble_core.members.scripted import ScriptedMember
from langchain_ensemble import EnsembleChatModel


class TestEnsembleChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[EnsembleChatModel]:
        return EnsembleChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "members": [ScriptedMember("first", ["hello"]), ScriptedMember("second", ["hi there"])],
            "strategy": "fallback",
        }
