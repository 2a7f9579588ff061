"""Lint and type checks run inside `make test`, the same way CI runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_the_grpc_modules_are_generated_from_the_committed_proto(tmp_path: Path) -> None:
    """`make grpc` output, compared file by file with what is committed."""
    package = Path("prediction_service/protocols/v2_grpc")
    subprocess.run(  # noqa: S603 - the test's own interpreter
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'src'}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(ROOT / "src" / package / "grpc_predict_v2.proto")],
        check=True,
    )  # fmt: skip
    generated = sorted(p.name for p in (tmp_path / package).iterdir())
    assert generated == [
        "grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py"
    ]  # fmt: skip
    for name in generated:
        assert (tmp_path / package / name).read_text() == (
            ROOT / "src" / package / name
        ).read_text()
