"""The engine examples run as they are, on the packaged models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_streaming_fusion_example_answers_and_reports_weights():
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "streaming_fusion.py"),
            "--max-tokens",
            "12",
            "What is the capital of France?",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    assert "Paris" in out
    assert "weights: {'smollm2':" in out and "agreement with the chosen token" in out
