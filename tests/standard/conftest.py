"""Standard-suite classes list the standard tests a member truly cannot pass in `xfail_reasons` (name ->
why); those tests still run, marked xfail with the reason, and are never overridden. A class that checks only
some cases names them in `only`; the others are skipped there (they run in another class)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", item.name)
        only = getattr(cls, "only", None)
        if only is not None and name not in only:
            item.add_marker(pytest.mark.skip(reason=f"{cls.__name__} checks only {', '.join(only)}"))
            continue
        reason = getattr(cls, "xfail_reasons", {}).get(name)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
