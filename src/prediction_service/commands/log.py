"""``prediction-service log export``: a model's predictions over any range, live and archived.

Exit codes: 0 written; 1 an error (database, archive, output); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from prediction_service.settings import Settings
from prediction_service.storage.archive import SCHEMA, Archive, export
from prediction_service.storage.db import make_engine


def when(text: str) -> datetime:
    """An ISO 8601 date or time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The prediction log's rows: export a model's predictions over a time "
        "range, from the archive and the live table alike.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    out = sub.add_parser(
        "export",
        help="write a model's predictions in [--since, --until) to a Parquet or CSV file",
        description="Write a model's predictions created in [--since, --until) to OUTPUT: "
        "archived rows (the files the archive's catalog names) then live ones, oldest "
        "first, every column (JSON columns as JSON text) and the model's name.",
    )
    out.add_argument("output", type=Path, help="the file to write (.parquet or .csv)")
    out.add_argument("--model", required=True, help="the model's name")
    out.add_argument("--since", type=when, help="from this date or time (UTC unless given)")
    out.add_argument("--until", type=when, help="up to, not including, this date or time")
    out.add_argument("--format", choices=["parquet", "csv"],
                     help="default: from OUTPUT's suffix, else parquet")  # fmt: skip
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    settings = Settings()
    fmt = args.format or ("csv" if args.output.suffix.lower() == ".csv" else "parquet")
    engine = make_engine(settings.effective_database_url)
    rows = 0
    try:
        tables = export(engine, Archive.at(settings.archive_location), args.model, args.since,
                        args.until)  # fmt: skip
        writer = None
        args.output.parent.mkdir(parents=True, exist_ok=True)
        for table in tables:
            if writer is None:
                writer = (pq.ParquetWriter(args.output, table.schema) if fmt == "parquet"
                          else pcsv.CSVWriter(args.output, table.schema))  # fmt: skip
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # nothing in range: an empty file with the columns
            empty = SCHEMA.empty_table().append_column("model", pa.array([], pa.string()))
            (pq.write_table if fmt == "parquet" else pcsv.write_csv)(empty, args.output)
        else:
            writer.close()
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{rows:,} rows of {args.model} written to {args.output}")
    return 0
