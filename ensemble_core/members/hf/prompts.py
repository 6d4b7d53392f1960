"""A local model's prompt text for a request: its chat template (with the tools, when the template renders
them) or a plain Question/Answer format for base models, and the answer's prefill after it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from ensemble_core.members.hf.formats import PLAIN_STOP, plain_prompt, template_messages, with_tools_in_system
from ensemble_core.types import Message, Request

PromptFormat = Literal["auto", "chat", "plain"]


def uses_chat_template(tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat) -> bool:
    if prompt_format == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return prompt_format == "chat"


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat, request: Request) -> str:
    """The chat template (or plain format) of the request, followed by `request.prefill`: a plain prompt ends
    with "Answer:", so the prefill follows it after one space, as the model would write it."""
    chat = uses_chat_template(tokenizer, prompt_format)
    messages = _format_messages(tokenizer, chat, request)
    if not request.prefill:
        return messages
    if chat:
        return messages + request.prefill
    return f"{messages} {request.prefill.lstrip()}"


def stop_strings(
    tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat, request: Request
) -> list[str]:
    """The request's stop strings, and the turn markers a plain Question/Answer prompt needs on top."""
    return request.params.stop + ([] if uses_chat_template(tokenizer, prompt_format) else PLAIN_STOP)


def _format_messages(tokenizer: PreTrainedTokenizerBase, chat: bool, request: Request) -> str:
    """The messages in the chat template or plain format, with the tools the model may call (none with
    `tool_choice` "none": a model shown tools it may not call answers with calls written as prose)."""
    messages = request.messages
    offered = request.tools if request.tool_choice != "none" else []
    if not chat:
        if offered:
            messages = with_tools_in_system(messages, offered)
        return plain_prompt(messages)
    tools: list[dict[Any, Any] | Callable[..., Any]] | None = [t.as_openai() for t in offered] or None
    rendered = _render_template(tokenizer, messages, tools)
    if offered and not all(t.name in rendered for t in offered):
        # The template ignores tools (SmolLM2's does): describe them in the system message instead.
        rendered = _render_template(tokenizer, with_tools_in_system(messages, offered), None)
    return rendered


def _render_template(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    tools: list[dict[Any, Any] | Callable[..., Any]] | None,
) -> str:
    rendered = tokenizer.apply_chat_template(
        template_messages(messages), tools=tools, add_generation_prompt=True, tokenize=False
    )
    assert isinstance(rendered, str)  # tokenize=False renders text
    return rendered
