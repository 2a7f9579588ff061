"""Offline scoring: a table of any size scored by one registered version of a model.

``score(model, input, output)`` (and ``prediction-service score``) loads the version as the
service does (the same portable predictor and native kernel), checks every row by the
spec's own codec (an invalid row gets its reason in the ``error`` column and no
prediction; it never stops the job), and writes the input's kept columns, the prediction
(and class probabilities), the model's name and version, the job's ``batch_id`` and
``error``. Two engines run the same scorer: ``local`` (pyarrow, a chunk at a time,
resumable) and ``spark`` (``mapInArrow`` over a Spark DataFrame). Each job is a run in
MLflow and an event on the model's event log.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import orjson

from prediction_service.batch.local import (
    OutputFormat,
    Tally,
    check_invalid,
    peak_rss_mb,
    score_files,
)
from prediction_service.batch.progress import Progress
from prediction_service.batch.scorer import Scorer
from prediction_service.batch.sources import Format, guess_format, open_source
from prediction_service.domain import BatchSummary
from prediction_service.errors import InvalidInputError, NotFoundError, UnknownModelError
from prediction_service.registry import Registry, RunRecorder
from prediction_service.serving.model_store import Predictor, load_predictor
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, load_specs
from prediction_service.storage.events import standalone

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Engine = Literal["local", "spark"]
CHUNK_ROWS = 100_000

__all__ = ["BatchSummary", "CHUNK_ROWS", "score"]


def score(
    model: str,
    input: str | Path | DataFrame,
    output: str | Path | None = None,
    *,
    alias: str = "champion",
    version: str | None = None,
    keep: Sequence[str] | None = None,
    input_format: Format | None = None,
    output_format: OutputFormat = "parquet",
    chunk_rows: int = CHUNK_ROWS,
    max_invalid_fraction: float | None = None,
    engine: Engine = "local",
    spark_master: str = "local[*]",
    overwrite: bool = False,
    progress: TextIO | None = None,
    settings: Settings | None = None,
) -> BatchSummary | DataFrame:
    """Score ``input`` with ``model``'s version ``version`` (default: the one ``alias``
    points at) into the folder ``output``, and return what the job did.

    ``input`` is a Parquet file or folder, a CSV or a JSON Lines file (or a folder of them),
    or a Spark DataFrame: then the scored DataFrame is returned, lazily, for the caller to
    use or write. ``keep`` names the input columns copied to the output (default: all).
    ``progress`` is where progress goes (a bar on a terminal, a line every few seconds
    otherwise); None for none."""
    settings = settings or Settings()
    spec = _spec(settings, model)
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    chosen = _version(registry, spec, alias, version)
    if _is_spark_frame(input):
        from prediction_service.batch import spark

        predictor = load_predictor(registry, spec, chosen)
        columns = list(input.columns)  # type: ignore[union-attr]
        kept = _kept(keep, columns)
        batch_id = _batch_id({"frame": id(input), "version": chosen, "at": time.time()})
        return spark.scored(input, predictor, kept, batch_id, False)  # type: ignore[arg-type]
    if output is None:
        raise InvalidInputError("give an output folder")
    if chunk_rows < 1:
        raise InvalidInputError("chunk_rows must be at least 1")
    started = time.perf_counter()
    predictor = load_predictor(registry, spec, chosen)
    in_path, out_path = str(input), str(output)
    remote = "://" in in_path  # the Spark engine's connectors read it
    source = None if remote else open_source(Path(in_path), input_format)
    fmt = source.format if source else input_format or guess_format([in_path])
    digest = source.digest() if source else ""
    job: dict[str, Any] = {
        "input": in_path, "input_digest": digest, "model": spec.registered_name,
        "version": chosen, "keep": list(keep) if keep is not None else None,
        "chunk_rows": chunk_rows, "input_format": fmt, "output_format": output_format,
    }  # fmt: skip
    batch_id = _batch_id(job)
    with RunRecorder(registry, f"{spec.name}-scoring", f"score {batch_id}") as run, \
            standalone(settings.effective_database_url) as events:  # fmt: skip
        run.set_tags({"batch_id": batch_id, "engine": engine})
        run.log_params({**job, "output": out_path, "engine": engine})
        try:
            if source is not None and engine == "local":
                kept = _kept(keep, source.columns)
                scorer = Scorer(predictor, kept, batch_id, fmt == "csv", source.columns)
                bar = Progress(source.rows, progress, exact=fmt == "parquet") if progress else None
                tally = score_files(
                    scorer, source, Path(out_path), job, chunk_rows, output_format, overwrite,
                    max_invalid_fraction, bar,
                )  # fmt: skip
            elif engine == "spark":
                tally = _spark_job(
                    predictor, in_path, out_path, fmt, keep, batch_id, output_format,
                    spark_master, chunk_rows, overwrite,
                )  # fmt: skip
                check_invalid(tally.invalid, tally.rows, max_invalid_fraction)
            else:
                raise InvalidInputError(f"the local engine reads local files, not {in_path}")
        except Exception as exc:
            if events is not None:
                details = {"batch_id": batch_id, "mlflow_run_id": run.run_id}
                reason = f"offline scoring of {in_path} failed: {exc}"
                events.record(spec.name, "batch_failed", reason, chosen, details)
            raise
        seconds = time.perf_counter() - started
        summary = BatchSummary(
            model=spec.name, registered_name=spec.registered_name, version=chosen,
            batch_id=batch_id, engine=engine, input=in_path, input_digest=digest,
            output=out_path, rows=tally.rows, scored=tally.rows - tally.invalid,
            invalid=tally.invalid, invalid_by_reason=tally.reasons, parts=tally.parts,
            resumed_parts=tally.resumed_parts, seconds=round(seconds, 3),
            rows_per_second=round(tally.rows / max(seconds, 1e-9), 1),
            peak_rss_mb=round(peak_rss_mb(), 1), mlflow_run_id=run.run_id,
        )  # fmt: skip
        run.log_metrics({k: float(getattr(summary, k)) for k in _METRICS})
        run.log_json(summary.model_dump(), "scoring/summary.json")
        if events is not None:
            reason = (f"{tally.rows:,} rows of {in_path} scored into {out_path} "
                      f"({tally.invalid:,} invalid)")  # fmt: skip
            events.record(spec.name, "batch_scored", reason, chosen,
                          summary.model_dump(include=_EVENT_DETAILS))  # fmt: skip
    return summary


_METRICS = ("rows", "scored", "invalid", "parts", "resumed_parts", "seconds",
            "rows_per_second", "peak_rss_mb")  # fmt: skip
_EVENT_DETAILS = {"batch_id", "engine", "input", "input_digest", "output", "rows", "invalid",
                  "invalid_by_reason", "seconds", "mlflow_run_id"}  # fmt: skip


def _spec(settings: Settings, model: str) -> ModelSpec:
    specs = load_specs(settings.specs_path)
    if model not in specs:
        raise UnknownModelError(model, sorted(specs))
    return specs[model]


def _version(registry: Registry, spec: ModelSpec, alias: str, version: str | None) -> str:
    if version is not None:
        if registry.find_version(spec.registered_name, version) is None:
            raise NotFoundError(f"{spec.registered_name} has no version {version}")
        return version
    found = registry.alias_version(spec.registered_name, alias)
    if found is None:
        raise NotFoundError(
            f"{spec.registered_name} has no {alias!r} version; train it, or give --version"
        )
    return found


def _kept(keep: Sequence[str] | None, columns: Sequence[str]) -> list[str]:
    if keep is None:
        return list(columns)
    unknown = [c for c in keep if c not in columns]
    if unknown:
        raise InvalidInputError(f"--keep names columns the input does not have: {unknown}")
    return list(dict.fromkeys(keep))


def _batch_id(job: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(job, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _is_spark_frame(value: object) -> bool:
    return type(value).__module__.startswith("pyspark.sql") and hasattr(value, "mapInArrow")


def _spark_job(
    predictor: Predictor, in_path: str, out_path: str, fmt: str, keep: Sequence[str] | None,
    batch_id: str, output_format: str, master: str, chunk_rows: int, overwrite: bool,
) -> Tally:  # fmt: skip
    from prediction_service.batch import spark

    started = time.perf_counter()
    session = spark.session(master, chunk_rows)
    frame = spark.read(session, in_path, fmt)
    out = spark.scored(frame, predictor, _kept(keep, frame.columns), batch_id, fmt == "csv")
    spark.write(out, out_path, output_format, overwrite)
    rows, reasons = spark.tally(session, out_path, output_format)
    parts = len(list(Path(out_path).glob("part-*"))) if "://" not in out_path else 0
    return Tally(rows, sum(reasons.values()), reasons, parts, 0, time.perf_counter() - started)
