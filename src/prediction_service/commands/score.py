"""``prediction-service score MODEL INPUT OUTPUT``: a file of any size scored offline.

Exit codes: 0 scored (invalid rows included, each with its reason); 3 more invalid rows
than ``--max-invalid-fraction`` allows; 1 any other error; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prediction_service import logs
from prediction_service.batch import CHUNK_ROWS, score
from prediction_service.commands import settings_from
from prediction_service.domain import BatchSummary
from prediction_service.errors import ServiceError, TooManyInvalidRowsError

EXIT_TOO_MANY_INVALID = 3


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Score INPUT (Parquet file or folder, CSV, JSON Lines) with a registered version "
            "of MODEL into the folder OUTPUT, in parts. Rows are checked by the model's spec "
            "as requests are: an invalid row gets its reason in the 'error' column and no "
            "prediction. Rerunning the same command after an interruption continues where "
            "it stopped. The job is recorded as an MLflow run and an event on the model's "
            "event log."
        ),
        epilog="Exit codes: 0 scored, 3 too many invalid rows (--max-invalid-fraction), "
        "1 error, 2 bad arguments.",
    )
    parser.add_argument("model", help="the model's name (its spec in config/models)")
    parser.add_argument("input", help="input file or folder (a path; with --engine spark, "
                        "any URL Spark's connectors read)")  # fmt: skip
    parser.add_argument("output", help="output folder (created; its parts are part-NNNNN.*)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--alias", default="champion", help="score with the version this alias points at "
        "(default: champion; for example challenger)",
    )  # fmt: skip
    which.add_argument("--version", help="score with this registered version")
    parser.add_argument(
        "--keep",
        help="comma-separated input columns copied to the output (default: all; an empty "
        "value keeps none)",
    )
    parser.add_argument("--input-format", choices=["parquet", "csv", "jsonl"],
                        help="the input's format (default: from the file names)")  # fmt: skip
    parser.add_argument("--output-format", choices=["parquet", "csv"], default="parquet",
                        help="the parts' format (default: parquet)")  # fmt: skip
    parser.add_argument(
        "--chunk-rows", type=int, default=CHUNK_ROWS,
        help=f"rows read, scored and written at a time, one output part each (default: "
        f"{CHUNK_ROWS:,}); memory grows with it, not with the input",
    )  # fmt: skip
    parser.add_argument(
        "--max-invalid-fraction", type=float, metavar="F",
        help="fail (exit 3) when more than this fraction of the rows is invalid",
    )  # fmt: skip
    parser.add_argument("--engine", choices=["local", "spark"], default="local",
                        help="local (pyarrow, resumable) or spark (mapInArrow)")  # fmt: skip
    parser.add_argument("--spark-master", default="local[*]",
                        help="Spark master URL for --engine spark (default: local[*])")  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace what OUTPUT holds (default: resume the same job, refuse another's)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the service's)")
    parser.add_argument("--specs-dir", type=Path, help="folder of model specs")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    if args.max_invalid_fraction is not None and not 0 <= args.max_invalid_fraction <= 1:
        parser.error("--max-invalid-fraction must be between 0 and 1")
    settings = settings_from(args)
    logs.setup(settings.log_format, "WARNING")
    keep = None if args.keep is None else [c for c in args.keep.split(",") if c]
    try:
        summary = score(
            args.model, args.input, args.output, alias=args.alias, version=args.version,
            keep=keep, input_format=args.input_format, output_format=args.output_format,
            chunk_rows=args.chunk_rows, max_invalid_fraction=args.max_invalid_fraction,
            engine=args.engine, spark_master=args.spark_master, overwrite=args.overwrite,
            progress=None if args.quiet else sys.stderr, settings=settings,
        )  # fmt: skip
    except TooManyInvalidRowsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_TOO_MANY_INVALID
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # unreadable input, a full disk (Arrow's errors too)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    assert isinstance(summary, BatchSummary)
    print(summary.model_dump_json(indent=2) if args.json else report(summary))
    return 0


def report(s: BatchSummary) -> str:
    lines = [
        f"scored {s.rows:,} rows of {s.input} with {s.registered_name} version {s.version} "
        f"({s.engine} engine) into {s.output}",
        f"  valid {s.scored:,}, invalid {s.invalid:,}; {s.parts} parts"
        + (f" ({s.resumed_parts} from an earlier run)" if s.resumed_parts else ""),
        f"  {s.seconds:.1f} s, {s.rows_per_second:,.0f} rows/s, peak memory {s.peak_rss_mb:.0f} MB",
        f"  batch_id {s.batch_id}, MLflow run {s.mlflow_run_id}",
    ]
    if s.invalid_by_reason:
        lines.append("  invalid rows by reason:")
        lines += [f"    {n:>10,}  {why}" for why, n in list(s.invalid_by_reason.items())[:20]]
        if len(s.invalid_by_reason) > 20:
            lines.append(f"    ... and {len(s.invalid_by_reason) - 20} more reasons")
    return "\n".join(lines)
