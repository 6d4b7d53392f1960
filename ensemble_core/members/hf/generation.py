"""Text generation for a local model: one `GenerationRun` per request, served by a `MicroBatcher` that runs
the requests waiting for the same model together in one batched `model.generate`, each row with its own stop
strings, token budget, stream and cancellation. Requests never share a KV cache row."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ensemble_core.cpu_time import cpu_clock
from ensemble_core.members.hf.constraints import Constraint, RowConstraints
from ensemble_core.members.hf.model import LoadedModel
from ensemble_core.members.hf.tensors import padded
from ensemble_core.members.text_stream import TextAssembler
from ensemble_core.members.tool_parsing import parse_answer
from ensemble_core.types import Generation, Request, TokenLogprob, Usage


class GenerationRun:
    """One request's generation: its prompt ids, stop strings, streamed text, token log-probs and outcome.
    `constraint` is the grammar its answer must keep to (a tool call, a JSON schema) or None; `prompt_format`
    names the format for the trace."""

    def __init__(
        self,
        lm: LoadedModel,
        request: Request,
        prompt_ids: list[int],
        stops: list[str],
        prompt_format: str,
        constraint: Constraint | None = None,
        sink: queue.Queue[Any] | None = None,
    ):
        self.lm = lm
        self.request = request
        self.prompt_ids = prompt_ids
        self.constraint = constraint
        self.prompt_format = prompt_format
        window = lm.context_window or (len(prompt_ids) + request.params.max_tokens)
        self.max_new_tokens = min(request.params.max_tokens, window - len(prompt_ids))
        self.assembler = TextAssembler(lm.decode, stops, request.prefill)
        self.sink = sink
        self.cpu_s = 0.0
        self.new_ids: list[int] = []
        self.logprobs: list[float] = []
        self.cancelled = threading.Event()
        self.hit_eos = False
        self.future: Future[None] = Future()

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Runs with equal keys can share one `generate` call; a seeded sampled run is given a batch of its
        own."""
        params = self.request.params
        if params.greedy:
            return ("greedy",)
        return ("sample", params.temperature, params.top_p, params.seed if params.seed is None else id(self))

    @property
    def done(self) -> bool:
        return (
            self.assembler.stopped
            or self.hit_eos
            or self.cancelled.is_set()
            or self.future.cancelled()
            or len(self.new_ids) >= self.max_new_tokens
        )

    def accept(self, token: int, eos: set[int]) -> None:
        """One generated token for this row: the end of the answer, or more text for the stream."""
        if token in eos:
            self.hit_eos = True
            return
        self.new_ids.append(token)
        text = self.assembler.add(token)
        if text and self.sink is not None:
            self.sink.put(text)

    def complete(self, error: BaseException | None = None) -> None:
        """Resolve the caller's future (unless the caller cancelled it) and end the stream."""
        if error is None:
            tail = self.assembler.finish()
            if tail and self.sink is not None:
                self.sink.put(tail)
            if not self.future.done():
                self.future.set_result(None)
        else:
            if not self.future.done():
                self.future.set_exception(error)
            if self.sink is not None:
                self.sink.put(error)
        if self.sink is not None:
            self.sink.put(None)

    def generation(self, latency_s: float) -> Generation:
        cut = not (self.assembler.stopped or self.hit_eos) and len(self.new_ids) >= self.max_new_tokens
        text, tool_calls, invalid = parse_answer(self.assembler.text, self.request, cut=cut)
        finish = "tool_calls" if tool_calls else "length" if cut else "stop"
        return Generation(
            member=self.lm.name,
            text=text,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            logprobs=[
                TokenLogprob(token=self.lm.decode([i]), logprob=lp)
                for i, lp in zip(self.new_ids, self.logprobs, strict=True)
            ],
            usage=Usage(input_tokens=len(self.prompt_ids), output_tokens=len(self.new_ids)),
            latency_s=latency_s,
            cpu_s=self.cpu_s,
            finish_reason=finish,
            prompt_format=self.prompt_format,
        )


