"""What a request asks of the ensemble that answers it, checked before any member is called
(log-probabilities, a response format, a prompt that fits), and whether the final answer has the form the
request asked for."""

from __future__ import annotations

import json
from collections.abc import Sequence

from jsonschema import validators

from ensemble_core.asyncio_bridge import to_thread
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ContextWindowError, ResponseFormatError
from ensemble_core.service.errors import invalid
from ensemble_core.types import Request, ResponseFormat, ToolCall


async def check_request(ensemble: Ensemble, request: Request, logprobs: bool) -> None:
    """Raise a 400 `APIError` when the ensemble cannot honour what the request asks."""
    strategy = ensemble.strategy.name
    if logprobs and ensemble.strategy.composes_answer:
        raise invalid(
            f"strategy {strategy!r} composes its answer from several members, so it has no per-token "
            "log-probabilities: ask without logprobs, or ask one member by its model id",
            param="logprobs",
        )
    if request.response_format is not None and request.response_format.type != "text":
        _check_response_format(ensemble, request.response_format)
    await _check_context(ensemble, request)


def _check_response_format(ensemble: Ensemble, response_format: ResponseFormat) -> None:
    """Every member the strategy may ask must constrain its decoding (local members by a grammar, token
    fusion in the union vocabulary of theirs; served ones by their server)."""
    kind = response_format.type
    unable = [m.name for m in ensemble.members_used() if not m.supports_response_format]
    if unable:
        raise invalid(
            f"response_format {kind!r} needs members that constrain their decoding to it, and "
            f"{', '.join(repr(n) for n in unable)} cannot (local HFMembers and members behind a server that "
            "honours response_format, such as vLLM or llama.cpp, can): ask them with response_format 'text'",
            param="response_format",
        )


async def _check_context(ensemble: Ensemble, request: Request) -> None:
    """400 when the prompt is known to be over the context window of every member that could answer it; a
    member that cannot count its prompt's tokens without a call may still try."""
    over: list[ContextWindowError] = []
    for member in ensemble.members_used():
        window = member.context_window
        tokens = await to_thread(member.prompt_tokens, request) if window else None
        if window is None or tokens is None:
            return
        if tokens <= window:
            return
        over.append(ContextWindowError(member.name, tokens, window))
    if over:
        raise invalid(str(over[0]), param="messages", code="context_length_exceeded")


def check_answer(response_format: ResponseFormat | None, text: str, tool_calls: Sequence[ToolCall]) -> None:
    """Raise `ResponseFormatError` when a JSON response format was asked for and the answer is not such
    JSON (an answer that calls tools instead is exempt)."""
    if response_format is None or response_format.type == "text" or tool_calls:
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResponseFormatError(
            f"the answer is not JSON ({err}), which response_format {response_format.type!r} asks for: "
            f"{text[:120]!r}"
        ) from None
    if response_format.type == "json_object" and not isinstance(value, dict):
        raise ResponseFormatError(f"the answer is JSON but not an object: {text[:120]!r}")
    if response_format.json_schema is not None:
        validator = validators.validator_for(response_format.json_schema)(response_format.json_schema)
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            raise ResponseFormatError(
                f"the answer does not match the response_format schema at {where}: {error.message}"
            )
