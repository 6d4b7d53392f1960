from __future__ import annotations

import pytest

from tests.unit.tiny_models import tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_member(tiny_model_dir):
    from ensemble_core.members.hf import HFMember

    return HFMember(tiny_model_dir, name="tiny")
