"""Explanations: exact per-feature contributions that add up, checked against LightGBM's own
TreeSHAP, through the core and over HTTP.

The small models of both specs (conftest ``small``): a LightGBM forest for housing, a scaled
logistic regression for iris. Real MLflow store, real SQLite log, a real uvicorn server.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from prediction_service.core import Core
from prediction_service.errors import BatchTooLargeError, NotExplainableError
from prediction_service.predictors import explainers
from prediction_service.predictors.forest import Forest
from prediction_service.registry.store import PREDICTOR_FILE
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, ROOT, small_settings
from tests.live import LiveServer

Small = tuple[Settings, dict[str, TrainingResult]]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("regression", {"n_estimators": 60, "num_leaves": 31, "max_depth": 6}),
        ("binary", {"n_estimators": 30, "num_leaves": 7}),
        ("multiclass", {"n_estimators": 30, "num_leaves": 7}),
    ],
)
@pytest.mark.unit
def test_treeshap_is_lightgbms_own(kind: str, params: dict[str, int]) -> None:
    """Our kernel's TreeSHAP against LightGBM's pred_contrib, on real rows; worst error printed."""
    if kind == "regression":
        frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").sample(4000, random_state=0)
        X, y = frame.drop(columns="MedHouseVal").to_numpy(float), frame["MedHouseVal"]
        model: lgb.LGBMModel = lgb.LGBMRegressor(
            subsample=0.8, subsample_freq=1, verbose=-1, **params
        )
    else:
        frame = pd.read_csv(ROOT / "data" / "iris_raw.csv")
        X, y = frame.iloc[:, :4].to_numpy(float), frame.iloc[:, 4]
        y = (y == y.iloc[0]).astype(int) if kind == "binary" else y
        model = lgb.LGBMClassifier(verbose=-1, **params)
    model.fit(X, y)
    forest = Forest.from_lightgbm(model.booster_)
    assert forest is not None
    ours = forest.contributions(X[:300])
    theirs = model.booster_.predict(X[:300], pred_contrib=True).reshape(ours.shape)
    worst = np.abs(ours - theirs).max()
    adds_up = np.abs(ours.sum(axis=2) - forest.raw(X[:300])).max()
    print(f"{kind}: worst |ours - LightGBM| {worst:.1e}, worst |sum - raw score| {adds_up:.1e}")
    assert worst < 1e-9 and adds_up < 1e-9


@pytest.mark.unit
def test_contributions_add_up_to_each_prediction(core: Core, tmp_path: Path) -> None:
    frame = pd.read_csv(ROOT / "data" / "housing_raw.csv").head(50)
    X = core.predictions.codec("housing").matrix(frame[list(HOUSING_RECORD)].to_numpy(float))
    p, e, explainer = core.predictions.explain("housing", X, "explain", "req-explain")
    assert (explainer.method, explainer.output) == ("tree_shap", "value")
    c = e.values
    names = core.store.spec("housing").model_feature_names  # derived features included
    assert c.shape == (50, 1, len(names) + 1) and len(names) > len(HOUSING_RECORD)
    housing_error = np.abs(c.sum(axis=2)[:, 0] - np.array(p.values)).max()

    iris = pd.read_csv(ROOT / "data" / "iris_raw.csv")
    Xi = core.predictions.codec("iris").matrix(iris.iloc[:, :4].to_numpy(float))
    q, ei, explainer = core.predictions.explain("iris", Xi, "explain")
    assert (explainer.method, explainer.output) == ("linear", "log-odds")
    ci = ei.values
    assert ci.shape == (150, 3, 5)
    assert q.probabilities is not None
    iris_error = np.abs(_softmax(ci.sum(axis=2)) - q.probabilities).max()
    print(f"worst |base + sum - prediction|: housing {housing_error:.1e}, iris {iris_error:.1e}")
    assert housing_error < 1e-6 and iris_error < 1e-9
    # Linear: coefficient times the scaled value, so a feature at its training mean adds 0.
    served = core.store.get("iris")
    assert served.explainer is not None and served.predictor_kind == "portable"

    core.close()
    with sqlite3.connect(tmp_path / "predictions.db") as conn:
        rows = conn.execute(
            "SELECT model, protocol, COUNT(*) FROM predictions GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert rows == [("housing", "explain", 50), ("iris", "explain", 150)]


@pytest.mark.unit
def test_a_version_without_an_exact_explainer_is_refused(core: Core) -> None:
    served = core.store.get("housing")
    core.store.serve(dataclasses.replace(served, explainer=None, unexplained="for this test"))
    X = core.predictions.codec("housing").record(HOUSING_RECORD)
    with pytest.raises(NotExplainableError, match="cannot be explained: for this test") as info:
        core.predictions.explain("housing", X, "explain")
    assert info.value.status_code == 501


@pytest.mark.unit
def test_a_version_from_before_explanations_is_explained_at_load(core: Core) -> None:
    """A forest stored without node counts, or whose stored check no longer holds, has no
    TreeSHAP; the service explains it by exact Shapley values over background rows, drawn
    from the spec's data file when the version stored none, rather than refusing it."""
    served = core.store.get("housing")
    bundle = dict(core.registry.load_run_arrays(served.info.run_id, PREDICTOR_FILE))
    assert explainers.from_bundle(bundle, "regression")[0] is not None
    old = {k: v for k, v in bundle.items() if k not in ("forest_count", "check_contributions")}
    found, why = explainers.from_bundle(old, "regression")
    assert found is None and "without node counts" in why
    tampered = {**bundle, "check_contributions": bundle["check_contributions"] * 1.01}
    assert explainers.from_bundle(tampered, "regression")[0] is None

    spec = core.store.spec("housing")
    info = dataclasses.replace(served.info, run_id=None)  # no stored background either
    explainer, why = core.store.explainer_for(spec, info, old, served.predict)
    assert explainer is not None, why
    assert (explainer.method, explainer.output) == ("exact_shapley", "value")
    X = core.predictions.codec("housing").record(HOUSING_RECORD)
    e = explainer.explain(X)
    assert e.values.shape == (1, 1, len(HOUSING_RECORD) + 1)  # the request's own features
    assert abs(e.values.sum() - served.predict(X)[0]) < 1e-9


