"""Fixed dev/test splits of a data set: anything fitted (weights, calibration, thresholds, routers) sees dev
items only, and reported figures come from the disjoint test items.

Membership is decided per item by a seeded hash of its id, so a split does not depend on file order, and the
same seed always gives the same split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ensemble_core.eval.items import Item

SplitPart = Literal["dev", "test", "both"]
ItemT = TypeVar("ItemT", bound=Item)


class Split(BaseModel):
    """`dev_size` dev items and `test_size` test items (in proportion when the set has fewer); `part` picks
    dev, test, or both (to score every item once and fit and report from the one cache)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: SplitPart
    seed: int = Field(default=0, description="the split's seed (not the sampling seed)")
    dev_size: int = Field(default=300, ge=1)
    test_size: int = Field(default=500, ge=1)

    def sizes(self, n: int) -> tuple[int, int]:
        """(dev, test) item counts for a set of `n` items."""
        if n >= self.dev_size + self.test_size:
            return self.dev_size, self.test_size
        dev = round(n * self.dev_size / (self.dev_size + self.test_size))
        return dev, n - dev

    def ids(self, items: Sequence[Item]) -> tuple[set[str], set[str]]:
        """The ids of the dev items and of the test items."""
        ranked = sorted((self._rank(item.id), item.id) for item in items)
        dev_n, test_n = self.sizes(len(items))
        dev = {i for _, i in ranked[:dev_n]}
        test = {i for _, i in ranked[dev_n : dev_n + test_n]}
        return dev, test

    def select(self, items: Sequence[ItemT]) -> list[ItemT]:
        """The items of `part`, in file order."""
        dev, test = self.ids(items)
        keep = {"dev": dev, "test": test, "both": dev | test}[self.part]
        return [item for item in items if item.id in keep]

    def describe(self, n: int) -> str:
        dev, test = self.sizes(n)
        return f"{self.part} of a fixed split (seed {self.seed}): dev {dev} items, test {test} items of {n}"

    def _rank(self, item_id: str) -> str:
        return hashlib.sha256(f"{self.seed}:{item_id}".encode()).hexdigest()
