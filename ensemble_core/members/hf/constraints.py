"""Grammar-constrained decoding for local models, with llguidance (the one module that imports it).

A request asks for a form: a forced tool call (`tool_choice` "required" or a tool's name), an optional one
(`tool_choice` "auto": free text, or a call that, once begun, must finish validly), JSON that matches a schema
or any JSON object (`response_format`). `request_grammar` writes that form as a Lark grammar in the model's
own tool-call format (Qwen2.5's and Hermes' `<tool_call>` / `</tool_call>` tags around one JSON line
`{"name": ..., "arguments": {...}}`, the tags as the tokenizer's own tokens where it has them). A `Constraint`
follows one answer through it and says which of the model's tokens keep the answer valid; `RowConstraints` is
the `LogitsProcessor` that masks each row of a batched `generate` by its own constraint (or none)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from ensemble_core.errors import RequestError
from ensemble_core.types import Request, ResponseFormat, ToolSpec

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
#: Compact JSON, as the models write it: no free whitespace (small models otherwise pad without end), and
#: schema keywords the grammar cannot enforce are ignored rather than refused.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


class GrammarError(RequestError):
    """A tool's parameters or a response format's schema that cannot be turned into a grammar."""


def forces_call(request: Request) -> bool:
    """Whether the request demands a tool call: tools, and `tool_choice` "required" or a tool's name."""
    return bool(request.tools) and request.tool_choice not in (None, "auto", "none")


def request_grammar(request: Request, tokens: frozenset[str] = frozenset()) -> str | None:
    """The Lark grammar of the answer the request asks for, or None when any text will do. `tokens` are the
    tool-call tags the tokenizer has as single tokens (written as those tokens, not spelled in bytes).

    With tools, free text is text that does not itself begin a call: no `<tool_call>` tag, and no bare or
    fenced JSON object to open it. A call written without its tags (bare or fenced JSON, the form small
    models fall into) is a call too, and must be a valid one. `tool_choice` "none" allows only free text."""
    answer = _format_rule(request.response_format)
    tools = request.tools
    if not tools:
        return None if answer is None else f"start: answer\nanswer: {answer}\n"
    text_rule = f"TEXT: /(?s:\\s*[^{{`\\s].*)/ & ~/(?s:.*{_regex_escape(CALL_OPEN)}.*)/"
    if request.tool_choice == "none":
        return f"start: answer\nanswer: {answer}\n" if answer is not None else f"start: TEXT\n{text_rule}\n"
    choice = request.tool_choice
    chosen = [t for t in tools if t.name == choice] or list(tools)
    rules = _call_rules(chosen, tokens)
    if forces_call(request):
        return f"start: block\n{rules}"
    prose = "answer" if answer is not None else "TEXT | TEXT? blocks"
    untagged = 'call | "```json\\n" call "\\n```"'
    lines = [f"start: {prose} | blocks | {untagged}", 'blocks: block ("\\n" block)*', rules]
    lines.append(f"answer: {answer}" if answer is not None else text_rule)
    return "\n".join(lines) + "\n"


def _call_rules(tools: Sequence[ToolSpec], tokens: frozenset[str]) -> str:
    open_, close = (_tag(t, tokens) for t in (CALL_OPEN, CALL_CLOSE))
    names = [f"call_{i}" for i in range(len(tools))]
    lines = [f'block: {open_} "\\n" call "\\n" {close}', f"call: {' | '.join(names)}"]
    lines += [f"{name}: %json {json.dumps(_call_schema(t))}" for name, t in zip(names, tools, strict=True)]
    return "\n".join(lines)


