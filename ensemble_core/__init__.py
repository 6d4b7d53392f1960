"""llm-ensemble's engine: several LLMs that answer as one. Imports neither LangChain nor LlamaIndex."""

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import (
    AllMembersFailedError,
    CapabilityError,
    ConfigError,
    ContextWindowError,
    EmptyMessagesError,
    EnsembleError,
    MemberError,
    ModelNotFoundError,
    UnknownStrategyError,
)
from ensemble_core.members.base import Capability, Member, Price
from ensemble_core.types import (
    ContinuationScore,
    Delta,
    Generation,
    MemberCall,
    Message,
    Params,
    Request,
    Result,
    ToolCall,
    ToolCallChunk,
    ToolSpec,
    Trace,
    Usage,
)

__all__ = [
    "AllMembersFailedError",
    "Capability",
    "CapabilityError",
    "ConfigError",
    "ContextWindowError",
    "ContinuationScore",
    "Delta",
    "EmptyMessagesError",
    "Ensemble",
    "EnsembleError",
    "Generation",
    "Member",
    "MemberCall",
    "MemberError",
    "Message",
    "ModelNotFoundError",
    "Params",
    "Price",
    "Request",
    "Result",
    "ToolCall",
    "ToolCallChunk",
    "ToolSpec",
    "Trace",
    "UnknownStrategyError",
    "Usage",
]
