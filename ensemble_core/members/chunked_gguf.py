"""GGUF files that ship split across several PyPI packages (each part module has `get_part_path()`): found
without importing anything else, concatenated once into the user cache, and checked by size and sha256 before
use, so a missing, truncated or altered part is refused with the packages to (re)install."""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.errors import ModelNotFoundError
from ensemble_core.members.weights import cache_root, exclusive, record_verified, verified


class ChunkedGGUF(BaseModel):
    """One GGUF file split into `parts` packages named `package.format(i)` (i = 1..parts) at `version`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file_name: str
    package: str = Field(description="distribution name with {} for the part number, e.g. 'pkg-part{}'")
    parts: int = Field(ge=1)
    version: str
    size: int = Field(gt=0, description="bytes of the assembled file")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    extra: str = Field(description="the llm-ensemble extra that installs the parts")

    @property
    def packages(self) -> list[str]:
        return [self.package.format(i) for i in range(1, self.parts + 1)]

    @property
    def install_hint(self) -> str:
        first, last = self.packages[0], self.packages[-1]
        return (
            f"pip install 'llm-ensemble[{self.extra}]' (the packages {first} … {last}, =={self.version}; "
            "reinstall them with --force-reinstall if they are damaged)"
        )

    @property
    def path(self) -> Path:
        """Where the assembled file lives: the user cache (`LLM_ENSEMBLE_CACHE`)."""
        return cache_root() / "gguf" / self.file_name

    def assemble(self) -> Path:
        """The assembled file, built from the parts on first use; checked by size and sha256 before use."""
        target = self.path
        if verified(target, self.sha256, size=self.size):
            return target
        parts = self._part_paths()
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(target.parent / f".{target.name}.lock"):
            if verified(target, self.sha256, size=self.size):
                return target
            self._concatenate(parts, target)
        return target

    def _part_paths(self) -> list[Path]:
        paths = []
        for package in self.packages:
            module_name = package.replace("-", "_")
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise ModelNotFoundError(
                    f"{self.file_name} needs the package {package}, which is not installed: "
                    f"{self.install_hint}"
                ) from err
            paths.append(Path(module.get_part_path()))
        return paths

    def _concatenate(self, parts: list[Path], target: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".assembling-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        while block := handle.read(1 << 22):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
            if size != self.size or digest.hexdigest() != self.sha256:
                raise ModelNotFoundError(
                    f"the parts of {self.file_name} assemble to {size:,} bytes with sha256 "
                    f"{digest.hexdigest()}, not the expected {self.size:,} bytes with sha256 {self.sha256}: "
                    f"a part is missing, truncated or altered; {self.install_hint}"
                )
            os.replace(tmp, target)
            record_verified(target, self.sha256)
        finally:
            tmp.unlink(missing_ok=True)
