"""Fixed dev/test splits: disjoint, seeded, independent of file order, proportional for small sets."""

from __future__ import annotations

import pytest

from ensemble_core.eval.items import ChoiceItem
from ensemble_core.eval.splits import Split


def items(n: int) -> list[ChoiceItem]:
    return [ChoiceItem(id=f"q{i}", question="?", prompt="?", choices=["a", "b"], gold=0) for i in range(n)]


def test_dev_and_test_are_disjoint_of_the_asked_sizes_and_both_is_their_union():
    data = items(1000)
    dev = Split(part="dev").select(data)
    test = Split(part="test").select(data)
    assert len(dev) == 300 and len(test) == 500
    assert not {i.id for i in dev} & {i.id for i in test}
    assert {i.id for i in Split(part="both").select(data)} == {i.id for i in dev + test}


def test_the_split_depends_on_the_seed_and_ids_not_on_file_order():
    data = items(1000)
    forward = {i.id for i in Split(part="test").select(data)}
    assert forward == {i.id for i in Split(part="test").select(list(reversed(data)))}
    assert forward != {i.id for i in Split(part="test", seed=1).select(data)}


@pytest.mark.parametrize(("n", "dev", "test"), [(500, 188, 312), (800, 300, 500), (100, 38, 62)])
def test_a_small_set_is_split_in_proportion(n, dev, test):
    assert Split(part="dev").sizes(n) == (dev, test)
    assert len(Split(part="both").select(items(n))) == n
