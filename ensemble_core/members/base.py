"""The `Member` base class: one LLM, what it can do (capabilities), what it costs, and how to call it.

Subclass it for a new backend: set `capabilities`, implement `generate` (and, where the backend can do it
natively, `agenerate`, `stream`, `astream`, `score`, `step_session`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.asyncio_bridge import aiterate_blocking, to_thread
from ensemble_core.errors import CapabilityError, ConfigError
from ensemble_core.members.breaker import BreakerPolicy, CircuitBreaker
from ensemble_core.types import ContinuationScore, Delta, Generation, Request, Usage, tool_calls_to_chunks

if TYPE_CHECKING:
    from ensemble_core.members.step import StepSession

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def member_name_from(text: str, default: str = "model") -> str:
    """A valid member name made from a model name or path ("org/model:tag" -> "org_model_tag")."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("_.-")[:64].rstrip("_.-")
    return cleaned or default


class Capability(str, Enum):
    """What a strategy can ask of a member."""

    GENERATE = "generate"  # messages (+tools) -> text / tool calls, streamed
    SCORE = "score"  # log-probability of a given continuation
    STEP = "step"  # next-token distribution over its vocabulary, with its own KV cache


class Price(BaseModel):
    """Money per token; local models default to 0, and their cost is their latency."""

    model_config = ConfigDict(extra="forbid")
    input_per_token: float = Field(default=0.0, ge=0.0)
    output_per_token: float = Field(default=0.0, ge=0.0)

    def cost(self, usage: Usage) -> float:
        return usage.input_tokens * self.input_per_token + usage.output_tokens * self.output_per_token


class Member(ABC):
    """One LLM of an ensemble. `name` is unique within an ensemble; traces and configs refer to it."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.GENERATE})

    def __init__(
        self,
        name: str,
        *,
        price: Price | None = None,
        context_window: int | None = None,
        timeout_s: float | None = None,
        breaker: BreakerPolicy | None = None,
    ):
        if not _NAME.match(name):
            raise ConfigError(
                f"member name {name!r} is invalid: use 1-64 letters, digits, '_', '-' or '.', starting with "
                "a letter or digit"
            )
        self.name = name
        self.price = price or Price()
        self._context_window = context_window
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker(breaker)

    @property
    def context_window(self) -> int | None:
        """Longest prompt + answer in tokens, where known."""
        return self._context_window

    @property
    def model_name(self) -> str:
        """The underlying model's name, for `response_metadata` and traces."""
        return self.name

    @property
    def supports_tools(self) -> bool:
        """Whether the member takes `request.tools` and can answer with tool calls (adapters report it)."""
        return True

    @property
    def supports_tool_choice(self) -> bool:
        """Whether the member honours `request.tool_choice` ("required" or a tool's name forces a call)."""
        return False

    @property
    def supports_response_format(self) -> bool:
        """Whether the member constrains its answer to `request.response_format` (JSON, a JSON schema)."""
        return False

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, why: str) -> None:
        if not self.has(capability):
            have = ", ".join(sorted(c.value for c in self.capabilities))
            raise CapabilityError(
                f"member {self.name!r} ({type(self).__name__}) lacks the {capability.value!r} capability "
                f"that {why} needs (it has: {have}); use a member that offers it, e.g. an HFMember"
            )

    # generate -------------------------------------------------------------------------------------------
    @abstractmethod
    def generate(self, request: Request) -> Generation:
        """Answer one request with text and/or tool calls."""

    async def agenerate(self, request: Request) -> Generation:
        """Async `generate`; the default runs the sync one in a worker thread so members run concurrently."""
        return await to_thread(self.generate, request)

    def stream(self, request: Request) -> Iterator[Delta]:
        """Stream deltas; the last one has `final=True` with usage. Default: one delta from `generate`."""
        yield from generation_to_deltas(self.generate(request))

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        """Async `stream`; the default iterates the sync stream in a worker thread."""
        async for delta in aiterate_blocking(self.stream(request)):
            yield delta

    # score ----------------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """Log-probability of each continuation given its prompt (raw text, no chat template)."""
        self.require(Capability.SCORE, "scoring")
        raise NotImplementedError

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        return await to_thread(self.score, pairs)

    def format_prompt(self, request: Request) -> str:
        """The exact text this member is given for a chat request (its chat template or plain format), ending
        with `request.prefill` when the answer is to continue a partly written one."""
        return "\n".join(f"{m.role}: {m.content}" for m in request.prefilled_messages)

    def stop_strings(self, request: Request) -> list[str]:
        """The stop strings this member's prompt format needs on top of the request's (default: the
        request's)."""
        return list(request.params.stop)

    # step -----------------------------------------------------------------------------------------------
    def step_session(self, prompts: Sequence[str]) -> StepSession:
        """Start a stepping session on raw prompt texts (one row each): next-token log-probs with a KV
        cache."""
        self.require(Capability.STEP, "stepping")
        raise NotImplementedError

    def load(self) -> None:  # noqa: B027 (a backend with nothing to load keeps this no-op)
        """Load weights, open connections and probe capabilities now rather than on the first call; the only
        place a member may reach the network before its first request (construction never does). Default:
        nothing to load."""

    async def aload(self) -> None:
        """Async `load`; the default runs the sync one in a worker thread, so members load concurrently."""
        await to_thread(self.load)

    def prompt_tokens(self, request: Request) -> int | None:
        """How many tokens the request's prompt takes for this member, where it can tell without a model
        call (a local tokenizer); None when it cannot. A service checks prompts against `context_window`
        with it before any member is called."""
        return None

    def token_ids(self, text: str) -> list[int] | None:
        """The ids of `text` (no special tokens) in this member's own tokenizer, where it has one at hand
        without a model call; None when it cannot tell."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def generation_to_deltas(generation: Generation) -> Iterator[Delta]:
    """A whole generation as a stream: its text, its tool calls, then the final delta with usage."""
    chunks = tool_calls_to_chunks(generation.tool_calls)
    if generation.text or chunks:
        yield Delta(text=generation.text, tool_call_chunks=chunks, member=generation.member)
    yield Delta(
        member=generation.member, final=True, finish_reason=generation.finish_reason, usage=generation.usage
    )
