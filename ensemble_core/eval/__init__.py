"""Evaluation: data loaders, fixed splits, choice scoring, metrics, the eval loop with its resume cache,
tuning, reports and benchmarks. `llm-ensemble eval`, `tune` and `bench` are the command-line faces of this
package. Names import lazily (choice scoring pulls in torch), so the CLI starts fast."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "AnswerItem": "ensemble_core.eval.items",
    "ChoiceEnsemble": "ensemble_core.eval.choice_ensemble",
    "ChoiceItem": "ensemble_core.eval.items",
    "ChoiceScores": "ensemble_core.eval.choice_scoring",
    "Dataset": "ensemble_core.eval.datasets",
    "Evaluation": "ensemble_core.eval.runner",
    "ItemResult": "ensemble_core.eval.runner",
    "Split": "ensemble_core.eval.splits",
    "compare": "ensemble_core.eval.metrics",
    "data_dir": "ensemble_core.eval.datasets",
    "dataset_names": "ensemble_core.eval.datasets",
    "load_dataset": "ensemble_core.eval.datasets",
    "parse_specs": "ensemble_core.eval.specs",
    "score_items": "ensemble_core.eval.choice_scoring",
    "wilson_interval": "ensemble_core.eval.metrics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ensemble_core.eval' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
