"""`HFMember`: a local transformers causal LM (safetensors folder or GGUF file) that can generate, score and
step. It puts the jobs together: loading (`loading`), prompts (`prompts`), micro-batched generation
(`generation`), scoring (`scoring`) and stepping (`stepping`), all over one `LoadedModel`."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ensemble_core.errors import ConfigError
from ensemble_core.members.base import Capability, Member, Price, member_name_from
from ensemble_core.members.hf import prompts as hf_prompts
from ensemble_core.members.hf.constraints import Constraint, constraint_for
from ensemble_core.members.hf.generation import GenerationRun, MicroBatcher
from ensemble_core.members.hf.int8_linear import Quantization, int8_unavailable
from ensemble_core.members.hf.loading import (
    context_length,
    default_device,
    load_tokenizer,
    load_weights,
    resolve_dtype,
)
from ensemble_core.members.hf.model import LoadedModel
from ensemble_core.members.hf.packed_linear import packing_unavailable
from ensemble_core.members.hf.prompts import PromptFormat
from ensemble_core.members.hf.scoring import SharedScores, score_pairs, score_shared
from ensemble_core.members.hf.stepping import HFStepSession
from ensemble_core.members.tool_parsing import ProseStream, answer_from_results, repeats_answered_calls
from ensemble_core.members.weights import locate
from ensemble_core.types import ContinuationScore, Delta, Generation, Request, tool_calls_to_chunks


class HFMember(Member):
    """A local transformers model. `path` is a safetensors folder, a `.gguf` file, or a folder plus
    `gguf_file`. GGUF weights are de-quantised once into the user cache and loaded from there afterwards.

    `prompt_format`: "chat" uses the tokenizer's chat template, "plain" a Question/Answer format for base
    models, "auto" (default) the template when there is one. The trace records which was used. `dtype`: a
    torch dtype or its name, "auto" (bfloat16 where the device computes it fast) or None (bfloat16 on CUDA,
    float32 on the CPU); GGUF weights are de-quantised straight to it. `pack_weights` (float32 on the CPU):
    lay the linear layers out for oneDNN once at load, for faster decoding and much faster passes over a few
    tokens (speculative verification); the weights then sit in memory rather than memory-mapped.
    `quantization="int8"` (bfloat16 on the CPU): int8 weights, one scale per row, for a step at about half
    the cost (a drafter's); the text may differ slightly from bfloat16's.
    """

    capabilities = frozenset({Capability.GENERATE, Capability.SCORE, Capability.STEP})

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        prompt_format: PromptFormat = "auto",
        context_window: int | None = None,
        trust_remote_code: bool = False,
        price: Price | None = None,
        timeout_s: float | None = None,
        score_batch_size: int = 16,
        max_batch: int = 8,
        pack_weights: bool = False,
        quantization: Quantization | None = None,
    ):
        self.folder, self.gguf_file = locate(path, gguf_file)
        default_name = Path(self.gguf_file).stem if self.gguf_file else self.folder.name
        super().__init__(
            name or member_name_from(default_name),
            price=price,
            context_window=context_window,
            timeout_s=timeout_s,
        )
        self.device = torch.device(device or default_device())
        self.dtype = resolve_dtype(dtype, self.device)
        if pack_weights and (why := packing_unavailable(self.device, self.dtype)):
            raise ConfigError(f"{why}: pass pack_weights=False, or dtype='float32' on the CPU")
        if quantization is not None and (why := int8_unavailable(quantization, self.device, self.dtype)):
            raise ConfigError(f"{why}: pass quantization=None, or dtype='bfloat16' on the CPU")
        self.pack_weights = pack_weights
        self.quantization: Quantization | None = quantization
        self.prompt_format: PromptFormat = prompt_format
        self.trust_remote_code = trust_remote_code
        self.score_batch_size = score_batch_size
        self._lm: LoadedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._window: int | None = None
        self._batcher = MicroBatcher(self.name, self.loaded, max_batch=max_batch)

    # loading --------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the weights now (converting a GGUF file on first use); shared by members of the same model."""
        if self._lm is not None:
            return
        model, tokenizer = load_weights(
            self.folder,
            self.gguf_file,
            self.device,
            self.dtype,
            trust_remote_code=self.trust_remote_code,
            name=self.name,
            pack=self.pack_weights,
            quantization=self.quantization,
        )
        window = self._context_window or getattr(model.config, "max_position_embeddings", None)
        self._lm = LoadedModel(model, tokenizer, self.device, self.name, window)

    def loaded(self) -> LoadedModel:
        """The model, tokenizer and their token-level facts, loading them on first use."""
        self.load()
        assert self._lm is not None
        return self._lm

    @property
    def model(self) -> Any:
        return self.loaded().model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.loaded().tokenizer

    def text_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, without loading the weights when they are not loaded yet (prompts and token counts
        need no model)."""
        if self._lm is not None:
            return self._lm.tokenizer
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(
                self.folder, self.gguf_file, self.dtype, trust_remote_code=self.trust_remote_code
            )
        return self._tokenizer

    @property
    def context_window(self) -> int | None:
        """The window given, else the model's own (from its config or GGUF metadata, before any weights
        load)."""
        if self._lm is not None:
            return self._lm.context_window
        if self._context_window is None and self._window is None:
            self._window = context_length(self.folder, self.gguf_file, self.dtype)
        return self._context_window or self._window

    @property
    def model_name(self) -> str:
        return self.gguf_file or self.folder.name

    @property
    def supports_tool_choice(self) -> bool:
        """A forced call is enforced by a grammar (`constraints`): always one call, arguments that
        validate."""
        return True

    @property
    def supports_response_format(self) -> bool:
        """JSON and JSON-schema answers are enforced by a grammar (`constraints`)."""
        return True

    @property
    def uses_chat_template(self) -> bool:
        return hf_prompts.uses_chat_template(self.text_tokenizer(), self.prompt_format)

    # prompts --------------------------------------------------------------------------------------------
    def format_prompt(self, request: Request) -> str:
        return hf_prompts.format_prompt(self.text_tokenizer(), self.prompt_format, request)

    def stop_strings(self, request: Request) -> list[str]:
        return hf_prompts.stop_strings(self.text_tokenizer(), self.prompt_format, request)

    def prompt_tokens(self, request: Request) -> int:
        """Tokens of the request's prompt as this model reads it (its tokenizer alone; no weights load)."""
        return len(self.token_ids(self.format_prompt(request), prompt=True))

    def token_ids(self, text: str, *, prompt: bool = False) -> list[int]:
        """Ids of `text` in this model's tokenizer (as a prompt, with its special tokens; or as plain
        text)."""
        tokenizer = self.text_tokenizer()
        add_special = prompt and not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))
        return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def constraint(self, request: Request) -> Constraint | None:
        """The grammar this model's answer to `request` must keep to (a tool call, a JSON schema), advanced
        past its prefill; None when any text will do."""
        lm = self.loaded()
        prefill = lm.encode_continuation(request.prefill) if request.prefill else []
        return constraint_for(lm.tokenizer, lm.vocab_width, lm.eos_ids(), request, prefill)

    def encode_text(self, text: str) -> list[int]:
        """Ids of a prompt text as generate, score and step encode it (see `LoadedModel.encode_text`)."""
        return self.loaded().encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, without special tokens."""
        return self.loaded().decode(ids)

    def eos_ids(self) -> list[int]:
        return self.loaded().eos_ids()

    # generate -------------------------------------------------------------------------------------------
    def _run(self, request: Request, sink: queue.Queue[Any] | None = None) -> GenerationRun:
        """The generation of one request: the prompt encoded and checked against the context window, and the
        grammar its answer must keep to."""
        lm = self.loaded()
        prompt_ids = lm.encode_text(self.format_prompt(request))
        lm.check_fits(len(prompt_ids), room_for_one_more=True)
        label = "chat-template" if self.uses_chat_template else "plain-qa"
        constraint = self.constraint(request)
        return GenerationRun(lm, request, prompt_ids, self.stop_strings(request), label, constraint, sink)

    def generate(self, request: Request) -> Generation:
        start = time.perf_counter()
        run = self._run(request)
        self._batcher.submit(run).result()
        generation = run.generation(time.perf_counter() - start)
        if repeats_answered_calls(request, generation.tool_calls):
            return self.generate(answer_from_results(request))
        return generation

    async def agenerate(self, request: Request) -> Generation:
        """Queued with other requests to this model and generated in a micro-batch; cancelling the caller
        ends this row's generation at the next token."""
        start = time.perf_counter()
        run = self._run(request)
        try:
            await asyncio.wrap_future(self._batcher.submit(run))
        except asyncio.CancelledError:
            run.cancelled.set()
            raise
        generation = run.generation(time.perf_counter() - start)
        if repeats_answered_calls(request, generation.tool_calls):
            return await self.agenerate(answer_from_results(request))
        return generation

    def stream(self, request: Request) -> Iterator[Delta]:
        start = time.perf_counter()
        tokens: queue.Queue[Any] = queue.Queue()
        run = self._run(request, sink=tokens)
        self._batcher.submit(run)
        prose = ProseStream() if request.tools else None
        try:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                shown = prose.add(item) if prose is not None else item
                if shown:
                    yield Delta(text=shown, member=self.name)
        finally:
            run.cancelled.set()
        generation = run.generation(time.perf_counter() - start)
        generation.require_valid_calls()  # a stream cannot carry an invalid call: it ends with the error
        shown = prose is not None and bool(prose.shown)
        if not shown and repeats_answered_calls(request, generation.tool_calls):  # a call is held back
            yield from self.stream(answer_from_results(request))
            return
        rest = prose.finish(generation.text) if prose is not None else ""
        if rest or generation.tool_calls:
            yield Delta(
                text=rest, tool_call_chunks=tool_calls_to_chunks(generation.tool_calls), member=self.name
            )
        yield Delta(
            member=self.name, final=True, finish_reason=generation.finish_reason, usage=generation.usage
        )

    # score ----------------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """Sum and mean log-probability of each continuation after its prompt (raw text)."""
        return score_pairs(self.loaded(), pairs, self.score_batch_size)

    def score_shared(
        self, groups: Sequence[tuple[str, Sequence[str]]], *, with_prompt: bool = False
    ) -> SharedScores:
        """Several continuations of each prompt, each prompt run once (see `scoring.score_shared`)."""
        return score_shared(self.loaded(), groups, with_prompt=with_prompt)

    # step -----------------------------------------------------------------------------------------------
    def step_session(self, prompts: Sequence[str]) -> HFStepSession:
        """Next-token log-probs for each prompt text (encoded as `encode_text` does), with a KV cache."""
        lm = self.loaded()
        return HFStepSession(lm, [lm.encode_text(p) for p in prompts])
