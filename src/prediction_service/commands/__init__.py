"""``prediction-service COMMAND``: one entry point, one module per command in this package.

Also ``python -m prediction_service``. ``run_api.py``, ``train_housing.py`` and
``train_iris.py`` are thin entry points over the same commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from prediction_service import __version__

if TYPE_CHECKING:
    from prediction_service.settings import Settings

PROG = "prediction-service"


def _command(module: str) -> Callable[[list[str]], int]:
    """The command's ``main``, imported only when it runs (``--help`` stays quick)."""

    def run(argv: list[str]) -> int:
        main: Callable[..., int] = getattr(
            importlib.import_module(f"prediction_service.commands.{module}"), "main"
        )
        return main(argv, prog=f"{PROG} {module}")

    return run


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "serve": (
        _command("serve"),
        "serve every model's champion (REST, V2 REST and gRPC, /invocations)",
    ),
    "train": (_command("train"), "train models from their specs and register the best"),
    "migrate": (_command("migrate"), "bring the prediction database's schema to the latest"),
    "specs": (_command("specs"), "validate the model specs and list them"),
    "score": (_command("score"), "score a file of any size offline (local or Spark engine)"),
    "log": (_command("log"), "export the prediction log's rows over a range (live and archived)"),
}


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings, with a command's ``--tracking-uri`` and ``--specs-dir`` over them."""
    from prediction_service.settings import Settings

    overrides: dict[str, object] = {}
    if getattr(args, "tracking_uri", None):
        overrides["tracking_uri"] = args.tracking_uri
    if getattr(args, "specs_dir", None):
        overrides["specs_dir"] = args.specs_dir
    return Settings(**overrides)  # type: ignore[arg-type]


def usage() -> str:
    lines = [f"usage: {PROG} COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9}{text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"{PROG}: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return command[0](args[1:])
