"""The GGUF conversion cache: located by the source file, complete or absent, checked by hash before use."""

from __future__ import annotations

import json

import pytest

from ensemble_core.members import weights


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "models" / "m.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF-bytes")
    target = weights.converted_folder(source.parent, source.name)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"weights")
    (target / "config.json").write_text("{}")
    files = {n: weights.file_digest(target / n) for n in ("model.safetensors", "config.json")}
    (target / "llm-ensemble.json").write_text(json.dumps({"files": files}))
    return source, target


def test_cache_lives_under_the_env_folder_named_for_the_file(cache, tmp_path):
    source, target = cache
    assert target.parent == tmp_path / "cache" and target.name.startswith("m-")
    assert weights.is_converted(target)


def test_a_changed_source_file_gets_another_cache_folder(cache):
    source, target = cache
    source.write_bytes(b"GGUF-bytes, a newer release")
    assert weights.converted_folder(source.parent, source.name) != target


def test_a_tampered_or_truncated_cache_is_not_used(cache):
    _, target = cache
    (target / "model.safetensors").write_bytes(b"weightz")
    assert not weights.is_converted(target)


def test_a_cache_without_manifest_is_incomplete(cache):
    _, target = cache
    (target / "llm-ensemble.json").unlink()
    assert not weights.is_converted(target)
