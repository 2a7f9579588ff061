"""Offline scoring against its peers, on one input of N housing rows (default 2 million).

`python bench/scoring.py [--rows 2000000] [--rounds 2] [--no-spark]` uses the default
registry (`make train` first); `make bench` runs it on the registry it trains. In each
round, alternating:

- the served predictor on the same rows as in-memory arrays (one call, and in chunks of
  the job's size): the ceiling, with no reading, checking or writing;
- `prediction-service score` (local engine) on the Parquet file, and on the same rows as CSV;
- `mlflow models predict --env-manager local` on the CSV (it reads CSV, writes JSON);
- with pyspark and Java: our Spark engine and `mlflow.pyfunc.spark_udf` on the same
  DataFrame on `local[2]`, each writing Parquet.

The commands are timed from outside (process start to exit); the local engine's own
summary gives the job's time without the interpreter's start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import ROOT, log  # noqa: E402

MODEL, REGISTERED = "housing", "CaliforniaHousingBestModel"


def make_input(folder: Path, rows: int) -> tuple[Path, Path]:
    """N rows drawn (seeded) from the housing data, with an id, as Parquet and as CSV."""
    raw = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns=["MedHouseVal"])
    frame = raw.sample(rows, replace=True, random_state=0).reset_index(drop=True)
    frame.insert(0, "house_id", np.arange(rows))
    parquet, csv = folder / "houses.parquet", folder / "houses.csv"
    frame.to_parquet(parquet, row_group_size=250_000)
    frame.to_csv(csv, index=False)
    return parquet, csv


def in_memory(parquet: Path, chunk: int) -> dict[str, float]:
    """The served predictor's rows/s on arrays already in memory."""
    import pyarrow.parquet as pq

    from prediction_service.registry import Registry
    from prediction_service.serving.model_store import load_predictor
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    settings = Settings()
    spec = load_specs(settings.specs_path)[MODEL]
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    predictor = load_predictor(registry, spec, registry.champion_version(REGISTERED) or "")
    table = pq.read_table(parquet, columns=spec.feature_names)
    X = np.column_stack([table.column(n).to_numpy() for n in spec.feature_names])
    started = time.perf_counter()
    predictor.predict(X)
    whole = len(X) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(X), chunk):
        predictor.predict(X[i : i + chunk])
    chunked = len(X) / (time.perf_counter() - started)
    return {"whole": whole, "chunked": chunked, "kind": predictor.kind}  # type: ignore[dict-item]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - started, out.stdout


def ours(env: dict[str, str], source: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "prediction_service", "score", MODEL, str(source), str(out),
           "--overwrite", "--quiet", "--json"]  # fmt: skip
    wall, stdout = timed(cmd, env)
    summary = json.loads(stdout)
    return {"wall_s": wall, "job_s": summary["seconds"], "rows": summary["rows"],
            "peak_rss_mb": summary["peak_rss_mb"]}  # fmt: skip


def mlflow_predict(env: dict[str, str], csv: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "mlflow", "models", "predict", "-m",
           f"models:/{REGISTERED}@champion", "-i", str(csv), "-t", "csv", "-o", str(out),
           "--env-manager", "local"]  # fmt: skip
    wall, _ = timed(cmd, env)
    return {"wall_s": wall}


