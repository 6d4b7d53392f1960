from __future__ import annotations

import pytest

from tests.unit.tiny_models import byte_tokenizer, tiny_llama

# merges that give the byte tokenizer tokens (" the", "ll") the plain one lacks
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "r"), ("Ġ", "a"), ("o", "n")]


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


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tiny_member):
    """Two tiny models sharing the byte tokenizer."""
    from ensemble_core.members.hf import HFMember

    other = HFMember(tiny_llama(tmp_path_factory.mktemp("tiny-b"), seed=1), name="tiny_b")
    return [tiny_member, other]


@pytest.fixture(scope="session")
def merged_member(tmp_path_factory):
    """A tiny model whose tokenizer differs from the byte tokenizer: it has tokens (" the", "ll") that the
    plain byte tokenizer lacks, and its special tokens sit at other ids."""
    from ensemble_core.members.hf import HFMember

    folder = tiny_llama(
        tmp_path_factory.mktemp("tiny-merged"), seed=2, tokenizer=byte_tokenizer(merges=MERGES)
    )
    return HFMember(folder, name="merged")


@pytest.fixture(scope="session")
def broken_stepper(tiny_model_dir):
    """A tiny member whose step sessions fail to open."""
    from ensemble_core.members.hf import HFMember

    class Broken(HFMember):
        def step_session(self, prompts):
            raise RuntimeError("no cache today")

    return Broken(tiny_model_dir, name="broken")