def _tag(tag: str, tokens: frozenset[str]) -> str:
    return tag if tag in tokens else json.dumps(tag)


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    """{"name": the tool's name, "arguments": its parameters}, in that order, nothing else."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": closed(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        "x-guidance": _JSON_OPTIONS,
    }


def _format_rule(response_format: ResponseFormat | None) -> str | None:
    if response_format is None or response_format.type == "text":
        return None
    schema = response_format.json_schema if response_format.json_schema is not None else {"type": "object"}
    return f"%json {json.dumps({**closed(schema), 'x-guidance': _JSON_OPTIONS})}"


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with `additionalProperties: false` on every object that lists its properties and says
    nothing about others (OpenAI's strict mode): a small model otherwise invents extra keys."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            value = closed(value) if key != "properties" else {k: _closed_any(v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [_closed_any(v) for v in value]
        out[key] = value
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _closed_any(value: Any) -> Any:
    return closed(value) if isinstance(value, dict) else value


def _regex_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in r"\/.^$*+?()[]{}|" else c for c in text)


# the tokenizer as llguidance sees it, built once per tokenizer ---------------------------------------------
_TOKENIZERS: dict[int, tuple[PreTrainedTokenizerBase, llguidance.LLTokenizer]] = {}
_LOCK = threading.Lock()


def grammar_tokenizer(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, eos_ids: Sequence[int]
) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face tokenizer (about a second to build for a 150k vocabulary), cached
    per tokenizer object; `vocab_size` is the width of the model's logits."""
    with _LOCK:
        entry = _TOKENIZERS.get(id(tokenizer))
        if entry is None or entry[0] is not tokenizer:
            built = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))  # type: ignore[arg-type]
            entry = _TOKENIZERS[id(tokenizer)] = (tokenizer, built)
        return entry[1]


def single_token_tags(tokenizer: PreTrainedTokenizerBase) -> frozenset[str]:
    """The tool-call tags this tokenizer has as added tokens of their own (Qwen2.5's, Hermes')."""
    added = tokenizer.get_added_vocab()
    return frozenset(tag for tag in (CALL_OPEN, CALL_CLOSE) if tag in added)


class Constraint:
    """One answer's place in its grammar: which next tokens keep it valid, advanced token by token."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, vocab_size: int):
        self.vocab_size = vocab_size
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(
                f"the tools' parameters or the response format's schema cannot be enforced: "
                f"{self.matcher.get_error().splitlines()[0]}; simplify the JSON schema"
            )

    def allowed(self) -> torch.Tensor:
        """A bool mask over the model's vocabulary of the tokens that may come next (only end-of-sequence
        once the answer is complete)."""
        packed = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        return torch.from_numpy(np.unpackbits(packed, bitorder="little").view(np.bool_)[: self.vocab_size])

    def advance(self, ids: Sequence[int]) -> bool:
        """Consume tokens the answer now has; False (and the constraint is broken) when they do not fit."""
        return not ids or self.matcher.consume_tokens(list(ids))

    def fits(self, ids: Sequence[int]) -> bool:
        """Whether these tokens could come next (nothing is consumed)."""
        return self.matcher.validate_tokens(list(ids)) == len(ids)

    @property
    def broken(self) -> bool:
        return self.matcher.is_error()

    @property
    def complete(self) -> bool:
        """The answer so far is a whole sentence of the grammar (it may end here)."""
        return self.matcher.is_accepting()


def constraint_for(
    tokenizer: PreTrainedTokenizerBase,
    vocab_size: int,
    eos_ids: Sequence[int],
    request: Request,
    prefill_ids: Sequence[int] = (),
) -> Constraint | None:
    """The constraint a request puts on one model's answer (None when any text will do), already advanced
    past the answer's prefill; None too when the prefill itself is off the grammar (a continuation written
    without it), so the member continues unconstrained rather than not at all."""
    grammar = request_grammar(request, single_token_tags(tokenizer))
    if grammar is None:
        return None
    constraint = Constraint(grammar_tokenizer(tokenizer, vocab_size, eos_ids), grammar, vocab_size)
    return constraint if constraint.advance(prefill_ids) else None


class RowConstraints(LogitsProcessor):
    """Each row of a batched `generate` masked by its own constraint (rows without one are left as they are).
    A row's constraint reads the row's new tokens from `tokens(row)` before each step; a row that is done
    (`done(row)`) is not masked."""

    def __init__(self, constraints: Sequence[Constraint | None], tokens: Any, done: Any):
        self.constraints = list(constraints)
        self.tokens = tokens
        self.done = done
        self.consumed = [0] * len(self.constraints)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, constraint in enumerate(self.constraints):
            if constraint is None or self.done(row) or constraint.broken:
                continue
            new = self.tokens(row)[self.consumed[row] :]
            self.consumed[row] += len(new)
            if not constraint.advance(new):
                continue
            allowed = constraint.allowed().to(scores.device)
            width = min(allowed.shape[0], scores.shape[-1])
            scores[row, :width].masked_fill_(~allowed[:width], float("-inf"))
            scores[row, width:] = float("-inf")
        return scores