@pytest.fixture(scope="module")
def server(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("explain")
    live = LiveServer(small_settings(small, workdir), workdir / "server.log").start()
    yield live
    live.stop()


@pytest.mark.live
def test_explain_over_http(server: LiveServer) -> None:
    h = server.post("/explain/housing", json=HOUSING_RECORD)
    assert h.status_code == 200, h.text
    body = h.json()
    assert set(HOUSING_RECORD) < set(body["contributions"])  # and the derived features
    total = body["base_value"] + sum(body["contributions"].values())
    assert abs(total - body["prediction"]) < 1e-6
    assert (body["method"], body["output"]) == ("tree_shap", "value")
    assert (
        body["additivity_error"] <= body["tolerance"]
        and abs(body["output_value"] - total) <= body["tolerance"]
    )
    predicted = server.post("/predict/housing", json=HOUSING_RECORD).json()
    assert body["prediction"] == predicted["prediction"] and body["version"] == predicted["version"]

    i = server.post("/explain/iris/batch", json={"records": [IRIS_RECORD] * 3}).json()
    assert i["count"] == 3 and i["model"] == "iris"
    item = i["explanations"][0]
    assert item["output"] == "log-odds" and item["prediction"] == "setosa"
    classes = list(item["probabilities"])
    raw = np.array(
        [item["base_value"][k] + sum(item["contributions"][k].values()) for k in classes]
    )
    assert np.abs(raw - np.array([item["output_value"][k] for k in classes])).max() < 1e-9
    assert item["method"] == "linear" and item["additivity_error"] <= item["tolerance"]
    assert np.abs(_softmax(raw) - np.array(list(item["probabilities"].values()))).max() < 1e-9

    bad = server.post("/explain/iris", json={**IRIS_RECORD, "petal_width": "x"})
    assert bad.status_code == 422 and "petal_width" in bad.json()["detail"]
    assert server.post("/explain/wine", json=IRIS_RECORD).status_code == 404
    assert server.metric("predictions_total", model="iris", protocol="explain") == 3
    assert "/explain/housing" in server.get("/openapi.json").json()["paths"]


@pytest.mark.unit
def test_an_explanation_longer_than_a_call_may_take_is_refused_up_front(core: Core) -> None:
    """A call's work must end within half the shutdown's grace (a 2,000-row explanation of
    the housing forest ran past it, and SIGTERM cut it to a 500): the cost is known from
    the load, so the most rows that fit are named before any work is done."""
    served = core.store.get("housing")
    assert served.explain_row_s > 0  # measured at load
    core.predictions.work_limit_s = served.explain_row_s * 100
    rows = core.predictions.codec("housing").matrix([list(HOUSING_RECORD.values())] * 500)
    with pytest.raises(BatchTooLargeError, match=r"send at most (99|100|101) rows"):
        core.predictions.explain("housing", rows, "explain")
    p, e, _ = core.predictions.explain("housing", rows[:50], "explain")
    assert len(p) == 50 and e.values.shape[0] == 50
