"""`HFMember`: a local transformers causal LM (safetensors folder or GGUF file) that can generate, score and
step. CUDA with bf16 when a GPU is present, CPU float32 otherwise; weights load lazily on first use."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ensemble_core.errors import ContextWindowError
from ensemble_core.members.base import Capability, Member, Price, member_name_from
from ensemble_core.members.hf_cache import cache_argument
from ensemble_core.members.hf_generation import GenerationRun, MicroBatcher
from ensemble_core.members.prompting import PLAIN_STOP, plain_prompt, template_messages, with_tools_in_system
from ensemble_core.members.step import StepSession
from ensemble_core.members.weights import convert_gguf, converted_folder, is_converted, locate
from ensemble_core.progress import reporting
from ensemble_core.types import (
    ContinuationScore,
    Delta,
    Generation,
    Message,
    Request,
    tool_calls_to_chunks,
)

PromptFormat = Literal["auto", "chat", "plain"]

_LOADED: dict[tuple[str, str, str], tuple[Any, PreTrainedTokenizerBase]] = {}
_LOAD_LOCK = threading.Lock()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None: bfloat16 on CUDA, float32 on the CPU. "auto": bfloat16 on CUDA, and on a CPU whose oneDNN has
    bfloat16 kernels (AVX-512 or AMX: about 2.5x faster than float32 for a 1.5B model on two cores), else
    float32. Otherwise the dtype named."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if dtype == "auto" and _cpu_has_bf16_kernels() else torch.float32
    return getattr(torch, dtype)


def _cpu_has_bf16_kernels() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class HFMember(Member):
    """A local transformers model. `path` is a safetensors folder, a `.gguf` file, or a folder plus
    `gguf_file`. GGUF weights are de-quantised once into the user cache and loaded from there afterwards.

    `prompt_format`: "chat" uses the tokenizer's chat template, "plain" a Question/Answer format for base
    models, "auto" (default) the template when there is one. The trace records which was used. `dtype`: a
    torch dtype or its name, "auto" (bfloat16 where the device computes it fast) or None (bfloat16 on CUDA,
    float32 on the CPU); GGUF weights are de-quantised straight to it.
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
        self.prompt_format: PromptFormat = prompt_format
        self.trust_remote_code = trust_remote_code
        self.score_batch_size = score_batch_size
        self._model: Any = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._batcher = MicroBatcher(self, max_batch=max_batch)

    # loading ------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the weights now (converting a GGUF file on first use); shared by members of the same model."""
        if self._model is not None:
            return
        with _LOAD_LOCK:
            folder = self.folder
            if self.gguf_file:
                dtype_name = str(self.dtype).removeprefix("torch.")
                target = converted_folder(self.folder, self.gguf_file, dtype_name)
                if is_converted(target):
                    folder = target
                else:
                    with reporting(
                        f"converting {self.gguf_file} to safetensors (once; cached in {target.parent})"
                    ):
                        folder = convert_gguf(self.folder, self.gguf_file, dtype_name)
            key = (str(folder.resolve()), str(self.device), str(self.dtype))
            if key not in _LOADED:
                with reporting(f"loading {self.name} on {self.device}"), _quiet_progress_bars():
                    tokenizer = AutoTokenizer.from_pretrained(
                        folder, trust_remote_code=self.trust_remote_code
                    )
                    model: Any = AutoModelForCausalLM.from_pretrained(
                        folder,
                        dtype=self.dtype,
                        use_safetensors=True,
                        trust_remote_code=self.trust_remote_code,
                    )
                    _LOADED[key] = (model.to(self.device).eval(), tokenizer)
            self._model, self._tokenizer = _LOADED[key]

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        self.load()
        assert self._tokenizer is not None
        return self._tokenizer

    @property
    def context_window(self) -> int | None:
        if self._context_window is None and self._model is not None:
            return getattr(self._model.config, "max_position_embeddings", None)
        return self._context_window

    @property
    def model_name(self) -> str:
        return self.gguf_file or self.folder.name

    @property
    def supports_tool_choice(self) -> bool:
        """A forced call is begun in the answer itself (see `tool_parsing.forced_call`)."""
        return True

    @property
    def uses_chat_template(self) -> bool:
        if self.prompt_format == "auto":
            return bool(getattr(self.tokenizer, "chat_template", None))
        return self.prompt_format == "chat"

    # prompts
    # --------------------------------------------------------------------------------------------------
    def format_prompt(self, request: Request) -> str:
        """The chat template (or plain format) of the request, followed by `request.prefill`: a plain prompt
        ends with "Answer:", so the prefill follows it after one space, as the model would write it."""
        if not request.prefill:
            return self._format_messages(request)
        if self.uses_chat_template:
            return self._format_messages(request) + request.prefill
        return f"{self._format_messages(request)} {request.prefill.lstrip()}"

    def _format_messages(self, request: Request) -> str:
        messages = request.messages
        if not self.uses_chat_template:
            if request.tools:
                messages = with_tools_in_system(messages, request.tools)
            return plain_prompt(messages)
        tools: list[dict[Any, Any] | Callable[..., Any]] | None = [
            t.as_openai() for t in request.tools
        ] or None
        rendered = self._render_template(messages, tools)
        if request.tools and not all(t.name in rendered for t in request.tools):
            # The template ignores tools (SmolLM2's does): describe them in the system message instead.
            rendered = self._render_template(with_tools_in_system(messages, request.tools), None)
        return rendered

    def _render_template(
        self, messages: Sequence[Message], tools: list[dict[Any, Any] | Callable[..., Any]] | None
    ) -> str:
        rendered = self.tokenizer.apply_chat_template(
            template_messages(messages), tools=tools, add_generation_prompt=True, tokenize=False
        )
        assert isinstance(rendered, str)  # tokenize=False renders text
        return rendered

    def encode_text(self, text: str) -> list[int]:
        """Ids of a prompt text, with the tokenizer's special tokens (e.g. <bos>) unless the text already
        starts with them (a rendered chat template does). Generate, score and step all encode prompts this
        way."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, without special tokens."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence decodes to one text
        return text

    def _encode_prompt(self, request: Request) -> list[int]:
        ids = self.encode_text(self.format_prompt(request))
        window = self.context_window
        if window is not None and len(ids) >= window:
            raise ContextWindowError(self.name, len(ids), window)
        return ids

    def stop_strings(self, request: Request) -> list[str]:
        return request.params.stop + ([] if self.uses_chat_template else PLAIN_STOP)

    # generate
    # ---------------------------------------------------------------------------------------------------
    def generate(self, request: Request) -> Generation:
        start = time.perf_counter()
        run = GenerationRun(self, request)
        self._batcher.submit(run).result()
        return run.generation(time.perf_counter() - start)

    async def agenerate(self, request: Request) -> Generation:
        """Queued with other requests to this model and generated in a micro-batch; cancelling the caller
        ends this row's generation at the next token."""
        start = time.perf_counter()
        run = GenerationRun(self, request)
        try:
            await asyncio.wrap_future(self._batcher.submit(run))
        except asyncio.CancelledError:
            run.cancelled.set()
            raise
        return run.generation(time.perf_counter() - start)

    def stream(self, request: Request) -> Iterator[Delta]:
        start = time.perf_counter()
        tokens: queue.Queue[Any] = queue.Queue()
        run = GenerationRun(self, request, sink=tokens)
        self._batcher.submit(run)
        buffer_for_tools = bool(request.tools)
        try:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if item and not buffer_for_tools:
                    yield Delta(text=item, member=self.name)
        finally:
            run.cancelled.set()
        generation = run.generation(time.perf_counter() - start)
        if buffer_for_tools and (generation.text or generation.tool_calls):
            yield Delta(
                text=generation.text,
                tool_call_chunks=tool_calls_to_chunks(generation.tool_calls),
                member=self.name,
            )
        yield Delta(
            member=self.name, final=True, finish_reason=generation.finish_reason, usage=generation.usage
        )

    # score
    # ------------------------------------------------------------------------------------------------------
    def score(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """Sum and mean log-probability of each continuation after its prompt (raw text), right-padded
        batches."""
        results: list[ContinuationScore] = []
        for start in range(0, len(pairs), self.score_batch_size):
            results.extend(self._score_batch(pairs[start : start + self.score_batch_size]))
        return results

    def _score_batch(self, pairs: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        tok = self.tokenizer
        rows: list[tuple[list[int], int]] = []
        for prompt, continuation in pairs:
            context = (self.encode_text(prompt) if prompt else []) or [self._bos_id()]
            target = tok(continuation, add_special_tokens=False)["input_ids"]
            rows.append((context + target, len(context)))
        width = max(len(ids) for ids, _ in rows)
        window = self.context_window
        if window is not None and width > window:
            raise ContextWindowError(self.name, width, window)
        pad = self._pad_id()
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for i, ((ids, n_context), (_, continuation)) in enumerate(zip(rows, pairs, strict=True)):
            targets = torch.tensor(ids[n_context:], device=logprobs.device)
            predicted = logprobs[i, n_context - 1 : len(ids) - 1].gather(-1, targets[:, None]).squeeze(-1)
            out.append(
                ContinuationScore(
                    sum_logprob=float(predicted.sum()), n_tokens=len(targets), n_chars=len(continuation)
                )
            )
        return out

    def score_shared(
        self, groups: Sequence[tuple[str, Sequence[str]]], *, with_prompt: bool = False
    ) -> list[tuple[ContinuationScore | None, list[ContinuationScore]]]:
        """Score several continuations of each prompt, running each prompt once: the prompts go through the
        model in one left-padded batch, their KV cache is repeated for each continuation, and only the
        continuations' tokens run after it. Same numbers as `score` on every (prompt, continuation) pair.
        Returns per group the prompt's own score (with `with_prompt`; its first token is not scored) and the
        continuations' scores."""
        tok = self.tokenizer
        prompts = [(self.encode_text(p) if p else []) or [self._bos_id()] for p, _ in groups]
        targets = [[tok(c, add_special_tokens=False)["input_ids"] for c in conts] for _, conts in groups]
        longest = max(
            len(p) + max((len(t) for t in ts), default=0) for p, ts in zip(prompts, targets, strict=True)
        )
        if self.context_window is not None and longest > self.context_window:
            raise ContextWindowError(self.name, longest, self.context_window)
        ids, mask = _left_padded(prompts, self._pad_id(), self.device)
        cache = DynamicCache(config=self.model.config)
        rows = [g for g, ts in enumerate(targets) for _ in ts]
        flat = [t for ts in targets for t in ts]
        cont_ids, cont_mask = _right_padded(flat, self._pad_id(), self.device)
        index = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                **cache_argument(self.model, cache),
                use_cache=True,
                logits_to_keep=0 if with_prompt else 1,
            )
            logits = out.logits.float()
            prompt_sums = (
                (_token_logprobs(logits[:, :-1], ids[:, 1:]) * mask[:, 1:]).sum(-1).tolist()
                if with_prompt
                else [0.0] * len(prompts)
            )
            cache.batch_select_indices(index)
            out = self.model(
                input_ids=cont_ids,
                attention_mask=torch.cat([mask[index], cont_mask], dim=1),
                position_ids=mask.sum(-1)[index][:, None]
                + torch.arange(cont_ids.shape[1], device=self.device),
                **cache_argument(self.model, cache),
                use_cache=True,
            )
            # A continuation's first token is predicted at the prompt's last position, the rest at its own.
            predicting = torch.cat([logits[index, -1:], out.logits[:, :-1].float()], dim=1)
            sums = (_token_logprobs(predicting, cont_ids) * cont_mask).sum(-1).tolist()
        results: list[tuple[ContinuationScore | None, list[ContinuationScore]]] = []
        position = 0
        for g, ((prompt, conts), ts) in enumerate(zip(groups, targets, strict=True)):
            scored = [
                ContinuationScore(sum_logprob=sums[position + k], n_tokens=len(t), n_chars=len(c))
                for k, (t, c) in enumerate(zip(ts, conts, strict=True))
            ]
            position += len(ts)
            own = ContinuationScore(
                sum_logprob=prompt_sums[g], n_tokens=len(prompts[g]) - 1, n_chars=len(prompt)
            )
            results.append((own if with_prompt else None, scored))
        return results

    # step
    # -------------------------------------------------------------------------------------------------------
    def step_session(self, prompts: Sequence[str]) -> HFStepSession:
        """Next-token log-probs for each prompt text (encoded as `encode_text` does), with a KV cache."""
        return HFStepSession(self, [self.encode_text(p) for p in prompts])

    def _bos_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return candidate
        return 0

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self._bos_id()

    def eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])


