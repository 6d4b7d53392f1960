"""`eval` end to end: 20 real items, the two small packaged members (configs/small-pair.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensemble_core.errors import ConfigError
from ensemble_core.eval.datasets import data_dir

try:
    data_dir()
    HAVE_DATA = True
except ConfigError:
    HAVE_DATA = False

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_DATA, reason="the shared data folder is absent"),
]


SMALL_PAIR = Path(__file__).parents[2] / "configs" / "small-pair.yaml"


def test_eval_arc_easy_20_items_both_members(tmp_path):
    from ensemble_core.cli import app

    out = tmp_path / "report"
    args = [
        "eval",
        "--data",
        "arc_easy",
        "--limit",
        "20",
        "--out",
        str(out),
        "--config",
        str(SMALL_PAIR),
        "--strategies",
        "single:smollm2,single:gemma3,choice-ensemble,choice-ensemble[weights=packllm-sim]",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {s["strategy"]: s for s in summary["strategies"]}
    assert set(rows) == {
        "single:smollm2",
        "single:gemma3",
        "choice-ensemble",
        "choice-ensemble[weights=packllm-sim]",
    }
    assert all(r["n"] == 20 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows.values())
    # Two 135M-270M models are better than chance (25%) on ARC-Easy when scored per choice.
    assert max(rows["single:smollm2"]["accuracy"], rows["single:gemma3"]["accuracy"]) > 0.3
    assert summary["oracle"]["accuracy"] >= max(r["accuracy"] for r in rows.values() if r["single"])
    weights = [
        json.loads(line)["details"]["weights"]
        for line in (out / "items.jsonl").read_text().splitlines()
        if json.loads(line)["strategy"] == "choice-ensemble[weights=packllm-sim]"
    ]
    assert len({round(w["smollm2"], 3) for w in weights}) > 1  # per-item weights from prompt perplexity
    # Run again: everything comes from the cache, so the report is the same.
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["strategies"] == summary["strategies"]
