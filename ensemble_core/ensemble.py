"""`Ensemble` = members + strategy, with run / arun / stream / astream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ensemble_core.asyncio_bridge import aclose, iterate_sync, run_sync
from ensemble_core.config import EnsembleConfig, load_config
from ensemble_core.errors import CapabilityError, ConfigError, DeadlineExceededError, UnknownModelError
from ensemble_core.members.base import Member
from ensemble_core.run_context import RunContext
from ensemble_core.strategies.base import Strategy
from ensemble_core.strategies.registry import build_strategy
from ensemble_core.types import Delta, MessagesLike, Params, Request, Result, ToolSpec, to_messages

ToolLike = ToolSpec | Mapping[str, Any]


class Ensemble:
    """Several members that answer as one, the way `strategy` decides.

    `strategy` is a `Strategy` instance or a registered name (its parameters as keyword arguments):
    `Ensemble(members, "fallback", members=["qwen05", "smollm2"])`. The two are positional, so a strategy's
    own `members` parameter can follow them. Construction checks that every member the strategy uses has
    the capabilities it needs, as far as is known without the network; `load` / `aload` probe what can
    only be asked of a server, and check again.
    """

    def __init__(
        self, members: Sequence[Member], strategy: Strategy | str = "fallback", /, **strategy_params: Any
    ):
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        names = [m.name for m in members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"member names must be unique; repeated: {', '.join(duplicates)}")
        if isinstance(strategy, str):
            strategy = build_strategy(strategy, strategy_params)
        elif strategy_params:
            raise ConfigError("strategy parameters go into the Strategy instance when you pass one, not here")
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.strategy = strategy
        strategy.check(self.members)

    @classmethod
    def from_config(cls, config: str | Path | Mapping[str, Any] | EnsembleConfig) -> Ensemble:
        """Build from a YAML/JSON file, a dict, or an `EnsembleConfig`."""
        loaded = load_config(config)
        return cls(loaded.build_members(), loaded.build_strategy())

    # requests ---------------------------------------------------------------------------------------------
    def request(
        self,
        prompt: MessagesLike,
        *,
        tools: Sequence[ToolLike] | None = None,
        tool_choice: str | None = None,
        **params: Any,
    ) -> Request:
        """A validated `Request` from a question string or messages, tools, and params (max_tokens, ...)."""
        return Request(
            messages=to_messages(prompt),
            tools=[to_tool_spec(t) for t in tools or []],
            tool_choice=tool_choice,
            params=Params(**params),
        )

    async def arun_request(self, request: Request) -> Result:
        """Answer one request, within its `timeout_s` when it has one."""
        ctx = RunContext(self.members, self.strategy.name)
        work = self.strategy.arun(ctx, request)
        if request.timeout_s is None:
            return await work
        try:
            return await asyncio.wait_for(work, timeout=request.timeout_s)
        except asyncio.TimeoutError as err:
            raise DeadlineExceededError(request.timeout_s) from err

    async def arun_batch_requests(self, requests: Sequence[Request]) -> list[Result]:
        """Answer several requests; the strategy may share work across them (token fusion batches them).
        The batch has the shortest of their `timeout_s`."""
        ctxs = [RunContext(self.members, self.strategy.name) for _ in requests]
        work = self.strategy.arun_batch(ctxs, requests)
        limits = [r.timeout_s for r in requests if r.timeout_s is not None]
        if not limits:
            return await work
        try:
            return await asyncio.wait_for(work, timeout=min(limits))
        except asyncio.TimeoutError as err:
            raise DeadlineExceededError(min(limits)) from err

    async def astream_request(self, request: Request) -> AsyncIterator[Delta]:
        """Stream the answer to one request, the whole stream within its `timeout_s` when it has one."""
        ctx = RunContext(self.members, self.strategy.name)
        stream = self.strategy.astream(ctx, request)
        loop = asyncio.get_running_loop()
        deadline = None if request.timeout_s is None else loop.time() + request.timeout_s
        try:
            while True:
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    delta = await asyncio.wait_for(anext(stream), timeout=remaining)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError as err:
                    if request.timeout_s is None:
                        raise
                    raise DeadlineExceededError(request.timeout_s, streamed=True) from err
                yield delta
        finally:
            await aclose(stream)

    def for_model(self, model: str | None) -> Ensemble:
        """The ensemble a client names: None (or "ensemble") is this one; a member's name is that member
        alone (the `single` strategy over the same members, so breakers and loaded weights are shared)."""
        if model is None or model == "ensemble":
            return self
        if model not in self.members:
            raise UnknownModelError(model, list(self.members))
        return Ensemble(list(self.members.values()), "single", members=[model])

    # the four entry points ----------------------------------------------------------------------------------
    async def arun(self, prompt: MessagesLike, **kwargs: Any) -> Result:
        """Answer a question string or a list of messages; kwargs: tools, tool_choice, max_tokens,
        temperature, top_p, stop, seed."""
        return await self.arun_request(self.request(prompt, **kwargs))

    def run(self, prompt: MessagesLike, **kwargs: Any) -> Result:
        return run_sync(self.arun(prompt, **kwargs))

    async def abatch(self, prompts: Sequence[MessagesLike], **kwargs: Any) -> list[Result]:
        """Answer several prompts with the same kwargs; results in the order of the prompts."""
        return await self.arun_batch_requests([self.request(p, **kwargs) for p in prompts])

    def batch(self, prompts: Sequence[MessagesLike], **kwargs: Any) -> list[Result]:
        return run_sync(self.abatch(prompts, **kwargs))

    async def astream(self, prompt: MessagesLike, **kwargs: Any) -> AsyncIterator[Delta]:
        """Stream the answer as deltas; the last one has `final=True`, the summed usage and the trace."""
        request = self.request(prompt, **kwargs)
        async for delta in self.astream_request(request):
            yield delta

    def stream(self, prompt: MessagesLike, **kwargs: Any) -> Iterator[Delta]:
        request = self.request(prompt, **kwargs)
        return iterate_sync(self.astream_request(request))

    def load(self) -> None:
        """`aload` from sync code."""
        run_sync(self.aload())

    async def aload(self) -> None:
        """Load every member the strategy uses (weights, clients, capability probes), concurrently, then check
        the strategy's needs again with what the probes found: construction never reaches the network, so
        this is where an unreachable or unsuitable server is found (a `CapabilityError` that says why)."""
        await asyncio.gather(*(member.aload() for member in self.members_used()))
        self.strategy.check(self.members)

    def members_used(self) -> list[Member]:
        return self.strategy.members_used(list(self.members.values()))

    def token_ids(self, text: str) -> list[int]:
        """`text` in the tokens of the member that spends the most on it, among those the strategy uses that
        have their own tokenizer at hand (no weights load, no network)."""
        counted = [ids for m in self.members_used() if (ids := m.token_ids(text)) is not None]
        if not counted:
            raise CapabilityError(self._cannot_count())
        return max(counted, key=len)

    def prompt_tokens(self, request: Request) -> int:
        """The tokens the request's prompt takes for the member that spends the most on it (its own prompt
        format, tools included), among the members the strategy uses that can tell without a call."""
        counts = [n for m in self.members_used() if (n := m.prompt_tokens(request)) is not None]
        if not counts:
            raise CapabilityError(self._cannot_count())
        return max(counts)

    def _cannot_count(self) -> str:
        names = ", ".join(m.name for m in self.members_used())
        return (
            f"none of the members ({names}) can count tokens without a model call (only members with a local "
            "tokenizer, such as HFMember, can); pass your own token counter instead"
        )

    @property
    def context_window(self) -> int | None:
        """The smallest known context window among the members the strategy uses."""
        windows = [m.context_window for m in self.members_used() if m.context_window]
        return min(windows) if windows else None

    def __repr__(self) -> str:
        return f"Ensemble(members={list(self.members)}, strategy={self.strategy!r})"


def to_tool_spec(tool: ToolLike) -> ToolSpec:
    """A `ToolSpec` from itself, an OpenAI tool dict ({"type": "function", "function": {...}}) or a plain
    {"name", "description", "parameters"} dict."""
    if isinstance(tool, ToolSpec):
        return tool
    body = tool.get("function", tool) if tool.get("type", "function") == "function" else tool
    return ToolSpec(
        name=body["name"],
        description=body.get("description", ""),
        parameters=body.get("parameters") or {"type": "object", "properties": {}},
    )