class HFStepSession(StepSession):
    """Rows of token ids with one `DynamicCache`. Rows advance by different numbers of ids: shorter rows are
    left-padded inside the new chunk and masked, with positions taken from the attention mask."""

    def __init__(self, member: HFMember, prompts: Sequence[list[int]]):
        self.member = member
        self.model = member.model
        self._rows = [list(p) for p in prompts]
        window = member.context_window
        longest = max(len(p) for p in self._rows)
        if window is not None and longest >= window:
            raise ContextWindowError(member.name, longest, window)
        self.cache = DynamicCache(config=self.model.config)
        self.mask = torch.zeros((len(self._rows), 0), dtype=torch.long, device=member.device)
        self._logprobs = torch.empty(0)
        self._forward(self._rows)

    @property
    def vocab_size(self) -> int:
        return int(self._logprobs.shape[-1])

    def logprobs(self) -> torch.Tensor:
        return self._logprobs

    def token_ids(self, row: int) -> list[int]:
        return list(self._rows[row])

    def advance(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(token_ids) != len(self._rows):
            raise ValueError(
                f"advance needs one list of ids per row ({len(self._rows)}), got {len(token_ids)}"
            )
        for row, ids in zip(self._rows, token_ids, strict=True):
            row.extend(ids)
        if any(token_ids):
            self._forward(token_ids)
        return self._logprobs

    def _forward(self, chunks: Sequence[Sequence[int]]) -> None:
        width = max(len(c) for c in chunks)
        pad = self.member._pad_id()
        ids = torch.full((len(chunks), width), pad, dtype=torch.long)
        new_mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, chunk in enumerate(chunks):
            if chunk:
                ids[i, width - len(chunk) :] = torch.tensor(list(chunk))
                new_mask[i, width - len(chunk) :] = 1
        device = self.member.device
        self.mask = torch.cat([self.mask, new_mask.to(device)], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=self.mask,
                position_ids=positions,
                **cache_argument(self.model, self.cache),
                use_cache=True,
                logits_to_keep=1,
            )
        fresh = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        if self._logprobs.numel():
            moved = torch.tensor([bool(c) for c in chunks], device=fresh.device)[:, None]
            fresh = torch.where(moved, fresh, self._logprobs)
        self._logprobs = fresh

    def close(self) -> None:
        self.cache = DynamicCache(config=self.model.config)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-tensor progress bar for the fast safetensors load (the GGUF conversion keeps
    it)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _left_padded(
    rows: Sequence[list[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _right_padded(
    rows: Sequence[list[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] at each position, without materialising the whole log-softmax."""
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
