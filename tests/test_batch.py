"""Offline scoring (``prediction_service.batch``, ``prediction-service score``) on the small
models' real MLflow store: exact predictions, row-level validation by the spec's codec,
resuming after a failure, lineage in MLflow and on the event log."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from prediction_service.batch import score
from prediction_service.batch.local import MANIFEST
from prediction_service.batch.scorer import Chunk, Scorer
from prediction_service.commands import score as score_command
from prediction_service.errors import ConflictError, InvalidInputError, TooManyInvalidRowsError
from prediction_service.registry import Registry
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.model_store import load_predictor
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import ROOT, registry_copy, small_settings

pytestmark = pytest.mark.unit
Small = tuple[Settings, dict[str, TrainingResult]]


@pytest.fixture
def settings(small: Small, tmp_path: Path) -> Settings:
    """The small models, in a copy of their registry (scoring adds runs to it)."""
    return small_settings(small, tmp_path, tracking_uri=registry_copy(small, tmp_path))


def housing_rows(n: int, seed: int = 0) -> pd.DataFrame:
    raw = pd.read_csv(ROOT / "data" / "housing_raw.csv").drop(columns=["MedHouseVal"])
    rows = raw.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    rows.insert(0, "house_id", np.arange(n))
    return rows


def predictor_of(settings: Settings, model: str):  # type: ignore[no-untyped-def]
    spec = load_specs(settings.specs_path)[model]
    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    return load_predictor(registry, spec, registry.champion_version(spec.registered_name) or "")


def read(folder: Path) -> pd.DataFrame:
    return pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pandas()


def test_predictions_are_the_served_predictors_exactly(settings: Settings, tmp_path: Path) -> None:
    rows = housing_rows(25_000)
    rows.to_parquet(tmp_path / "houses.parquet", row_group_size=7_000)
    summary = score("housing", tmp_path / "houses.parquet", tmp_path / "out", chunk_rows=10_000,
                    settings=settings)  # fmt: skip
    out = read(tmp_path / "out")
    predictor = predictor_of(settings, "housing")
    features = rows[predictor.spec.feature_names].to_numpy(dtype=np.float64)
    assert out["prediction"].to_numpy().tobytes() == predictor.predict(features).tobytes()
    assert out.columns.tolist() == [*rows.columns, "prediction", "model", "model_version",
                                    "batch_id", "error"]  # fmt: skip
    assert (out["house_id"] == rows["house_id"]).all() and out["error"].isna().all()
    assert set(out["model"]) == {"CaliforniaHousingBestModel"}
    assert set(out["model_version"]) == {predictor.info.version}
    assert set(out["batch_id"]) == {summary.batch_id}
    assert (summary.rows, summary.scored, summary.invalid, summary.parts) == (25_000, 25_000, 0, 3)


def test_a_classifier_gives_labels_and_probabilities(settings: Settings, tmp_path: Path) -> None:
    """The iris CSV as it is: its columns are the spec's source columns."""
    summary = score("iris", ROOT / "data" / "iris_raw.csv", tmp_path / "out", keep=["target"],
                    settings=settings)  # fmt: skip
    out = read(tmp_path / "out")
    predictor = predictor_of(settings, "iris")
    raw = pd.read_csv(ROOT / "data" / "iris_raw.csv")
    probabilities = predictor.predict(raw.iloc[:, :4].to_numpy(dtype=np.float64))
    columns = [f"probability_{c}" for c in predictor.classes]
    assert out.columns.tolist() == ["target", "prediction", *columns, "model", "model_version",
                                    "batch_id", "error"]  # fmt: skip
    assert np.array_equal(out[columns].to_numpy(), probabilities)
    labels = np.array(predictor.classes)[probabilities.argmax(axis=1)]
    assert out["prediction"].tolist() == labels.tolist()
    assert summary.rows == 150 and summary.invalid == 0


