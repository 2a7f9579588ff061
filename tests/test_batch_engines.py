"""Offline scoring as its users run it: the command killed and resumed, memory against the
input's size, and the Spark engine against the local one (pyspark and Java 17, which
``.ci/run`` installs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from prediction_service.settings import Settings
from tests.conftest import IN_CI, ROOT, registry_copy, small_settings
from tests.test_batch import Small, housing_rows, read

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(small: Small, tmp_path: Path) -> Settings:
    return small_settings(small, tmp_path, tracking_uri=registry_copy(small, tmp_path))


def command(settings: Settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "prediction_service", "score", *args,
            "--specs-dir", str(settings.specs_path)]  # fmt: skip


def environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PREDICT_TRACKING_URI": settings.effective_tracking_uri,
        "PREDICT_ARTIFACT_ROOT": str(settings.artifact_path),
        "PREDICT_DATABASE_URL": settings.effective_database_url,
    }


def run(settings: Settings, *args: str) -> dict[str, object]:
    out = subprocess.run(command(settings, *args, "--json", "--quiet"), env=environment(settings),
                         capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_killed_and_rerun_the_command_writes_what_an_uninterrupted_run_does(
    settings: Settings, tmp_path: Path
) -> None:
    rows = housing_rows(400_000, seed=4)
    rows.loc[rows.sample(1_000, random_state=5).index, "Latitude"] = 50.0
    rows.to_parquet(tmp_path / "in.parquet")
    args = (str(tmp_path / "in.parquet"), "--chunk-rows", "10000")
    whole = run(settings, "housing", *args[:1], str(tmp_path / "whole"), *args[1:])

    killed = subprocess.Popen(command(settings, "housing", args[0], str(tmp_path / "out"),
                                      *args[1:]), env=environment(settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    manifest = tmp_path / "out" / "_manifest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_bytes())["parts"]) >= 5:
            break
        assert killed.poll() is None, killed.stderr.read() if killed.stderr else ""
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    done = len(json.loads(manifest.read_bytes())["parts"])
    assert 5 <= done < 40, "the run was not stopped half-way"

    resumed = run(settings, "housing", args[0], str(tmp_path / "out"), *args[1:])
    assert resumed["resumed_parts"] >= done and resumed["parts"] == whole["parts"] == 40
    for key in ("rows", "invalid", "invalid_by_reason", "batch_id", "input_digest"):
        assert resumed[key] == whole[key], key
    assert whole["invalid_by_reason"] == {"Latitude: above the maximum 42.5": 1_000}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir()
    )
    pd.testing.assert_frame_equal(read(tmp_path / "out"), read(tmp_path / "whole"))


def test_memory_does_not_grow_with_the_input(settings: Settings, tmp_path: Path) -> None:
    """Peak RSS scoring 10 and 30 chunks' worth of rows. Read whole, the larger input's
    rows and output would take about 360 MB more than the smaller's."""
    chunk = 100_000
    peaks = {}
    for chunks in (10, 30):
        name = f"x{chunks}"
        housing_rows(chunks * chunk).to_parquet(tmp_path / f"{name}.parquet", row_group_size=chunk)
        out = run(settings, "housing", str(tmp_path / f"{name}.parquet"), str(tmp_path / name),
                  "--chunk-rows", str(chunk))  # fmt: skip
        peaks[chunks] = float(out["peak_rss_mb"])  # type: ignore[arg-type]
    print(f"peak RSS with chunks of {chunk:,} rows: {peaks[10]:.0f} MB for {10 * chunk:,} rows, "
          f"{peaks[30]:.0f} MB for {30 * chunk:,}")  # fmt: skip
    assert peaks[30] < peaks[10] + 100, peaks


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    from tests.conftest import require_program

    require_program("java")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        message = "pyspark is not installed (pip install -r requirements-spark.txt)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from prediction_service.batch import spark as engine

    session = engine.session("local[2]", 10_000)
    yield session
    session.stop()


def test_spark_writes_what_the_local_engine_does(
    spark, settings: Settings, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from prediction_service.batch import score

    rows = housing_rows(60_000, seed=6)
    rows.loc[rows.sample(500, random_state=7).index, "AveOccup"] = -3.0
    rows.to_parquet(tmp_path / "in.parquet", row_group_size=15_000)
    local = score("housing", tmp_path / "in.parquet", tmp_path / "local", settings=settings)
    on_spark = score("housing", tmp_path / "in.parquet", tmp_path / "spark", engine="spark",
                     settings=settings)  # fmt: skip
    assert local.batch_id == on_spark.batch_id
    assert (on_spark.rows, on_spark.invalid) == (60_000, 500)
    assert on_spark.invalid_by_reason == local.invalid_by_reason
    expected = read(tmp_path / "local")
    written = pq.read_table(tmp_path / "spark").to_pandas().sort_values("house_id")
    pd.testing.assert_frame_equal(written.reset_index(drop=True), expected)

    # A DataFrame in, a DataFrame out: the same columns and values.
    frame = score("housing", spark.read.parquet(str(tmp_path / "in.parquet")), settings=settings)
    back = frame.toPandas().sort_values("house_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(back.drop(columns="batch_id"),
                                  expected.drop(columns="batch_id"))  # fmt: skip
