"""The core without HTTP: build_core, predictions as typed results, the log, lifecycle.

Small models (see ``small`` in conftest), a real MLflow store and a real SQLite log.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from prediction_service.core import Core, build_core
from prediction_service.errors import NotFoundError, UnknownModelError
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, small_settings

pytestmark = pytest.mark.unit

Small = tuple[Settings, dict[str, TrainingResult]]


def test_a_prediction_is_a_typed_result_and_a_logged_row(
    small: Small, core: Core, tmp_path: Path
) -> None:
    X = core.predictions.codec("iris").record(IRIS_RECORD)
    p = core.predictions.predict("iris", X, "native", request_id="req-1")
    assert p.model == "iris" and p.registered_name == "IrisBestModel" and p.version == "1"
    assert p.values == ["setosa"] and p.classes == ("setosa", "versicolor", "virginica")
    assert p.probabilities is not None and p.probabilities.shape == (1, 3)
    assert len(p.ids) == 1 and len(p.ids[0]) == 32 and p.latency_ms > 0

    rows = np.array([list(HOUSING_RECORD.values())] * 5)
    h = core.predictions.predict("housing", core.predictions.codec("housing").matrix(rows), "v2")
    native = core.registry.load_model("CaliforniaHousingBestModel", h.version)
    np.testing.assert_array_equal(h.values, native.predict(rows))  # bit-identical
    assert h.probabilities is None and len(set(h.ids)) == 5

    core.close()
    db = tmp_path / "predictions.db"
    with sqlite3.connect(db) as conn:
        logged = conn.execute(
            "SELECT model, protocol, request_id, COUNT(*) FROM predictions GROUP BY 1, 2, 3"
        ).fetchall()
    assert sorted(logged) == [("housing", "v2", None, 5), ("iris", "native", "req-1", 1)]


def test_unknown_models_and_versions_are_named(core: Core) -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'wine'; known models: housing"):
        core.predictions.codec("wine")
    X = core.predictions.codec("iris").record(IRIS_RECORD)
    with pytest.raises(NotFoundError, match="iris version '7' is not served"):
        core.predictions.predict("iris", X, "v2", version="7")
    assert core.predictions.predict("iris", X, "v2", version="1").version == "1"


def test_metrics_count_each_protocol_once(core: Core) -> None:
    X = core.predictions.codec("iris").matrix([list(IRIS_RECORD.values())] * 3)
    for protocol in ("native", "v2", "v2_grpc", "mlflow"):
        core.predictions.predict("iris", X, protocol)
    text = core.metrics.exposition()[0].decode()
    for protocol in ("native", "v2", "v2_grpc", "mlflow"):
        assert f'predictions_total{{model="iris",protocol="{protocol}",version="1"}} 3.0' in text


def test_start_is_idempotent_and_reports_readiness(core: Core) -> None:
    core.start()
    assert core.store.not_ready() is None
    assert core.database_reachable()


def test_not_ready_names_the_missing_champion(tmp_path: Path, small: Small) -> None:
    empty = small_settings(small, tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    core = build_core(empty)
    core.start()
    try:
        why = core.store.not_ready() or ""
        assert "housing: LookupError: CaliforniaHousingBestModel has no 'champion'" in why
    finally:
        core.close()