def test_screen_holds_a_table_to_the_rules_of_a_request(settings: Settings) -> None:
    """Every row ``screen`` passes, the request codec accepts, and every row it fails, the
    request codec refuses: one set of rules."""
    spec = load_specs(settings.specs_path)["housing"]
    codec = FeatureCodec(spec, max_rows=10)
    rng = np.random.default_rng(3)
    lows = np.array([f.min for f in spec.features])
    highs = np.array([f.max for f in spec.features])
    X = lows + rng.uniform(-0.2, 1.2, (400, len(lows))) * (highs - lows)
    X[rng.random(X.shape) < 0.02] = np.nan
    X[rng.random(X.shape) < 0.02] = np.inf
    X[rng.random(X.shape) < 0.02] = -np.inf
    none = np.zeros(X.shape, dtype=bool)
    reasons = codec.screen(X, none, none)
    for row, reason in zip(X.tolist(), reasons):
        record = dict(zip(codec.names, row))
        try:
            codec.records([record])
            accepted = True
        except InvalidInputError:
            accepted = False
        assert accepted == (reason is None), (record, reason)
    assert 50 < sum(r is not None for r in reasons) < 400


def test_invalid_rows_get_their_reason_and_never_stop_the_job(
    settings: Settings, tmp_path: Path
) -> None:
    good = housing_rows(6).drop(columns=["house_id"])
    text = good.astype(object)
    text.loc[1, "MedInc"] = None  # empty cell
    text.loc[2, "MedInc"] = "abc"
    text.loc[3, "Latitude"] = 99.0
    text.loc[4, "AveRooms"] = "inf"
    text.loc[4, "Longitude"] = -200.0
    text.to_csv(tmp_path / "houses.csv", index=False)
    summary = score("housing", tmp_path / "houses.csv", tmp_path / "out", settings=settings)
    out = read(tmp_path / "out")
    assert out["error"].tolist()[1:5] == [
        "MedInc: missing", "MedInc: not a number", "Latitude: above the maximum 42.5",
        "AveRooms: not finite; Longitude: below the minimum -125",
    ]  # fmt: skip
    assert out["error"].isna().tolist() == [True, False, False, False, False, True]
    assert out["prediction"].isna().tolist() == [False, True, True, True, True, False]
    assert summary.invalid == 4 and sum(summary.invalid_by_reason.values()) == 4

    # JSON Lines: values of another type are not numbers, as in a request; a broken line
    # is one invalid row.
    lines = [orjson.dumps(r) for r in good.to_dict("records")]
    lines[0] = lines[0].replace(b'"MedInc":', b'"MedInc":"8.3","x":', 1)
    lines[1] = lines[1].replace(b'"HouseAge":', b'"HouseAge":true,"y":', 1)
    lines[2] = b"{not json"
    (tmp_path / "houses.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = score("housing", tmp_path / "houses.jsonl", tmp_path / "json", keep=[],
                    settings=settings)  # fmt: skip
    errors = read(tmp_path / "json")["error"]
    assert errors[0] == "MedInc: not a number" and errors[1] == "HouseAge: not a number"
    assert errors[2].startswith("MedInc: not a number; HouseAge: not a number")
    assert errors.isna().tolist()[3:] == [True, True, True] and summary.invalid == 3

    with pytest.raises(TooManyInvalidRowsError, match="more than --max-invalid-fraction 0.4"):
        score("housing", tmp_path / "houses.csv", tmp_path / "bound", max_invalid_fraction=0.4,
              settings=settings)  # fmt: skip


