"""How a transformers model takes its KV cache: `cache=` since transformers 5.x deprecated `past_key_values=`
(removed in 5.40), `past_key_values=` in the older releases this package still supports."""

from __future__ import annotations

import inspect
from typing import Any

_KEYWORDS: dict[type, str] = {}


def cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands `cache` to `model`'s forward in the installed transformers."""
    model_class = type(model)
    keyword = _KEYWORDS.get(model_class)
    if keyword is None:
        parameters = inspect.signature(model_class.forward).parameters
        keyword = _KEYWORDS[model_class] = "cache" if "cache" in parameters else "past_key_values"
    return {keyword: cache}