def spark_pair(parquet: Path, work: Path, rounds: int) -> dict[str, list[float]]:
    """Our Spark engine and mlflow's spark_udf on one DataFrame, alternating, seconds each."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from prediction_service.batch import score
    from prediction_service.batch import spark as engine
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    session = engine.session("local[2]", 100_000)
    features = load_specs(Settings().specs_path)[MODEL].feature_names
    udf = mlflow.pyfunc.spark_udf(session, f"models:/{REGISTERED}@champion",
                                  env_manager="local")  # fmt: skip
    times: dict[str, list[float]] = {"ours": [], "spark_udf": []}
    for r in range(rounds):
        log(f"scoring: spark round {r + 1}")
        started = time.perf_counter()
        score(MODEL, parquet, work / "spark-ours", engine="spark", overwrite=True)
        times["ours"].append(time.perf_counter() - started)
        started = time.perf_counter()
        frame = session.read.parquet(str(parquet))
        frame.withColumn("prediction", udf(F.struct(*features))).write.mode("overwrite").parquet(
            str(work / "spark-udf")
        )
        times["spark_udf"].append(time.perf_counter() - started)
    session.stop()
    return times


def measure(env: dict[str, str], rows: int, rounds: int, spark: bool = True) -> dict[str, Any]:
    from prediction_service.settings import Settings

    os.environ.update(env)
    # mlflow's own commands and spark_udf read the service's registry
    env = {**env, "MLFLOW_TRACKING_URI": Settings().effective_tracking_uri}
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    try:
        log(f"scoring: writing {rows:,} rows")
        parquet, csv = make_input(work, rows)
        runs: dict[str, list[Any]] = {k: [] for k in ("memory", "parquet", "csv", "mlflow")}
        for r in range(rounds):
            log(f"scoring: round {r + 1} of {rounds}")
            runs["memory"].append(in_memory(parquet, 100_000))
            runs["parquet"].append(ours(env, parquet, work / "out-parquet"))
            runs["csv"].append(ours(env, csv, work / "out-csv"))
            runs["mlflow"].append(mlflow_predict(env, csv, work / "mlflow.json"))
        result: dict[str, Any] = {"rows": rows, "rounds": rounds, "runs": runs}
        if spark and shutil.which("java"):
            try:
                result["spark"] = spark_pair(parquet, work, rounds)
            except ImportError:
                log("scoring: pyspark is not installed; Spark skipped")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(values: list[float]) -> float:
    return float(np.median(values))


def table(r: dict[str, Any]) -> str:
    n, runs = r["rows"], r["runs"]
    memory = _median([m["whole"] for m in runs["memory"]])
    chunked = _median([m["chunked"] for m in runs["memory"]])
    ceiling = max(memory, chunked)
    job = n / _median([p["job_s"] for p in runs["parquet"]])
    parquet_wall = n / _median([p["wall_s"] for p in runs["parquet"]])
    csv_wall = n / _median([p["wall_s"] for p in runs["csv"]])
    mlflow = n / _median([m["wall_s"] for m in runs["mlflow"]])
    rss = max(p["peak_rss_mb"] for p in runs["parquet"] + runs["csv"])
    lines = [
        f"Offline scoring, housing champion ({runs['memory'][0]['kind']} predictor), {n:,} "
        f"rows, median of {r['rounds']} alternating rounds:",
        "",
        "| | rows/s | against |",
        "| --- | --- | --- |",
        f"| served predictor, arrays in memory, one call | {memory:,.0f} | |",
        f"| served predictor, arrays in memory, chunks of 100,000 | {chunked:,.0f} | |",
        f"| `score`, Parquet, the job (load, digest, read, check, predict, write, MLflow run) "
        f"| {job:,.0f} | {job / ceiling:.2f}x the faster of the two above |",
        f"| `score`, Parquet, the whole command | {parquet_wall:,.0f} | |",
        f"| `score`, CSV, the whole command | {csv_wall:,.0f} | {csv_wall / mlflow:.2f}x mlflow |",
        f"| `mlflow models predict --env-manager local`, CSV | {mlflow:,.0f} | |",
    ]
    if "spark" in r:
        s = r["spark"]
        ours_rate, udf_rate = n / _median(s["ours"]), n / _median(s["spark_udf"])
        lines += [
            f"| `score --engine spark`, `local[2]`, Parquet | {ours_rate:,.0f} | "
            f"{ours_rate / udf_rate:.2f}x spark_udf |",
            f"| `mlflow.pyfunc.spark_udf`, `local[2]`, Parquet | {udf_rate:,.0f} | |",
        ]
    cost = 1e6 / job
    lines += ["", f"Peak memory of the local engine: {rss:.0f} MB (chunks of 100,000 rows). "
              f"Scoring cost: {cost:.1f} s per million rows on this machine's 2 cores."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark pair")
    args = parser.parse_args()
    result = measure(dict(os.environ), args.rows, args.rounds, spark=not args.no_spark)
    print(json.dumps(result, indent=1, default=str), file=sys.stderr)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
