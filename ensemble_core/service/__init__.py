"""`llm-ensemble serve`: the ensemble as an OpenAI-compatible HTTP service that any OpenAI client, or another
ensemble's `OpenAICompatMember`, uses as one model; guarded by API keys and limits, with every client mistake
found before a member is called."""

from ensemble_core.service.app import create_app
from ensemble_core.service.settings import API_KEY_ENV, ServiceSettings, TraceMode, api_keys_from

__all__ = ["API_KEY_ENV", "ServiceSettings", "TraceMode", "api_keys_from", "create_app"]
