"""``prediction-service COMMAND``: one entry point for serving, training and checking specs.

Also ``python -m prediction_service``. ``run_api.py``, ``train_housing.py`` and
``train_iris.py`` are thin entry points over the same commands.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from prediction_service import __version__

PROG = "prediction-service"


def _serve(argv: list[str]) -> int:
    from prediction_service.api.cli import main

    return main(argv, prog=f"{PROG} serve")


def _train(argv: list[str]) -> int:
    from prediction_service.training.cli import main

    return main(argv, prog=f"{PROG} train")


def _specs(argv: list[str]) -> int:
    import argparse

    from prediction_service.errors import ServiceError
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    parser = argparse.ArgumentParser(
        prog=f"{PROG} specs",
        description="Validate every model spec in the spec folder and list what each serves.",
    )
    parser.add_argument("--specs-dir", help="folder of model specs (default: config/models)")
    args = parser.parse_args(argv)
    settings = Settings(**({"specs_dir": args.specs_dir} if args.specs_dir else {}))
    try:
        specs = load_specs(settings.specs_path)
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    for name, spec in specs.items():
        features = ", ".join(f"{f.name} [{f.min:g}, {f.max:g}]" for f in spec.features)
        candidates = ", ".join(c.name for c in spec.candidates)
        print(f"{name}: {spec.registered_name}, {spec.task} on {spec.data.path}")
        print(f"  features: {features}")
        print(f"  candidates: {candidates}; selected by {spec.selection_metric}")
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "serve": (_serve, "serve every model's champion (REST, V2 REST and gRPC, /invocations)"),
    "train": (_train, "train models from their specs and register the best"),
    "specs": (_specs, "validate the model specs and list them"),
}


def usage() -> str:
    lines = [f"usage: {PROG} COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8}{text}" for name, (_, text) in COMMANDS.items()]
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
