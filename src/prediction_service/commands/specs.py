"""``prediction-service specs``: validate every model spec and list what each serves."""

from __future__ import annotations

import argparse
import sys

from prediction_service.errors import ServiceError
from prediction_service.settings import Settings
from prediction_service.specs import load_specs


def main(argv: list[str] | None = None, prog: str = "prediction-service specs") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
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
