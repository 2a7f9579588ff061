"""The code's shape, checked: layers that import only downwards, library internals in one
module, one definition of each shared type, generated code in step with its source.

Lint (flake8, black, isort), mypy and bandit run in `make test` beside pytest (`make lint`,
`make typecheck`, `make security`), the way CI runs them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "src" / "prediction_service"
# Bottom to top: a module may import its own package and the layers below its own, never a
# layer above, nor another package of its own layer (serving and training are separate
# halves of the core; access sits beside them).
LAYERS: list[set[str]] = [
    {"__init__", "errors", "catalog", "domain", "shortcuts", "tracing"},
    {"logs"},
    {"specs", "metrics"},
    {"data", "predictors", "registry", "storage"},
    {"settings"},
    {"access", "serving", "training"},
    {"protocols", "batch"},  # the online and the offline way to the model
    {"core"},
    {"api"},
    {"commands"},
    {"__main__"},  # entry points: every __main__.py, the package's and training's
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """The top-level part of ``prediction_service.X.Y``: X (a name defined in the package's
    ``__init__``, such as ``__version__``, is part of ``__init__``)."""
    part = module.split(".")[1] if module.count(".") else "__init__"
    return part if (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").exists() else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every import of our own package in ``path``, at any depth (functions included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "prediction_service":  # from prediction_service import x, y
                found += [(node.lineno, f"prediction_service.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.startswith("prediction_service.")]


def test_every_module_is_in_a_layer() -> None:
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert parts <= set(RANK), sorted(parts - set(RANK))


def test_imports_only_point_down() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        here = _part(".".join(("prediction_service", *path.relative_to(PACKAGE).parts)))
        if path.name == "__main__.py":
            here = "__main__"
        for line, module in _imports(path):
            there = _part(module)
            if there == here:
                continue
            if RANK[there] >= RANK[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {module}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


PRIVATE = (
    "._sum", "._buckets", "._upper_bounds", "httptools_impl", "._predictors",
    "._baseline_prediction", "._fit_X",
)  # fmt: skip


def test_library_internals_are_used_in_one_module_only() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(word in path.read_text() for word in PRIVATE)
    }
    assert users == {"shortcuts.py"}


def test_task_is_defined_once() -> None:
    definitions = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "\nTask = " in path.read_text()
    ]
    assert definitions == ["catalog.py"]


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
