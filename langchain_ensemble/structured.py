"""`with_structured_output` for `EnsembleChatModel`: the answer constrained to the schema (local members
decode under its grammar, served ones under their server's `response_format` or forced tool call) and parsed
into the caller's pydantic class, TypedDict or JSON schema; an answer that does not parse is an
`OutputParserException` (in `parsing_error` with `include_raw=True`), never a silent None."""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from ensemble_core.errors import ConfigError

Method = Literal["function_calling", "json_mode", "json_schema"]
METHODS = ("function_calling", "json_mode", "json_schema")


def structured_runnable(
    model: BaseChatModel, schema: Any, method: str, include_raw: bool, strict: bool | None
) -> Runnable[LanguageModelInput, Any]:
    """`model` asked for `schema` by `method`, its answer parsed (see the module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"with_structured_output(method={method!r}) is not known; use one of: {METHODS}")
    if schema is None and method != "json_mode":
        raise ConfigError(
            f"with_structured_output(method={method!r}) needs a schema (only json_mode goes without)"
        )
    fmt = {"kwargs": {"method": method}, "schema": schema}
    llm: Runnable[LanguageModelInput, BaseMessage]
    if method == "function_calling":
        tool = convert_to_openai_tool(schema, strict=strict)
        name = tool["function"]["name"]
        llm = model.bind_tools([tool], tool_choice=name, ls_structured_output_format=fmt)
        read: Callable[[BaseMessage], Any] = _tool_arguments
    else:
        llm = model.bind(
            response_format=_response_format(schema, method, strict), ls_structured_output_format=fmt
        )
        read = _json_content
    parser = RunnableLambda(lambda message: _validated(schema, read(message)), name="parse_structured_output")
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _response_format(schema: Any, method: str, strict: bool | None) -> dict[str, Any]:
    if method == "json_mode" or schema is None:
        return {"type": "json_object"}
    json_schema = convert_to_json_schema(schema)
    name = json_schema.get("title") or "answer"
    spec: dict[str, Any] = {"name": _safe_name(name), "schema": json_schema}
    if strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return cleaned or "answer"


def _tool_arguments(message: BaseMessage) -> Any:
    if isinstance(message, AIMessage) and message.tool_calls:
        return message.tool_calls[0]["args"]
    invalid = getattr(message, "invalid_tool_calls", None) or []
    why = "; ".join(str(c.get("error")) for c in invalid) or f"it answered {message.text[:120]!r}"
    raise OutputParserException(f"the ensemble did not make the forced call to the schema's tool: {why}")


def _json_content(message: BaseMessage) -> Any:
    text = message.text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise OutputParserException(
            f"the answer is not JSON ({err}): {message.text[:120]!r}", llm_output=message.text
        ) from None


def _validated(schema: Any, value: Any) -> Any:
    """A pydantic class validates (v2 or v1); a TypedDict or JSON schema gives the parsed JSON as it is."""
    if not (isinstance(schema, type) and is_basemodel_subclass(schema)):
        return value
    try:
        if hasattr(schema, "model_validate"):
            return schema.model_validate(value)
        return schema.parse_obj(value)  # pydantic.v1 models
    except Exception as err:  # pydantic's ValidationError (v1 or v2)
        raise OutputParserException(f"the answer does not fit {schema.__name__}: {err}") from None
