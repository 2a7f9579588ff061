"""Lint and type checks run inside `make test`, the same way CI runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

TARGETS = [
    "src",
    "tests",
    "bench",
    "deploy/kubernetes/generate.py",
    "train_housing.py",
    "train_iris.py",
    "run_api.py",
]


@pytest.mark.parametrize(
    "command",
    [
        ["flake8", *TARGETS],
        ["black", "--check", "--quiet", *TARGETS],
        ["isort", "--check-only", "--quiet", *TARGETS],
        ["mypy"],
        # No finding of medium or high severity; the low ones are justified in
        # docs/security.md.
        ["bandit", "--quiet", "--recursive", "src", "--severity-level", "medium"],
    ],
    ids=["flake8", "black", "isort", "mypy", "bandit"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
