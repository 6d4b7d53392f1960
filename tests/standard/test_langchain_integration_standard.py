"""langchain-tests' `ChatModelIntegrationTests` against `EnsembleChatModel` with real members: the packaged
small pair (local transformers), the tool cases on the default Qwen pair (slow), the same SmolLM2 behind a
real llama.cpp OpenAI-compatible server, and a scripted tool-calling member that proves the tool mechanism
through the ensemble."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from ensemble_core.defaults import small_members
from ensemble_core.members.scripted import ScriptedMember
from langchain_ensemble import EnsembleChatModel
from tests.standard.scripted_tools import tool_calling_member

#: The standard tool tests: SmolLM2 behind llama.cpp's chatml format (TestHTTPEnsemble) fails them all.
TOOL_TESTS = (
    "test_tool_calling",
    "test_tool_calling_async",
    "test_bind_runnables_as_tools",
    "test_tool_choice",
    "test_tool_calling_with_no_arguments",
    "test_agent_loop",
    "test_unicode_tool_call_integration",
    "test_structured_output",
    "test_structured_output_async",
    "test_structured_output_pydantic_2_v1",
    "test_structured_output_optional_param",
)
# Measured on the packaged pair with grammar-constrained decoding (max_tokens=48): forced calls and their
# arguments now pass; what is left is what SmolLM2-135M itself does inside the grammar.
_REPEATS = (
    "SmolLM2-135M repeats itself inside the Joke's setup string ('A cat is a cat, a cat is a cat, ...') "
    "until max_tokens, so the JSON never closes (the grammar keeps it JSON; the mechanism passes with the "
    "scripted member in TestScriptedToolCallingEnsemble)"
)
PACKAGED_XFAILS = {
    "test_agent_loop": "SmolLM2-135M answers the weather question in prose instead of choosing to call "
    "get_weather (tool_choice auto leaves the choice to the model; forced calls pass)",
    "test_unicode_tool_call_integration": "SmolLM2-135M's forced call runs past max_tokens=48 while it "
    "writes the CJK customer name, and is reported as an invalid_tool_calls entry",
    "test_structured_output": _REPEATS,
    "test_structured_output_async": _REPEATS,
    "test_structured_output_pydantic_2_v1": _REPEATS,
    "test_structured_output_optional_param": _REPEATS,
}


@pytest.mark.integration
class TestPackagedEnsemble(ChatModelIntegrationTests):
    """The packaged small pair (SmolLM2 first, Gemma 3 as fallback), answers kept short (48 tokens: room for
    a constrained tool call)."""

    xfail_reasons: ClassVar[dict[str, str]] = PACKAGED_XFAILS

    @property
    def chat_model_class(self) -> type[EnsembleChatModel]:
        return EnsembleChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"members": small_members(), "strategy": "fallback", "max_tokens": 48}

    @property
    def model_override_value(self) -> str:
        return "gemma3"


@pytest.mark.integration
@pytest.mark.slow
class TestDefaultEnsembleTools(ChatModelIntegrationTests):
    """The tool and structured-output cases on `EnsembleChatModel()` itself: the Qwen pair, routed as the
    default routes (calls by qwen05, the turn after the tools answered by qwen15). Slow (minutes, and qwen15's
    load): `scripts/test --runslow tests/standard -k TestDefaultEnsembleTools`."""

    only: ClassVar[tuple[str, ...]] = TOOL_TESTS

    @property
    def chat_model_class(self) -> type[EnsembleChatModel]:
        return EnsembleChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 64}


_SERVER = (
    "llama.cpp's chatml chat format neither shows the tools to SmolLM2-135M nor enforces tool_choice, so the "
    "model answers in prose (and could not fill the arguments anyway; the mechanism passes with the scripted "
    "tool-calling member in TestScriptedToolCallingEnsemble)"
)


@pytest.mark.integration
@pytest.mark.server
class TestHTTPEnsemble(ChatModelIntegrationTests):
    """SmolLM2 behind a real llama.cpp server (OpenAICompatMember), with a local fallback."""

    xfail_reasons: ClassVar[dict[str, str]] = dict.fromkeys(TOOL_TESTS, _SERVER)
    base_url: ClassVar[str] = ""

    @pytest.fixture(autouse=True)
    def _server(self, llama_server: str) -> None:
        type(self).base_url = llama_server

    @property
    def chat_model_class(self) -> type[EnsembleChatModel]:
        return EnsembleChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        from ensemble_core.members.openai_compat import OpenAICompatMember

        http = OpenAICompatMember(base_url=self.base_url, model="smollm2", name="smollm2-http", timeout_s=60)
        return {
            "members": [http, ScriptedMember("local", ["Hello from the local fallback."])],
            "max_tokens": 16,
        }

    @property
    def model_override_value(self) -> str:
        return "smollm2-http"


class TestScriptedToolCallingEnsemble(ChatModelIntegrationTests):
    """A failing member, then a scripted tool-calling member: every tool test passes through the ensemble."""

    @property
    def chat_model_class(self) -> type[EnsembleChatModel]:
        return EnsembleChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"members": [ScriptedMember("down", [RuntimeError("unavailable")]), tool_calling_member()]}

    @property
    def model_override_value(self) -> str:
        return "tool-caller"
