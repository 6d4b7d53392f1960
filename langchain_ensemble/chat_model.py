"""`EnsembleChatModel`: an `Ensemble` as a LangChain `BaseChatModel`, so a chain, agent or LangGraph graph
swaps `ChatOpenAI(...)` for an ensemble and nothing else changes. It translates and nothing else: the
ensemble's strategy decides who answers and how."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ensemble_core.asyncio_bridge import aclose, iterate_sync, run_sync
from ensemble_core.defaults import DEFAULT_STRATEGY, resolve_ensemble
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import Delta, Params, Request, ResponseFormat, Result
from langchain_ensemble.member import LangChainMember
from langchain_ensemble.messages import delta_to_chunk, result_to_message, to_engine_messages
from langchain_ensemble.structured import structured_runnable
from langchain_ensemble.tools import engine_tool_choice, to_openai_tools, to_tool_specs

# Generation parameters a call may override (`model.invoke(..., max_tokens=8)` or `.bind(...)`).
_PARAMS = ("max_tokens", "temperature", "top_p", "seed")
# ChatOpenAI call arguments that code written for it passes routinely and that do not change what an ensemble
# answers (members decide how many tool calls they make; there is no end user to attribute): accepted, unused.
_ACCEPTED_UNUSED = ("parallel_tool_calls", "user")


class EnsembleChatModel(BaseChatModel):
    """A LangChain chat model whose answers come from an ensemble of LLMs.

    Build it from an `Ensemble` (`EnsembleChatModel(ensemble=ens)`), from a config file
    (`EnsembleChatModel.from_config("ensemble.yaml")`), from members and a strategy name
    (`EnsembleChatModel(members=[...], strategy="fallback", strategy_params={...})`), or with no arguments
    for the embedded default ensemble. Members are engine members (`HFMember`, `OpenAICompatMember`, ...)
    or LangChain chat models, which are wrapped in `LangChainMember`. `.ensemble` is the `Ensemble` that
    answers; a call's `model=` names one member to answer alone.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ensemble: Ensemble | None = Field(
        default=None, exclude=True, description="the ensemble that answers (default: the embedded one)"
    )
    members: list[Member | BaseChatModel] | None = Field(
        default=None,
        exclude=True,
        description="members, when no `ensemble` is given (LangChain models are wrapped)",
    )
    strategy: str | Strategy | None = Field(
        default=None,
        description="a registered strategy name or a Strategy, used with `members` (default: "
        f"{DEFAULT_STRATEGY})",
    )
    strategy_params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters")
    model_name: str | None = Field(
        default=None, description="name in response_metadata and traces; default: strategy[member,...]"
    )
    temperature: float | None = Field(
        default=None, description="sampling temperature (engine default: 0, greedy)"
    )
    max_tokens: int | None = Field(
        default=None, description="most new tokens per answer (engine default: 256)"
    )
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, description="stop sequences for every call")
    timeout: float | None = Field(
        default=None, gt=0, description="seconds a whole ensemble call may take (the request's timeout_s)"
    )
    streaming: bool = Field(default=False, description="invoke() streams internally (callbacks see tokens)")

    _ensemble: Ensemble = PrivateAttr()

    @model_validator(mode="after")
    def _build_ensemble(self) -> EnsembleChatModel:
        members = None
        if self.members is not None:
            members = [m if isinstance(m, Member) else LangChainMember(m) for m in self.members]
        self._ensemble = resolve_ensemble(self.ensemble, members, self.strategy, self.strategy_params)
        self.ensemble = self._ensemble
        if self.model_name is None:
            self.model_name = _ensemble_name(self._ensemble)
        if self.profile is None:  # the base class resolves it before the ensemble exists
            self.profile = self._resolve_model_profile()
        return self

    @classmethod
    def from_config(cls, config: str | Path | dict[str, Any], **kwargs: Any) -> EnsembleChatModel:
        """Build from an ensemble config file (YAML/JSON) or dict; kwargs set the chat model's own fields."""
        return cls(ensemble=Ensemble.from_config(config), **kwargs)

    # LangChain metadata -------------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "llm-ensemble"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "strategy": repr(self._ensemble.strategy),
            "members": [f"{m.name}={m.model_name}" for m in self._ensemble.members.values()],
            **{k: getattr(self, k) for k in (*_PARAMS, "stop", "timeout")},
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llm-ensemble",
            ls_model_name=kwargs.get("model") or self.model_name or "",
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if temperature is not None:
            params["ls_temperature"] = temperature
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What the ensemble really supports: text in and out; tool calling when every member can take tools;
        forced tool choice only when every member honours it; structured output when every member constrains
        its answer to a response format (local members do, by grammar)."""
        members = self._ensemble.members_used()
        tools = all(m.supports_tools for m in members)
        profile = ModelProfile(
            text_inputs=True,
            image_inputs=False,
            image_url_inputs=False,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            image_tool_message=False,
            pdf_tool_message=False,
            text_outputs=True,
            image_outputs=False,
            audio_outputs=False,
            video_outputs=False,
            reasoning_output=False,
            tool_calling=tools,
            tool_choice=tools and all(m.supports_tool_choice for m in members),
            tool_call_streaming=tools,
            structured_output=all(m.supports_response_format for m in members),
            temperature=True,
        )
        window = self._ensemble.context_window
        if window:
            profile["max_input_tokens"] = window
        return profile

    # tools --------------------------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any form LangChain accepts) and, optionally, `tool_choice` ('auto', 'none', 'any' or a
        tool's name); other keyword arguments are bound as call arguments."""
        formatted = to_openai_tools(tools, strict=strict)
        choice = engine_tool_choice(tool_choice, [t["function"]["name"] for t in formatted])
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Any = None,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers as `schema` (a pydantic class, TypedDict or JSON schema): "json_schema" (default) and
        "json_mode" constrain the answer by `response_format`, "function_calling" by a forced call to the
        schema as a tool. The parsed object, or with `include_raw` a dict of raw, parsed and parsing_error."""
        if kwargs:
            raise ConfigError(f"with_structured_output does not take {', '.join(sorted(kwargs))}")
        return structured_runnable(self, schema, method, include_raw, strict)

    # token counting -----------------------------------------------------------------------------------------
    def get_token_ids(self, text: str) -> list[int]:
        """`text` in the tokens of the member that spends the most on it (its own tokenizer; no weights
        load)."""
        return self._ensemble.token_ids(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The prompt's tokens for the member that spends the most on it: its own chat template or prompt
        format, tools included."""
        if not messages:
            return 0
        request = Request(
            messages=to_engine_messages(messages), tools=to_tool_specs(to_openai_tools(tools or []))
        )
        return self._ensemble.prompt_tokens(request)

    # generation ---------------------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ensemble, request = self._prepare(messages, stop, kwargs)
        return self._chat_result(run_sync(self._arun(ensemble, request)), ensemble)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ensemble, request = self._prepare(messages, stop, kwargs)
        return self._chat_result(await self._arun(ensemble, request), ensemble)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        ensemble, request = self._prepare(messages, stop, kwargs)
        name = self._name_for(ensemble)
        for delta in iterate_sync(self._adeltas(ensemble, request)):
            yield ChatGenerationChunk(message=delta_to_chunk(delta, name))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        ensemble, request = self._prepare(messages, stop, kwargs)
        name = self._name_for(ensemble)
        async for delta in self._adeltas(ensemble, request):
            yield ChatGenerationChunk(message=delta_to_chunk(delta, name))

    # translation --------------------------------------------------------------------------------------------
    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Ensemble, Request]:
        """The ensemble that answers this call (the whole one, or the member named by `model=`) and the
        engine request: messages, bound tools and tool choice, and params (call arguments over fields)."""
        kwargs = dict(kwargs)
        ensemble = self._ensemble_for(kwargs.pop("model", None))
        tools = to_tool_specs(kwargs.pop("tools", None) or [])
        tool_choice = engine_tool_choice(kwargs.pop("tool_choice", None), [t.name for t in tools])
        response_format = engine_response_format(kwargs.pop("response_format", None))
        params = {k: kwargs.pop(k, getattr(self, k)) for k in _PARAMS}
        unknown = sorted(set(kwargs) - set(_ACCEPTED_UNUSED))
        if unknown:
            raise ConfigError(
                f"EnsembleChatModel does not take the call argument(s) {', '.join(unknown)}; it takes: "
                f"model, tools, tool_choice, response_format, stop, {', '.join(_PARAMS)}"
            )
        stop = stop if stop is not None else self.stop
        request = Request(
            messages=to_engine_messages(messages),
            tools=tools,
            tool_choice=tool_choice,
            params=Params(**{k: v for k, v in params.items() if v is not None}, stop=stop or []),
            timeout_s=self.timeout,
            response_format=response_format,
        )
        return ensemble, request

    def _ensemble_for(self, model: str | None) -> Ensemble:
        """`model=` at call time: the ensemble's own name (or None) means the whole ensemble; a member's name
        means that member alone (`Ensemble.for_model`)."""
        return self._ensemble.for_model(None if model == self.model_name else model)

    def _name_for(self, ensemble: Ensemble) -> str:
        return (self.model_name or "") if ensemble is self._ensemble else _ensemble_name(ensemble)

    async def _arun(self, ensemble: Ensemble, request: Request) -> Result:
        return await ensemble.arun_request(request)

    async def _adeltas(self, ensemble: Ensemble, request: Request) -> AsyncIterator[Delta]:
        """The ensemble's deltas as it decides them, empty ones left out."""
        stream = ensemble.astream_request(request)
        try:
            async for delta in stream:
                if delta.final or delta.text or delta.tool_call_chunks:
                    yield delta
        finally:
            await aclose(stream)

    def _chat_result(self, result: Result, ensemble: Ensemble) -> ChatResult:
        name = self._name_for(ensemble)
        message = result_to_message(result, name)
        return ChatResult(
            generations=[
                ChatGeneration(message=message, generation_info={"finish_reason": result.finish_reason})
            ]
        )


def engine_response_format(value: Any) -> ResponseFormat | None:
    """OpenAI's `response_format` ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name",
    "schema", "strict"}}) or a pydantic class, as the engine's `ResponseFormat`."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    if isinstance(value, type):
        from langchain_core.utils.function_calling import convert_to_json_schema

        schema = convert_to_json_schema(value)
        return ResponseFormat(type="json_schema", name=schema.get("title"), json_schema=schema)
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise ConfigError(
            f"response_format={value!r} is not understood; use {{'type': 'json_object'}}, {{'type': "
            "'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} or a pydantic class"
        )
    spec = value.get("json_schema") or {}
    return ResponseFormat(
        type=value["type"],
        name=spec.get("name"),
        json_schema=spec.get("schema") if value["type"] == "json_schema" else None,
        strict=bool(spec.get("strict")),
    )


def _ensemble_name(ensemble: Ensemble) -> str:
    """`strategy[member,...]`, e.g. `fallback[smollm2,gemma3]` or `single[gemma3]`."""
    return f"{ensemble.strategy.name}[{','.join(m.name for m in ensemble.members_used())}]"
