"""`EnsembleLLM`: an `Ensemble` as a LlamaIndex `FunctionCallingLLM`, so `Settings.llm = EnsembleLLM(...)` or
`index.as_query_engine(llm=EnsembleLLM(...))` works unchanged in query engines, chat engines and agents.

It translates and nothing else: LlamaIndex messages and tools in, the ensemble's `Result` / `Delta`s out as
`ChatResponse`s whose `raw` holds the usage (where LlamaIndex's token counter reads it) and the trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_response_to_completion_response,
    chat_to_completion_decorator,
    prompt_to_messages,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.tools.types import BaseTool

from ensemble_core.asyncio_bridge import iterate_sync, run_sync
from ensemble_core.defaults import resolve_ensemble
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Member
from ensemble_core.strategies.base import Strategy
from ensemble_core.types import (
    FinishReason,
    Request,
    ToolCall,
    ToolCallChunk,
    Trace,
    Usage,
    merge_tool_call_chunks,
)
from llamaindex_ensemble.member import wrap_members
from llamaindex_ensemble.messages import (
    chat_message,
    to_engine_messages,
    to_tool_choice,
    to_tool_spec,
    tool_selections,
)

_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")


class EnsembleLLM(FunctionCallingLLM):
    """Several LLMs answering as one LlamaIndex LLM.

    Build it from an `Ensemble` (`EnsembleLLM(ensemble=ens)`), a config file
    (`EnsembleLLM.from_config(path)`), members and a strategy (`EnsembleLLM(members=[...],
    strategy="fallback")`; LlamaIndex LLMs among the members are wrapped in `LlamaIndexMember`), or with no
    arguments for the embedded default ensemble. `.ensemble` is the `Ensemble` that answers. The fields are
    the default generation parameters; a call's keyword arguments (max_tokens, temperature, top_p, stop,
    seed, and `model=` naming one member to answer alone) override them.
    """

    max_tokens: int = Field(default=256, ge=1, description="the most tokens an answer may have")
    temperature: float = Field(default=0.0, ge=0.0, description="sampling temperature; 0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    stop: list[str] = Field(default_factory=list, description="strings that end the answer")
    seed: int | None = Field(default=None, description="sampling seed, for reproducible sampled answers")
    timeout: float | None = Field(
        default=None, gt=0, description="seconds a whole ensemble call may take (the request's timeout_s)"
    )

    _ensemble: Ensemble = PrivateAttr()

    def __init__(
        self,
        ensemble: Ensemble | None = None,
        *,
        members: Sequence[Member | LLM] | None = None,
        strategy: Strategy | str | None = None,
        strategy_params: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        wrapped = wrap_members(members) if members is not None else None
        self._ensemble = resolve_ensemble(ensemble, wrapped, strategy, strategy_params)

    @classmethod
    def from_config(cls, config: str | Path | Mapping[str, Any], **fields: Any) -> EnsembleLLM:
        """An `EnsembleLLM` over `Ensemble.from_config(config)` (a YAML/JSON file or a dict)."""
        return cls(ensemble=Ensemble.from_config(config), **fields)

    @classmethod
    def class_name(cls) -> str:
        return "EnsembleLLM"

    @property
    def ensemble(self) -> Ensemble:
        return self._ensemble

    @property
    def metadata(self) -> LLMMetadata:
        used = self._ensemble.members_used()
        return LLMMetadata(
            context_window=self._ensemble.context_window or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_tokens,
            is_chat_model=True,
            is_function_calling_model=all(m.supports_tools for m in used),
            model_name=f"ensemble:{self._ensemble.strategy.name}({','.join(m.name for m in used)})",
            system_role=MessageRole.SYSTEM,
        )

    # chat ---------------------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream_chat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream_chat(messages, **kwargs)

    # complete: a prompt is one user message -----------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self._chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self._achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self._stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return astream_chat_response_to_completion_response(
            self._astream_chat(prompt_to_messages(prompt), **kwargs)
        )

    # tools --------------------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        prepared: dict[str, Any] = {"messages": messages, **kwargs}
        if tools:
            prepared["tools"] = [to_tool_spec(tool) for tool in tools]
            prepared["tool_choice"] = to_tool_choice(tool_choice, tool_required)
        return prepared

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Without parallel tool calls, only the first tool call is kept (as LlamaIndex's own LLMs do)."""
        if allow_parallel_tool_calls:
            return response
        first = next((b for b in response.message.blocks if isinstance(b, ToolCallBlock)), None)
        response.message.blocks = [
            b for b in response.message.blocks if not isinstance(b, ToolCallBlock) or b is first
        ]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        selections = tool_selections(response.message)
        if not selections and error_on_no_tool_call:
            raise ValueError(
                "the ensemble answered without a tool call; pass error_on_no_tool_call=False to accept a "
                "text answer"
            )
        return selections

    # translation --------------------------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[Ensemble, Request]:
        """The ensemble that answers this call (the whole one, or the member named by `model=`) and the
        engine request from chat messages, tools and per-call params (the fields fill in the rest)."""
        tools = [
            t if not isinstance(t, BaseTool) else to_tool_spec(t) for t in kwargs.pop("tools", None) or []
        ]
        tool_choice = to_tool_choice(
            kwargs.pop("tool_choice", None), bool(kwargs.pop("tool_required", False))
        )
        ensemble = self._ensemble.for_model(kwargs.pop("model", None))
        unknown = sorted(set(kwargs) - set(_PARAMS))
        if unknown:
            raise ConfigError(
                f"EnsembleLLM does not take {', '.join(map(repr, unknown))}; per-call options are: "
                f"{', '.join(_PARAMS)}, model, tools, tool_choice"
            )
        params = {name: getattr(self, name) for name in _PARAMS} | kwargs
        request = ensemble.request(
            to_engine_messages(messages), tools=tools or None, tool_choice=tool_choice, **params
        )
        return ensemble, request.model_copy(update={"timeout_s": self.timeout})

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return run_sync(self._achat(messages, **kwargs))

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        ensemble, request = self._prepare(messages, kwargs)
        result = await ensemble.arun_request(request)
        result.require_valid_calls()  # LlamaIndex has no place for an invalid call: it is a named error
        return ChatResponse(
            message=chat_message(result.text, result.tool_calls),
            raw=self._raw(result.usage, result.trace, result.finish_reason),
        )

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return iterate_sync(self._astream_chat(messages, **kwargs))

    def _astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> AsyncIterator[ChatResponse]:
        """The request is checked now, so bad input fails at the call rather than at the first iteration."""
        return self._responses(*self._prepare(messages, kwargs))

    async def _responses(self, ensemble: Ensemble, request: Request) -> AsyncIterator[ChatResponse]:
        """One response per delta, each with the message so far; the last one carries usage and trace."""
        text = ""
        chunks: list[ToolCallChunk] = []
        calls: list[ToolCall] = []
        async for delta in ensemble.astream_request(request):
            text += delta.text
            if delta.tool_call_chunks:
                chunks.extend(delta.tool_call_chunks)
                calls = _whole_calls(chunks, calls)
            if delta.final:
                raw = self._raw(delta.usage or Usage(), delta.trace, delta.finish_reason or "stop")
                yield ChatResponse(message=chat_message(text, calls), delta="", raw=raw)
            elif delta.text or delta.tool_call_chunks:
                raw = {"member": delta.member}
                yield ChatResponse(message=chat_message(text, calls), delta=delta.text, raw=raw)

    def _raw(self, usage: Usage, trace: Trace | None, finish_reason: FinishReason) -> dict[str, Any]:
        """Usage under the keys LlamaIndex's TokenCountingHandler reads (summed over every member call), the
        finish reason, the model name and the ensemble's trace (who was asked, scores, what was chosen and
        why)."""
        return {
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            },
            "finish_reason": finish_reason,
            "model": self.metadata.model_name,
            "trace": trace,
        }


def _whole_calls(chunks: list[ToolCallChunk], previous: list[ToolCall]) -> list[ToolCall]:
    """The tool calls streamed so far once their JSON arguments are complete; until then, the previous
    ones."""
    try:
        return merge_tool_call_chunks(chunks)
    except ValueError:
        return previous
