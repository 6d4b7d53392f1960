"""Loading a local model: the device and dtype it runs in, its GGUF file de-quantised once into the cache,
and its weights loaded once per process however many members use them.

Weights load memory-mapped: transformers 5 reads safetensors through a mapping of the file and keeps each
parameter on it when no cast is needed, and a GGUF file is converted to the very dtype it runs in. A warm
start then costs page-cache reads, not a copy of the weights, and processes running the same model share
its pages (`benchmarks/warm_start.py` measures it; `test_hf_member` checks it)."""

from __future__ import annotations

import contextlib
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ensemble_core.members.hf.int8_linear import Quantization, quantize_linears
from ensemble_core.members.hf.packed_linear import pack_linears
from ensemble_core.members.weights import convert_gguf, converted_folder, is_converted
from ensemble_core.progress import reporting

_LOADED: dict[tuple[str, str, str, bool, str | None], tuple[Any, PreTrainedTokenizerBase]] = {}
_LOAD_LOCK = threading.Lock()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None: bfloat16 on CUDA, float32 on the CPU. "auto": bfloat16 on CUDA, and on a CPU whose oneDNN has
    bfloat16 kernels (AVX-512 or AMX: about 2.5x faster than float32 for a 1.5B model on two cores), else
    float32. Otherwise the dtype named."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if dtype == "auto" and _cpu_has_bf16_kernels() else torch.float32
    resolved = getattr(torch, dtype)
    assert isinstance(resolved, torch.dtype)
    return resolved


def _cpu_has_bf16_kernels() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_weights(
    folder: Path,
    gguf_file: str | None,
    device: torch.device,
    dtype: torch.dtype,
    *,
    trust_remote_code: bool,
    name: str,
    pack: bool = False,
    quantization: Quantization | None = None,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """(model, tokenizer) in eval mode on `device`: a GGUF file is converted to safetensors in `dtype` on
    first use; with `pack`, its linear layers are packed for oneDNN (`packed_linear`), with `quantization`
    "int8" quantised (`int8_linear`). Weights already loaded for the same folder, device, dtype, packing and
    quantization are shared."""
    with _LOAD_LOCK:
        if gguf_file:
            dtype_name = str(dtype).removeprefix("torch.")
            target = converted_folder(folder, gguf_file, dtype_name)
            if is_converted(target):
                folder = target
            else:
                with reporting(f"converting {gguf_file} to safetensors (once; cached in {target.parent})"):
                    folder = convert_gguf(folder, gguf_file, dtype_name)
        key = (str(folder.resolve()), str(device), str(dtype), pack, quantization)
        if key not in _LOADED:
            with reporting(f"loading {name} on {device}"), _quiet_progress_bars():
                tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
                model: Any = AutoModelForCausalLM.from_pretrained(
                    folder, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
                )
                model = model.to(device).eval()
                if pack:
                    pack_linears(model)
                if quantization == "int8":
                    quantize_linears(model)
                _LOADED[key] = (model, tokenizer)
        return _LOADED[key]


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' per-tensor progress bar for the fast safetensors load (the GGUF conversion keeps
    it)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def readable_folder(folder: Path, gguf_file: str | None, dtype: torch.dtype) -> Path | None:
    """The safetensors folder whose config and tokenizer files describe the model without loading it: the
    folder itself, or a GGUF file's converted folder once it exists (None before the conversion)."""
    if not gguf_file:
        return folder
    target = converted_folder(folder, gguf_file, str(dtype).removeprefix("torch."))
    return target if (target / "config.json").is_file() and (target / "tokenizer.json").is_file() else None


def load_tokenizer(
    folder: Path, gguf_file: str | None, dtype: torch.dtype, *, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (no weights): from its folder, or read from the GGUF file itself before
    the file is converted (transformers' GGUF tokenizer support). Never reaches the network."""
    readable = readable_folder(folder, gguf_file, dtype)
    with _quiet_progress_bars():
        if readable is not None:
            return AutoTokenizer.from_pretrained(readable, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code)


def context_length(folder: Path, gguf_file: str | None, dtype: torch.dtype) -> int | None:
    """The longest sequence the model was made for, read without loading it: `max_position_embeddings` of
    its config, or the GGUF file's `<architecture>.context_length`."""
    readable = readable_folder(folder, gguf_file, dtype)
    if readable is not None:
        config = json.loads((readable / "config.json").read_text())
        window = config.get("max_position_embeddings") or config.get("text_config", {}).get(
            "max_position_embeddings"
        )
        return int(window) if window else None
    assert gguf_file is not None  # a folder without a GGUF file is always readable
    window = gguf_context_length(folder / gguf_file)
    return int(window) if window is not None else None


_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


def gguf_context_length(path: Path) -> int | None:
    """`<architecture>.context_length` from a GGUF file's header, read key by key and stopped there (the
    tokenizer's vocabulary that follows is never parsed)."""
    with path.open("rb") as handle:
        magic, _version, _tensors, count = struct.unpack("<4sIQQ", handle.read(24))
        if magic != b"GGUF":
            return None
        arch = None
        for _ in range(count):
            key = _gguf_string(handle)
            value = _gguf_read(handle, struct.unpack("<I", handle.read(4))[0])
            if key == "general.architecture":
                arch = value
            elif arch is not None and key == f"{arch}.context_length":
                return int(value)
    return None


def _gguf_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="replace")


def _gguf_read(handle: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _gguf_string(handle)
    if kind == _ARRAY:
        inner, n = struct.unpack("<IQ", handle.read(12))
        if inner in _SCALARS:  # skipped whole
            handle.seek(n * struct.calcsize(_SCALARS[inner]), 1)
            return None
        for _ in range(n):
            _gguf_read(handle, inner)
        return None
    fmt = _SCALARS[kind]
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]