def test_a_failed_job_resumes_where_it_stopped(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = housing_rows(50_000, seed=1)
    rows.loc[rows.sample(300, random_state=2).index, "MedInc"] = -1.0
    rows.to_parquet(tmp_path / "in.parquet")
    whole = score("housing", tmp_path / "in.parquet", tmp_path / "whole", chunk_rows=4_000,
                  settings=settings)  # fmt: skip

    real_score, calls = Scorer.score, []

    def failing(self: Scorer, chunk: Chunk) -> tuple[pa.Table, np.ndarray]:
        calls.append(chunk.table.num_rows)
        if len(calls) == 6:
            raise OSError("disk full (simulated)")
        return real_score(self, chunk)

    monkeypatch.setattr(Scorer, "score", failing)
    with pytest.raises(OSError, match="simulated"):
        score("housing", tmp_path / "in.parquet", tmp_path / "resumed", chunk_rows=4_000,
              settings=settings)  # fmt: skip
    written = orjson.loads((tmp_path / "resumed" / MANIFEST).read_bytes())
    assert not written["complete"] and 4 <= len(written["parts"]) <= 5
    monkeypatch.setattr(Scorer, "score", real_score)
    again = score("housing", tmp_path / "in.parquet", tmp_path / "resumed", chunk_rows=4_000,
                  settings=settings)  # fmt: skip
    assert again.resumed_parts == len(written["parts"]) and again.parts == whole.parts == 13
    assert (again.rows, again.invalid, again.batch_id) == (whole.rows, 300, whole.batch_id)
    assert (
        again.invalid_by_reason == whole.invalid_by_reason == {"MedInc: below the minimum 0": 300}
    )
    pd.testing.assert_frame_equal(read(tmp_path / "resumed"), read(tmp_path / "whole"))

    with pytest.raises(ConflictError, match="another job"):
        score("housing", tmp_path / "in.parquet", tmp_path / "resumed", chunk_rows=5_000,
              settings=settings)  # fmt: skip


def test_the_job_is_a_run_in_mlflow_and_an_event_of_the_model(
    settings: Settings, tmp_path: Path
) -> None:
    from prediction_service.api.app import create_app

    housing_rows(1_000).to_csv(tmp_path / "in.csv", index=False)
    summary = score("housing", tmp_path / "in.csv", tmp_path / "out", output_format="csv",
                    settings=settings)  # fmt: skip
    assert len(pd.read_csv(tmp_path / "out" / "part-00000.csv")) == 1_000
    run = mlflow.MlflowClient(settings.effective_tracking_uri).get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["input_digest"] == summary.input_digest
    assert run.data.metrics["rows"] == 1_000 and run.data.metrics["invalid"] == 0
    with TestClient(create_app(settings)) as client:
        events = client.get("/models/housing/events", params={"type": "batch_scored"}).json()
    event = events["events"][0] if isinstance(events, dict) else events[0]
    assert event["details"]["batch_id"] == summary.batch_id
    assert event["details"]["mlflow_run_id"] == summary.mlflow_run_id
    assert event["version"] == summary.version and "1,000 rows" in event["reason"]


def test_the_command_reports_and_exits_by_outcome(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("PREDICT_TRACKING_URI", settings.effective_tracking_uri)
    monkeypatch.setenv("PREDICT_ARTIFACT_ROOT", str(settings.artifact_path))
    monkeypatch.setenv("PREDICT_DATABASE_URL", settings.effective_database_url)
    frame = housing_rows(100)
    frame.loc[:9, "AveOccup"] = 5_000.0
    frame.to_parquet(tmp_path / "in.parquet")
    common = ["housing", str(tmp_path / "in.parquet"), "--specs-dir", str(settings.specs_path)]
    assert score_command.main([*common, str(tmp_path / "a"), "--keep", "house_id"]) == 0
    out = capsys.readouterr()
    assert "scored 100 rows" in out.out and "10  AveOccup: above the maximum 1500" in out.out
    assert "done: 100/100 rows" in out.err  # progress lines when stderr is not a terminal
    code = score_command.main([*common, str(tmp_path / "b"), "--max-invalid-fraction", "0.05"])
    assert code == score_command.EXIT_TOO_MANY_INVALID
    assert "10 of 100 rows are invalid" in capsys.readouterr().err
    assert score_command.main([*common, str(tmp_path / "c"), "--version", "99"]) == 1
    assert "has no version 99" in capsys.readouterr().err
    assert score_command.main([*common, str(tmp_path / "d"), "--keep", "nope"]) == 1
    assert "--keep names columns the input does not have: ['nope']" in capsys.readouterr().err
    assert not math.isnan(read(tmp_path / "a")["prediction"].iloc[-1])
