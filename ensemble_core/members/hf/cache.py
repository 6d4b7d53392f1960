"""How a transformers model takes its KV cache: `cache=` since transformers 5.x deprecated `past_key_values=`
(removed in 5.40), `past_key_values=` in the older releases this package still supports; and how a cache
takes back its last positions (rejected drafts of speculative decoding)."""

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


def can_drop_last(cache: Any) -> bool:
    """Whether `drop_last` puts `cache` back exactly as it was: every layer keeps all its positions (no
    sliding window, no linear attention)."""
    return bool(getattr(cache, "is_croppable", True)) and not any(getattr(cache, "is_sliding", []) or [])


def drop_last(cache: Any, n: int) -> None:
    """Remove the last `n` positions from every layer. `crop(-n)` means exactly that in transformers 5 (the
    number of tokens to remove) and in earlier releases (a negative length counts from the end)."""
    if n > 0:
        cache.crop(-n)
