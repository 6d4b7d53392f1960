"""Evaluation: data loaders, choice scoring, metrics, the eval loop with its resume cache, reports and
benchmarks. `llm-ensemble eval` and `llm-ensemble bench` are the command-line faces of this package."""

from ensemble_core.eval.choice_ensemble import ChoiceEnsemble
from ensemble_core.eval.choice_scoring import ChoiceScores, score_items
from ensemble_core.eval.datasets import Dataset, data_dir, dataset_names, load_dataset
from ensemble_core.eval.items import AnswerItem, ChoiceItem
from ensemble_core.eval.metrics import compare, wilson_interval
from ensemble_core.eval.runner import Evaluation, ItemResult
from ensemble_core.eval.specs import parse_specs

__all__ = [
    "AnswerItem",
    "ChoiceEnsemble",
    "ChoiceItem",
    "ChoiceScores",
    "Dataset",
    "Evaluation",
    "ItemResult",
    "compare",
    "data_dir",
    "dataset_names",
    "load_dataset",
    "parse_specs",
    "score_items",
    "wilson_interval",
]