class MicroBatcher:
    """A worker thread per model: each round takes every waiting run that can share a batch (up to
    `max_batch`) and generates them together; runs that arrive meanwhile form the next round."""

    def __init__(self, name: str, loaded: Callable[[], LoadedModel], max_batch: int = 8):
        self.name = name
        self.loaded = loaded
        self.max_batch = max_batch
        self._queue: queue.Queue[GenerationRun] = queue.Queue()
        self._held: collections.deque[GenerationRun] = collections.deque()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batch_sizes: list[int] = []

    def submit(self, run: GenerationRun) -> Future[None]:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"generate-{self.name}", daemon=True)
                self._thread.start()
        self._queue.put(run)
        return run.future

    def _next_batch(self) -> list[GenerationRun]:
        first = self._held.popleft() if self._held else self._queue.get()
        batch = [first]
        waiting = list(self._held)
        self._held.clear()
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for run in waiting:
            if run.batch_key == first.batch_key and len(batch) < self.max_batch:
                batch.append(run)
            else:
                self._held.append(run)
        return batch

    def _serve(self) -> None:
        while True:
            batch = [run for run in self._next_batch() if not _skip_cancelled(run)]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                self._generate(batch)
            except BaseException as err:  # a failure fails this batch's requests, never the worker
                for run in batch:
                    run.complete(err)
                continue
            for run in batch:
                run.complete()

    def _generate(self, runs: list[GenerationRun]) -> None:
        lm = self.loaded()
        started = cpu_clock()
        params = runs[0].request.params
        pad = lm.pad_id()
        # left padding: every row's next token is at the same column
        input_ids, mask = padded([run.prompt_ids for run in runs], pad, lm.device, side="left")
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(run.max_new_tokens for run in runs),
            "do_sample": not params.greedy,
            "eos_token_id": lm.eos_ids(),
            "pad_token_id": pad,
            "return_dict_in_generate": True,
            "output_logits": True,
            "streamer": _RowStreamer(runs, set(lm.eos_ids())),
            "stopping_criteria": StoppingCriteriaList([_RowsDone(runs)]),
        }
        if any(run.constraint is not None for run in runs):
            kwargs["logits_processor"] = LogitsProcessorList(
                [
                    RowConstraints(
                        [run.constraint for run in runs],
                        tokens=lambda row: runs[row].new_ids,
                        done=lambda row: runs[row].done,
                    )
                ]
            )
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        with torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = lm.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
            longest = max(len(run.new_ids) for run in runs)
            for step, logits in enumerate(out.logits[:longest]):
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                for row, run in enumerate(runs):
                    if step < len(run.new_ids):
                        run.logprobs.append(float(logprobs[row, run.new_ids[step]]))
        spent = cpu_clock() - started
        tokens = sum(len(run.prompt_ids) + len(run.new_ids) for run in runs)
        for run in runs:  # a batch's CPU time, shared by the tokens each row read and wrote
            run.cpu_s = spent * (len(run.prompt_ids) + len(run.new_ids)) / max(tokens, 1)


def _skip_cancelled(run: GenerationRun) -> bool:
    """A run whose caller went away before its batch started is not generated at all."""
    if run.future.cancelled():
        run.cancelled.set()
    if run.cancelled.is_set():
        run.complete()
        return True
    return False


class _RowStreamer(BaseStreamer):
    """Hands each row's new token to its run; rows that are done ignore the padding that follows."""

    def __init__(self, runs: list[GenerationRun], eos: set[int]):
        self.runs = runs
        self.eos = eos
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        tokens = value.reshape(-1).tolist()
        for run, token in zip(self.runs, tokens, strict=True):
            if not run.done:
                run.accept(int(token), self.eos)

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Per row: done at a stop string, at its own token budget, or when its caller has gone away."""

    def __init__(self, runs: list[GenerationRun]):
        self.runs = runs

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = torch.tensor([run.done for run in self.runs], dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, done)
