"""``prediction-service migrate``: bring the prediction database's schema to the latest.

``serve`` does the same at start, under the same lock, so running this first is optional on
one host; on Kubernetes an init container runs it before each API pod starts.
"""

from __future__ import annotations

import argparse
import sys

from prediction_service.errors import ServiceError
from prediction_service.settings import Settings
from prediction_service.storage.db import make_engine, migrate


def main(argv: list[str] | None = None, prog: str = "prediction-service migrate") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Apply the prediction database's migrations (PREDICT_DATABASE_URL; "
        "default logs/predictions.db). Safe to run from many processes at once: they take "
        "turns under a database lock, and all but the first find the schema at the latest "
        "revision. Exit codes: 0 at the latest revision, 1 the database refused or is "
        "unsupported.",
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: PREDICT_DATABASE_URL)")
    args = parser.parse_args(argv)
    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    try:
        engine = make_engine(settings.effective_database_url)
        try:
            before, head = migrate(engine)
        finally:
            engine.dispose()
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the database's own error, said plainly
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    if before == head:
        print(f"prediction database already at revision {head}")
    else:
        print(f"prediction database migrated from {before or 'empty'} to revision {head}")
    return 0
