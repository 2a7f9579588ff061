"""The Spark engine: the same scorer over a Spark DataFrame, for data beyond one host.

Each executor gets the predictor once (a broadcast of its portable arrays, or of the native
model where it has none; see ``Predictor.__getstate__``) and keeps the scorer built from it
for every task of the job. Rows reach it as the Arrow batches of ``mapInArrow`` and leave as
the scorer's own Arrow output, so the columns and values are the local engine's exactly.
``mapInPandas`` would convert every batch to pandas and back (and lose nulls in integer
columns on the way); the scoring itself is the same.

pyspark is an optional extra (``pip install -e .[spark]``) and needs Java 17.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prediction_service.batch.scorer import ERROR, Chunk, Scorer
from prediction_service.errors import ConfigurationError
from prediction_service.serving.model_store import Predictor

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Scorers built on this executor, by job: Python workers are reused across tasks.
_SCORERS: dict[str, Scorer] = {}


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise ConfigurationError(
            "the Spark engine needs pyspark: pip install -e '.[spark]' (or -r "
            "requirements-spark.txt), and Java 17 (Debian: openjdk-17-jre-headless)"
        ) from None
    return pyspark


def session(master: str, chunk_rows: int) -> SparkSession:
    """The active session, or one on ``master`` whose Python workers run this interpreter."""
    _pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("prediction-service score")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def read(spark: SparkSession, path: str, format: str) -> DataFrame:
    """The input through Spark's own readers (any path its connectors take: s3a://, ...).
    CSV features stay text, parsed by the scorer as the local engine does."""
    if format == "parquet":
        return spark.read.parquet(path)
    if format == "csv":
        return spark.read.csv(path, header=True, inferSchema=False)
    return spark.read.json(path)


def scored(frame: DataFrame, predictor: Predictor, keep: list[str], batch_id: str,
           text: bool) -> DataFrame:  # fmt: skip
    """``frame`` with the scorer's output columns (lazy: nothing runs until it is used)."""
    _pyspark()
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    columns = list(frame.columns)
    probe = Scorer(predictor, keep, batch_id, text, columns)  # checks columns before any task
    schema = from_arrow_schema(probe.schema(to_arrow_schema(frame.schema)))
    shipped = frame.sparkSession.sparkContext.broadcast(predictor)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _SCORERS.get(batch_id)
        if scorer is None:
            scorer = _SCORERS[batch_id] = Scorer(shipped.value, keep, batch_id, text, columns)
        for batch in batches:
            yield from scorer.score(Chunk(pa.Table.from_batches([batch])))[0].to_batches()

    return frame.mapInArrow(score, schema)


def write(frame: DataFrame, output: str, output_format: str, overwrite: bool) -> None:
    writer = frame.write.mode("overwrite" if overwrite else "errorifexists")
    if output_format == "parquet":
        writer.parquet(output)
    else:
        writer.csv(output, header=True)


def tally(spark: SparkSession, output: str, output_format: str) -> tuple[int, dict[str, int]]:
    """Rows written and the invalid ones by reason, read back from the output."""
    reader = spark.read
    frame = (
        reader.parquet(output) if output_format == "parquet" else reader.csv(output, header=True)
    )
    counts = frame.groupBy(ERROR).count().collect()
    rows = sum(int(r["count"]) for r in counts)
    reasons = {r[ERROR]: int(r["count"]) for r in counts if r[ERROR] is not None}
    return rows, dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
