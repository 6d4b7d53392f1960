"""Where a local model's weights come from: a safetensors folder as is, or a GGUF file de-quantised once into
a safetensors folder under the user cache (`LLM_ENSEMBLE_CACHE`, default `~/.cache/llm-ensemble`).

Pickle weights (`*.bin`, `*.pt`) are refused: loading them can run arbitrary code."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ensemble_core.errors import ModelNotFoundError

CACHE_ENV = "LLM_ENSEMBLE_CACHE"
_MANIFEST = "llm-ensemble.json"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-ensemble").expanduser()


def locate(path: str | Path, gguf_file: str | None) -> tuple[Path, str | None]:
    """Validate a model location; returns (folder, gguf file name or None). Names the problem and the fix."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf" and gguf_file is None:
        return path.parent, path.name
    if not path.exists():
        raise ModelNotFoundError(
            f"model path {str(path)!r} does not exist: pass a folder with config.json and *.safetensors, "
            "or a GGUF file (or its folder and gguf_file=...)"
        )
    if not path.is_dir():
        raise ModelNotFoundError(f"model path {str(path)!r} is a file but not a .gguf file: pass its folder")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.gguf"))) or "none"
            raise ModelNotFoundError(
                f"no GGUF file {gguf_file!r} in {str(path)!r} (GGUF files there: {found})"
            )
        return path, gguf_file
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found pickle weights {', '.join(pickles)}: convert them to safetensors)" if pickles else ""
        raise ModelNotFoundError(
            f"no *.safetensors weights in {str(path)!r}{hint}; pass gguf_file=... for a GGUF model"
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"no config.json in {str(path)!r}: it is not a transformers model folder")
    return path, None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(folder: Path, gguf_file: str, dtype: str = "float32") -> Path:
    """The cache folder for a GGUF file de-quantised to `dtype`, named by the file's identity (path, size,
    modification time), so a changed file converts again."""
    source = folder / gguf_file
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_root() / f"{Path(gguf_file).stem}-{key}"


def is_converted(target: Path) -> bool:
    """A complete conversion whose files still have the hashes recorded when it was written (see `verified`),
    so a truncated or tampered cache is converted again rather than loaded."""
    manifest_path = target / _MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        recorded: dict[str, str] = json.loads(manifest_path.read_text()).get("files", {})
    except json.JSONDecodeError:
        return False
    if not any(name.endswith(".safetensors") for name in recorded):
        return False
    return all(verified(target / name, digest) for name, digest in recorded.items())


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def verified(path: Path, sha256: str, size: int | None = None) -> bool:
    """Whether `path` holds the content `sha256` (and `size` bytes, when given): hashed once, then trusted
    while its size and modification time match the stamp written when the hash was checked, so a warm start
    does not re-read gigabytes of weights while a truncated or rewritten file is still caught."""
    if not path.is_file():
        return False
    stat = path.stat()
    if size is not None and stat.st_size != size:
        return False
    stamp = _stamp(path)
    if stamp.is_file() and stamp.read_text().split() == [sha256, str(stat.st_size), str(stat.st_mtime_ns)]:
        return True
    if file_digest(path) != sha256:
        return False
    record_verified(path, sha256)
    return True


def record_verified(path: Path, sha256: str) -> None:
    """Stamp `path` as holding `sha256` at its current size and modification time."""
    stat = path.stat()
    _stamp(path).write_text(f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n")


def convert_gguf(folder: Path, gguf_file: str, dtype: str = "float32") -> Path:
    """De-quantise a GGUF file into a safetensors folder of `dtype` once (the dtype the model will run in,
    so loading it needs no cast); later calls return the cached folder.

    Written into a temporary folder and renamed into place under a file lock, so an interrupted conversion
    leaves no half cache and two processes never convert the same file at once.
    """
    target = converted_folder(folder, gguf_file, dtype)
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock"):  # another process may be converting it now
        if is_converted(target):
            return target
        return _convert(folder, gguf_file, target, dtype)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(folder: Path, gguf_file: str, target: Path, dtype: str) -> Path:
    """Load the GGUF with transformers (which de-quantises it) and save it as safetensors with a manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=getattr(torch, dtype))
    # The weights are already de-quantised floats; drop the GGUF marker that blocks save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]  # (an attribute torch's stubs do not know)
    model.config.__dict__.pop("quantization_config", None)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = folder / gguf_file
        files = {
            p.name: file_digest(p) for p in sorted(tmp.iterdir()) if p.suffix in (".safetensors", ".json")
        }
        manifest = {"source": str(source.resolve()), "source_sha256": file_digest(source), "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
