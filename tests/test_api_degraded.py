"""A model that cannot be loaded does not stop the service; the other one serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.training.pipeline import TrainOptions, run_training
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, make_settings

pytestmark = pytest.mark.integration


def test_missing_champion_gives_503_for_that_model_only(tmp_path: Path, specs: dict) -> None:
    settings = make_settings(tmp_path)
    quick = TrainOptions(candidates=("logistic_regression",), cv_folds=2)
    run_training(specs["iris"], settings, quick, progress=lambda _m: None)

    with TestClient(create_app(settings)) as client:
        r = client.post("/predict/housing", json=HOUSING_RECORD)
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert "model 'housing' is not loaded" in detail
        assert "CaliforniaHousingBestModel has no 'champion' version" in detail
        assert (
            client.post("/predict/housing/batch", json={"records": [HOUSING_RECORD]}).status_code
            == 503
        )

        ok = client.post("/predict/iris", json=IRIS_RECORD)
        assert ok.status_code == 200 and ok.json()["prediction"] == "setosa"

        ready = client.get("/ready")
        assert ready.status_code == 503 and "housing" in ready.json()["detail"]
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["models"]["housing"]["loaded"] is False
        assert "no 'champion' version" in health["models"]["housing"]["error"]
        assert health["models"]["iris"]["loaded"] is True
        assert client.get("/models/housing").json()["loaded"] is False
        metrics = client.get("/metrics").text
        assert 'model_loaded{model="housing"} 0.0' in metrics
        assert 'model_loaded{model="iris"} 1.0' in metrics


def test_unreachable_database_at_startup_still_serves(tmp_path: Path, specs: dict) -> None:
    settings = make_settings(tmp_path)
    quick = TrainOptions(candidates=("logistic_regression",), cv_folds=2)
    run_training(specs["iris"], settings, quick, progress=lambda _m: None)
    (tmp_path / "blocker").write_text("a file where the database folder should be")
    broken = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'blocker' / 'x.db'}")
    broken.tracking_uri = settings.tracking_uri

    with TestClient(create_app(broken)) as client:
        assert client.post("/predict/iris", json=IRIS_RECORD).status_code == 200
        assert client.get("/health").json()["database"]["reachable"] is False
