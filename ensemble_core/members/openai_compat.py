"""`OpenAICompatMember`: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI) as a
member; this is how an ensemble spreads over many GPUs and hosts.

Chat completions give generate / stream (text, tool calls, per-token logprobs, usage); `/v1/completions` with
`echo` and `logprobs` gives `score`, after a probe has checked how the server aligns prompt log-probabilities
(see `prompt_logprobs`). Both the sync and the async OpenAI clients are created on first use, and nothing
reaches the network before `load()` or the first call: construction never blocks on a server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import httpx
import openai
from pydantic import SecretStr

from ensemble_core.errors import CapabilityError, EnsembleError, MemberError, RequestRejectedError
from ensemble_core.members.base import Capability, Member, Price, member_name_from
from ensemble_core.members.prompt_logprobs import (
    PROBE_TEXT,
    PROBE_TOP_K,
    AlignmentCheck,
    EchoAlignment,
    EchoLogprobs,
    MissingLogprobError,
    continuation_logprobs,
    detect_alignment,
)
from ensemble_core.types import (
    ContinuationScore,
    Delta,
    FinishReason,
    Generation,
    Message,
    Request,
    ResponseFormat,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    Usage,
)

ScoreSetting = bool | Literal["auto"]

#: The key sent when none is given: local servers (vLLM, llama.cpp, Ollama) accept any, and the user's
#: OPENAI_API_KEY is never read implicitly, so it cannot leak to whatever host `base_url` names.
NO_KEY = "EMPTY"

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_FINISH.update(function_call="tool_calls", content_filter="stop")
#: Scoring requests in flight at once per `ascore` call.
SCORE_CONCURRENCY = 4
#: Errors after which the probe is asked again next time rather than its answer cached.
_TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError, httpx.HTTPError)
#: The longest the score probe may take (one request, no retries), so `load()` never hangs on a server.
PROBE_TIMEOUT_S = 10.0
#: HTTP statuses by which a server refuses the request itself (not a fault of the member).
_REFUSALS = frozenset({400, 413, 422})


class OpenAICompatMember(Member):
    """A model behind an OpenAI-compatible HTTP API.

    `base_url` ends in `/v1` (e.g. "http://127.0.0.1:8000/v1"). `api_key` is kept as a `SecretStr` and never
    appears in reprs, traces or error messages; without one, the placeholder "EMPTY" is sent (pass
    `api_key=os.environ["OPENAI_API_KEY"]` for a hosted API). `score`: True declares the capability, False
    withholds it, "auto" (default) asks the server once, in `load()` (or on the first scoring call), whether
    `/v1/completions` returns usable prompt log-probabilities; until a probe finds otherwise the member is
    taken to have the capability, and one that does says why in a `CapabilityError`. A server that cannot be
    reached is asked again at the next scoring call (whose `MemberError` says why), so a member that is down
    while the ensemble loads does not keep it from starting. The probe (bounded by `PROBE_TIMEOUT_S`, no
    retries) also finds how the server lines them up with the tokens (llama-cpp-python
    reports them shifted by one position) and scoring reads them accordingly (see `prompt_logprobs`).
    Streams carry the server's usage where it sends it (`stream_options.include_usage`); otherwise the
    answer's tokens are counted from the stream and the prompt's stay 0 (unknown). `timeout_s` bounds each
    HTTP request and each call of the member (None: the client's default, 600 s); `max_retries` retries
    connection errors and 429/5xx answers; a 400, 413 or 422 answer is the request's fault, not the
    member's (`RequestRejectedError`: a prompt over the server's context, say). `logprobs` asks chat
    completions for the answer's per-token log-probabilities. `score_top_logprobs` is how many top
    log-probabilities per position scoring asks of a server found to shift prompt log-probabilities by one
    (only the top ones reveal the right values).
    `http_client` / `async_http_client` replace the default httpx clients (proxies, TLS, tests).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | str | None = None,
        *,
        name: str | None = None,
        price: Price | None = None,
        timeout_s: float | None = 60.0,
        context_window: int | None = None,
        score: ScoreSetting = "auto",
        max_retries: int = 2,
        logprobs: bool = True,
        score_top_logprobs: int = 100,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ):
        super().__init__(
            name or member_name_from(model.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf"), "server"),
            price=price,
            context_window=context_window,
            timeout_s=timeout_s,
        )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or NO_KEY)
        self.score_setting: ScoreSetting = score
        self.max_retries = max_retries
        self.request_logprobs = logprobs
        self.score_top_logprobs = score_top_logprobs
        self._http_client = http_client
        self._async_http_client = async_http_client
        self._client: openai.OpenAI | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()
        self._alignment: AlignmentCheck | None = None
        self._last_probe: AlignmentCheck | None = None
        self._probe_lock = threading.Lock()

    # clients ----------
    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key.get_secret_value(),
            "timeout": openai.DEFAULT_TIMEOUT if self.timeout_s is None else self.timeout_s,
            "max_retries": self.max_retries,
        }

    @property
    def client(self) -> openai.OpenAI:
        with self._clients_lock:
            if self._client is None:
                # The SDK types http_client as an httpx2 client and takes httpx ones too ("legacy" clients).
                self._client = openai.OpenAI(
                    **self._client_options(),
                    http_client=self._http_client,  # type: ignore[arg-type]
                )
            return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """One async client per event loop: httpx connections belong to the loop that opened them (the sync
        entry points' bridge loop, a service's loop, a caller's own)."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            if loop not in self._async_clients:
                self._async_clients[loop] = openai.AsyncOpenAI(
                    **self._client_options(),
                    http_client=self._async_http_client,  # type: ignore[arg-type]
                )
            return self._async_clients[loop]

    def load(self) -> None:
        """Open the sync client now and, with `score="auto"`, probe the server's prompt log-probabilities
        (at most `PROBE_TIMEOUT_S`; what it found is in `probe()`, and `require` reports it)."""
        _ = self.client
        if self.score_setting == "auto":
            self.probe()

    async def aload(self) -> None:
        """`load` without blocking the event loop."""
        _ = self.client
        if self.score_setting == "auto":
            await self.aprobe()

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def supports_response_format(self) -> bool:
        """The server receives `response_format` (vLLM, SGLang and llama.cpp decode under it)."""
        return True

    @property
    def supports_tool_choice(self) -> bool:
        """The server receives `tool_choice` ("required", "none" or a named tool: vLLM and llama.cpp force
        the call under it)."""
        return True

    # capabilities ----------
    @property
    def capabilities(self) -> frozenset[Capability]:  # type: ignore[override]
        return frozenset(
            {Capability.GENERATE} | ({Capability.SCORE} if self.has(Capability.SCORE) else set())
        )

    def has(self, capability: Capability) -> bool:
        """Never asks the server: with `score="auto"`, what the probe found, or yes until it has found it."""
        if capability is Capability.SCORE:
            if self.score_setting == "auto":
                return self._alignment is None or self._alignment.alignment is not None
            return bool(self.score_setting)
        return capability is Capability.GENERATE

    def require(self, capability: Capability, why: str) -> None:
        if capability is Capability.SCORE and not self.has(capability):
            found = (
                "score=False was given"
                if self.score_setting is False or self._alignment is None
                else self._alignment.reason
            )
            raise CapabilityError(
                f"member {self.name!r} (OpenAICompatMember, {self.base_url}) lacks the 'score' capability "
                f"that {why} needs: {found}; use a server that returns prompt log-probabilities from "
                "/v1/completions with echo (vLLM, llama.cpp), or a local HFMember"
            )
        super().require(capability, why)

    def probe(self) -> AlignmentCheck:
        """Ask the server once how it aligns prompt log-probabilities (cached; an unreachable server is asked
        again next time). Bounded by `PROBE_TIMEOUT_S`; every failure becomes a finding with its reason (which
        `require` turns into a `CapabilityError`, and scoring into a `MemberError`)."""
        with self._probe_lock:
            if self._alignment is None:
                client = self.client.with_options(timeout=self._probe_timeout_s, max_retries=0)
                try:
                    self._found(_read_probe(client.completions.create(**self._probe_kwargs())))
                except Exception as err:
                    self._found(*self._probe_failure(err))
            return self._alignment or self._finding()

    async def aprobe(self) -> AlignmentCheck:
        """`probe` without blocking the event loop, on the async client."""
        if self._alignment is not None:
            return self._alignment
        client = self.async_client.with_options(timeout=self._probe_timeout_s, max_retries=0)
        try:
            found, transient = _read_probe(await client.completions.create(**self._probe_kwargs())), False
        except Exception as err:
            found, transient = self._probe_failure(err)
        with self._probe_lock:
            if self._alignment is None:
                self._found(found, transient)
            return self._alignment or self._finding()

    def _found(self, check: AlignmentCheck, transient: bool = False) -> None:
        """Keep the probe's finding; a transient failure (unreachable, overloaded) is not cached."""
        self._last_probe = check
        if not transient:
            self._alignment = check

    def _finding(self) -> AlignmentCheck:
        assert self._last_probe is not None
        return self._last_probe

    def _probe_failure(self, err: Exception) -> tuple[AlignmentCheck, bool]:
        """What a failed probe says, and whether the failure is transient (then the server is asked again)."""
        if isinstance(err, _TRANSIENT):
            detail = _describe(err) if isinstance(err, openai.APIError) else f"{type(err).__name__}: {err}"
            reason, transient = f"the probe could not reach the server ({self._redact(detail)})", True
        elif isinstance(err, openai.APIError):
            reason, transient = f"the probe failed ({self._redact(_describe(err))})", False
        elif isinstance(err, ValueError):
            reason, transient = f"the probe's answer is not valid JSON ({self._redact(str(err))})", False
        else:
            reason, transient = f"the probe failed ({type(err).__name__}: {self._redact(str(err))})", False
        return AlignmentCheck(alignment=None, reason=reason), transient

    @property
    def _probe_timeout_s(self) -> float:
        return min(PROBE_TIMEOUT_S, self.timeout_s or PROBE_TIMEOUT_S)

    def _probe_kwargs(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": PROBE_TEXT,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": PROBE_TOP_K,
        }

    # generate ----------
    def generate(self, request: Request) -> Generation:
        start = time.perf_counter()
        with self._api_errors():
            completion = self.client.chat.completions.create(**self._chat_kwargs(request))
        return self._generation(completion, time.perf_counter() - start)

    async def agenerate(self, request: Request) -> Generation:
        start = time.perf_counter()
        with self._api_errors():
            completion = await self.async_client.chat.completions.create(**self._chat_kwargs(request))
        return self._generation(completion, time.perf_counter() - start)

    def stream(self, request: Request) -> Iterator[Delta]:
        reader = _StreamReader(self.name)
        with self._api_errors():
            chunks = self.client.chat.completions.create(**self._chat_kwargs(request, stream=True))
            try:
                for chunk in chunks:
                    yield from reader.feed(chunk)
            finally:
                chunks.close()
        yield reader.finish()

    async def astream(self, request: Request) -> AsyncIterator[Delta]:
        reader = _StreamReader(self.name)
        with self._api_errors():
            chunks = await self.async_client.chat.completions.create(
                **self._chat_kwargs(request, stream=True)
            )
            try:
                async for chunk in chunks:
                    for delta in reader.feed(chunk):
                        yield delta
            finally:
                await chunks.close()
        yield reader.finish()

    def _chat_kwargs(self, request: Request, stream: bool = False) -> dict[str, Any]:
        params = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [to_openai_message(m) for m in request.prefilled_messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            kwargs["stop"] = params.stop
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if request.tools:
            kwargs["tools"] = [tool.as_openai() for tool in request.tools]
        if request.tool_choice:
            kwargs["tool_choice"] = to_openai_tool_choice(request.tool_choice)
        if request.response_format is not None:
            kwargs["response_format"] = to_openai_response_format(request.response_format)
        if self.request_logprobs:
            # top_logprobs=1: llama-cpp-python returns no logprobs for logprobs=True alone.
            kwargs.update(logprobs=True, top_logprobs=1)
        if request.prefill:
            # vLLM / SGLang continue the last assistant message instead of starting a new one.
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        if stream:
            kwargs.update(stream=True, stream_options={"include_usage": True})
        return kwargs

    def _generation(self, completion: Any, latency_s: float) -> Generation:
        if not completion.choices:
            raise MemberError(self.name, "the server returned a chat completion without choices")
        choice = completion.choices[0]
        message = choice.message
        tool_calls = [parse_tool_call(self.name, call) for call in message.tool_calls or []]
        content = choice.logprobs.content if choice.logprobs is not None else None
        return Generation(
            member=self.name,
            text=message.content or "",
            tool_calls=tool_calls,
            logprobs=[TokenLogprob(token=t.token, logprob=t.logprob) for t in content] if content else None,
            usage=_usage(completion.usage),
            latency_s=latency_s,
            finish_reason="tool_calls" if tool_calls else _FINISH.get(choice.finish_reason or "stop", "stop"),
            prompt_format="server",
        )

    # score ----------
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """Log-probability of each continuation after its prompt (raw text), read from the server's echoed
        prompt log-probabilities the way the probe found them aligned."""
        self.require(Capability.SCORE, "scoring")
        alignment = self._score_alignment(self.probe())
        results = []
        for prompt, continuation in pairs:
            if not continuation:
                results.append(ContinuationScore(sum_logprob=0.0, n_tokens=0, n_chars=0))
                continue
            with self._api_errors():
                response = self.client.completions.create(
                    **self._score_kwargs(prompt + continuation, alignment)
                )
            results.append(self._read_score(response, prompt, continuation, alignment))
        return results

    async def ascore(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        self.require(Capability.SCORE, "scoring")
        alignment = self._score_alignment(await self.aprobe())
        client = self.async_client
        slots = asyncio.Semaphore(SCORE_CONCURRENCY)

        async def one(prompt: str, continuation: str) -> ContinuationScore:
            if not continuation:
                return ContinuationScore(sum_logprob=0.0, n_tokens=0, n_chars=0)
            async with slots:
                with self._api_errors():
                    response = await client.completions.create(
                        **self._score_kwargs(prompt + continuation, alignment)
                    )
            return self._read_score(response, prompt, continuation, alignment)

        return list(await asyncio.gather(*(one(p, c) for p, c in pairs)))

    def _score_alignment(self, check: AlignmentCheck) -> EchoAlignment:
        self.require(Capability.SCORE, "scoring")
        if check.alignment is None:
            raise MemberError(self.name, f"cannot read prompt log-probabilities: {check.reason}")
        return check.alignment

    def _score_kwargs(self, text: str, alignment: EchoAlignment) -> dict[str, Any]:
        top = 1 if alignment is EchoAlignment.ALIGNED else self.score_top_logprobs
        return {
            "model": self.model,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": top,
        }

    def _read_score(
        self, response: Any, prompt: str, continuation: str, alignment: EchoAlignment
    ) -> ContinuationScore:
        try:
            logprobs = EchoLogprobs.from_response(response.choices[0].logprobs if response.choices else None)
            values = continuation_logprobs(logprobs, len(prompt), len(prompt) + len(continuation), alignment)
        except MissingLogprobError as err:
            hint = (
                "; the server shifts prompt log-probabilities, so only tokens among the top "
                f"{self.score_top_logprobs} can be read: raise score_top_logprobs"
                if alignment is EchoAlignment.SHIFTED
                else "; give a non-empty prompt"
            )
            raise MemberError(self.name, f"cannot score {continuation!r}: {err}{hint}") from None
        except ValueError as err:
            raise MemberError(self.name, f"cannot score {continuation!r}: {err}") from None
        return ContinuationScore(sum_logprob=sum(values), n_tokens=len(values), n_chars=len(continuation))

    # errors ----------
    @contextmanager
    def _api_errors(self) -> Iterator[None]:
        """Turn the client's errors into `MemberError`s with the secret key blanked out, and a server's
        refusal of the request itself (400, 413, 422) into a `RequestRejectedError`, which no circuit breaker
        counts. They are raised `from None`: a chained client error could carry a server's echo of the key
        into a log."""
        try:
            yield
        except EnsembleError:
            raise
        except openai.APIStatusError as err:
            if err.status_code in _REFUSALS:
                raise RequestRejectedError(self.name, self._redact(_describe(err))) from None
            raise MemberError(self.name, self._redact(_describe(err))) from None
        except openai.APIError as err:
            raise MemberError(self.name, self._redact(_describe(err))) from None
        except httpx.HTTPError as err:
            raise MemberError(self.name, self._redact(f"{type(err).__name__}: {err}")) from None
        except ValueError as err:  # a body that is not JSON (json.JSONDecodeError)
            raise MemberError(
                self.name, self._redact(f"the server's answer is not valid JSON ({err})")
            ) from None

    def _redact(self, text: str) -> str:
        secret = self.api_key.get_secret_value()
        return text.replace(secret, "**********") if secret and secret != NO_KEY else text

    def __repr__(self) -> str:
        return f"OpenAICompatMember(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"


class _StreamReader:
    """Chat completion chunks -> `Delta`s. Usage is the last one the server reported (some send it in every
    chunk, cumulatively: summing would count it twice); a tool call's id and name are passed on once per
    index (llama-cpp-python repeats them in every fragment). A server that sends no usage gets the answer's
    tokens counted from its per-token logprobs, or else one per chunk (servers stream a token per chunk)."""

    def __init__(self, member: str):
        self.member = member
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.ids: dict[int, str] = {}
        self.names: dict[int, str] = {}
        self.arguments: dict[int, str] = {}
        self.logprob_tokens = 0
        self.chunks = 0

    def feed(self, chunk: Any) -> Iterator[Delta]:
        if getattr(chunk, "usage", None) is not None:
            self.usage = _usage(chunk.usage)
        for choice in chunk.choices or []:
            if choice.index:
                continue
            if choice.finish_reason:
                self.finish_reason = _FINISH.get(choice.finish_reason, "stop")
            if choice.logprobs is not None and choice.logprobs.content:
                self.logprob_tokens += len(choice.logprobs.content)
            text = choice.delta.content or ""
            tool_chunks = [self._tool_chunk(call) for call in choice.delta.tool_calls or []]
            if text or tool_chunks:
                self.chunks += 1
                yield Delta(text=text, tool_call_chunks=tool_chunks, member=self.member)

    def _tool_chunk(self, call: Any) -> ToolCallChunk:
        function = call.function
        new_id = call.id if call.id and call.index not in self.ids else None
        new_name = function.name if function and function.name and call.index not in self.names else None
        if new_id:
            self.ids[call.index] = new_id
        if new_name:
            self.names[call.index] = new_name
        arguments = (function.arguments if function else None) or ""
        self.arguments[call.index] = self.arguments.get(call.index, "") + arguments
        return ToolCallChunk(index=call.index, id=new_id, name=new_name, arguments=arguments)

    def finish(self) -> Delta:
        """The final delta. A stream that ended without a finish reason was cut off (a server that interrupts
        a stream for a newer request, a dropped connection): that fails the member rather than passing a
        truncated answer on as whole. A tool call whose joined arguments are not a JSON object fails it
        too."""
        if self.finish_reason is None:
            raise MemberError(self.member, "the server ended the stream without a finish reason (cut off)")
        for index, arguments in self.arguments.items():
            parse_arguments(self.member, self.names.get(index, "?"), arguments)
        finish = "tool_calls" if self.arguments else (self.finish_reason or "stop")
        usage = self.usage or Usage(output_tokens=self.logprob_tokens or self.chunks)
        return Delta(member=self.member, final=True, finish_reason=finish, usage=usage)


# mapping ----------
def to_openai_message(message: Message) -> dict[str, Any]:
    """One engine message as an OpenAI chat message (assistant tool calls with JSON-string arguments)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    if message.name and message.role != "tool":
        out["name"] = message.name
    return out


def to_openai_response_format(response_format: ResponseFormat) -> dict[str, Any]:
    """The engine's `ResponseFormat` as OpenAI's `response_format` (vLLM, SGLang and llama.cpp honour it)."""
    if response_format.type != "json_schema":
        return {"type": response_format.type}
    schema: dict[str, Any] = {"name": response_format.name or "answer", "schema": response_format.json_schema}
    if response_format.strict:
        schema["strict"] = True
    return {"type": "json_schema", "json_schema": schema}


def to_openai_tool_choice(choice: str) -> str | dict[str, Any]:
    """ "auto" / "none" / "required" pass through; any other string names the one tool to call."""
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def parse_tool_call(member: str, call: Any) -> ToolCall:
    """An OpenAI tool call -> `ToolCall`; arguments that are not a JSON object fail the member."""
    function = call.function
    arguments = parse_arguments(member, function.name, function.arguments)
    return (
        ToolCall(id=call.id, name=function.name, arguments=arguments)
        if call.id
        else ToolCall(name=function.name, arguments=arguments)
    )


def parse_arguments(member: str, tool: str, arguments: str | None) -> dict[str, Any]:
    if not arguments or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as err:
        raise MemberError(
            member,
            f"the server's call of tool {tool!r} has arguments that are not valid JSON ({err}): "
            f"{arguments[:200]!r}",
        ) from None
    if not isinstance(parsed, dict):
        raise MemberError(
            member,
            f"the server's call of tool {tool!r} has arguments that are not a JSON object: "
            f"{arguments[:200]!r}",
        )
    return parsed


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0)


def _read_probe(response: Any) -> AlignmentCheck:
    try:
        logprobs = EchoLogprobs.from_response(response.choices[0].logprobs if response.choices else None)
    except ValueError as err:
        return AlignmentCheck(alignment=None, reason=str(err))
    return detect_alignment(logprobs)


def _describe(err: openai.APIError) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__
        kind = type(cause).__name__ if cause else "connection error"
        return f"cannot connect to the server ({kind}: {cause or err})"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {err.message}"
    return f"{type(err).__name__}: {err.message}"
