"""matplotlib for the reports' plots: checked before a long run starts, so a missing extra is said at once
rather than after the scoring."""

from __future__ import annotations

from typing import Any

from ensemble_core.errors import ConfigError

_MISSING = (
    "the reports' plots need matplotlib, which is not installed: pip install 'llm-ensemble[eval]' "
    "(or scripts/setup defaults,eval)"
)


def require_matplotlib() -> None:
    """Raise a ConfigError naming the extra to install when matplotlib is missing."""
    pyplot()


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError as err:
        raise ConfigError(_MISSING) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
