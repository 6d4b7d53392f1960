from __future__ import annotations

import pytest

from tests.unit.tiny_models import tiny_llama


@pytest.fixture(scope="session", autouse=True)
def _alignment_cache_in_tmp(tmp_path_factory):
    """Unit tests cache vocabulary alignments in a folder of their own, not in the user cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("alignments")
        patch.setattr("ensemble_core.alignment_cache.alignments_root", lambda: folder)
        yield folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_member(tiny_model_dir):
    from ensemble_core.members.hf import HFMember

    return HFMember(tiny_model_dir, name="tiny")
