"""Errors that name the problem and the fix. Every error the engine raises on purpose is an
`EnsembleError`."""

from __future__ import annotations

from collections.abc import Mapping


class EnsembleError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(EnsembleError, ValueError):
    """An invalid ensemble configuration (field, allowed values)."""


class UnknownStrategyError(ConfigError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown strategy {name!r}; choose one of: {', '.join(sorted(known))}")
        self.name = name


class CapabilityError(ConfigError):
    """A member lacks a capability the strategy needs."""


class RequestError(EnsembleError, ValueError):
    """The request itself is wrong (the caller's mistake, not a member's fault): a service answers it with
    400, and no member's circuit breaker counts it."""


class EmptyMessagesError(RequestError):
    """A request without any message."""


class ModelNotFoundError(EnsembleError, FileNotFoundError):
    """A model path that does not exist or holds no loadable weights."""


class ContextWindowError(RequestError):
    """A prompt longer than a member's context window."""

    def __init__(self, member: str, prompt_tokens: int, context_window: int):
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but member {member!r} has a context window of "
            f"{context_window} tokens: shorten the conversation or use a member with a longer context"
        )
        self.member = member
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class MemberError(EnsembleError, RuntimeError):
    """One member failed to answer (raised, timed out, returned something unusable)."""

    def __init__(self, member: str, message: str):
        super().__init__(f"member {member!r} failed: {message}")
        self.member = member


class RequestRejectedError(RequestError):
    """A member's server refused the request itself (HTTP 400, 413 or 422: a prompt over its context, a
    parameter it does not take); the request is at fault, not the member."""

    def __init__(self, member: str, message: str):
        super().__init__(f"member {member!r} refused the request: {message}")
        self.member = member


class ResponseFormatError(EnsembleError, RuntimeError):
    """The answer does not have the form `response_format` asked for (not JSON, or JSON off the schema)."""


class InvalidToolCallError(EnsembleError, RuntimeError):
    """The answer is a tool call that is not valid (a forced call cut at max_tokens, say): reported, never
    passed on as prose."""

    def __init__(self, reasons: list[str]):
        super().__init__(f"the answer's tool call is invalid: {'; '.join(dict.fromkeys(reasons))}")
        self.reasons = reasons


class EmptyAnswerError(EnsembleError, RuntimeError):
    """A member answered with neither text nor tool calls where an answer was required."""


class AllMembersFailedError(EnsembleError, RuntimeError):
    """Every member the strategy tried failed; says why each failed."""

    def __init__(self, errors: Mapping[str, BaseException]):
        lines = "; ".join(f"{name}: {describe_failure(err)}" for name, err in errors.items())
        super().__init__(f"every member failed ({lines})")
        self.errors = dict(errors)


class DeadlineExceededError(EnsembleError, TimeoutError):
    """The whole ensemble call took longer than the request's `timeout_s`."""

    def __init__(self, timeout_s: float, streamed: bool = False):
        what = "finish its stream" if streamed else "answer"
        super().__init__(
            f"the ensemble did not {what} within timeout={timeout_s} s: raise the timeout, lower max_tokens, "
            "or use faster members"
        )
        self.timeout_s = timeout_s


class UnknownModelError(ConfigError):
    """A client named a model that is neither the ensemble nor one of its members."""

    def __init__(self, model: str, members: list[str]):
        super().__init__(
            f"model={model!r} names no member of this ensemble; the members are: {', '.join(members)} "
            "(leave model out, or name the ensemble, to ask the whole ensemble)"
        )
        self.model = model


def describe_failure(err: BaseException) -> str:
    """An exception as one line for a trace or an error: its type and message ("timed out" for a bare
    timeout, whose message is empty)."""
    if isinstance(err, TimeoutError) and not str(err):
        return "timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
