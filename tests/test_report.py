"""The training report: real figures and a page naming each of them, logged to the run of
each small model's training (conftest ``small``) and linked from ``GET /models/{model}``."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import mlflow
import pytest

from prediction_service.api.routes.models import describe
from prediction_service.core import build_core
from prediction_service.registry.store import REPORT_FILE
from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import small_settings

pytestmark = pytest.mark.unit

Small = tuple[Settings, dict[str, TrainingResult]]
FIGURES = {
    "housing": {"predicted_vs_actual.png", "residuals_vs_predicted.png", "residual_histogram.png",
                "cv_scores.png", "feature_importance.png", "versus_champion.png"},
    "iris": {"confusion_matrix.png", "roc.png", "precision_recall.png", "cv_scores.png",
             "feature_importance.png", "versus_champion.png"},
}  # fmt: skip


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("model", ["housing", "iris"])
def test_each_training_logs_a_report_with_its_figures(
    small: Small, model: str, tmp_path: Path
) -> None:
    settings, results = small
    mlflow.set_tracking_uri(settings.effective_tracking_uri)
    folder = Path(
        mlflow.artifacts.download_artifacts(
            run_id=results[model].run_id, artifact_path=str(Path(REPORT_FILE).parent),
            dst_path=str(tmp_path),
        )
    )  # fmt: skip
    pngs = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert set(pngs) == FIGURES[model]
    for name, data in pngs.items():
        assert png_size(data) == (640, 480), name
        assert len(data) > 5000, name  # drawn, not blank
    page = (folder / "report.md").read_text()
    assert set(re.findall(r"\]\(([\w.]+\.png)\)", page)) == FIGURES[model]
    assert f"version {results[model].version}" in page
    metric = results[model].metric
    assert f"| {metric} | {results[model].test_metrics[metric]:.4f} |" in page


def test_the_served_version_links_its_report(small: Small, tmp_path: Path) -> None:
    core = build_core(small_settings(small, tmp_path))
    core.start()
    try:
        info = describe(core, "iris")
        assert info.report == f"runs:/{info.run_id}/{REPORT_FILE}"
    finally:
        core.close()
