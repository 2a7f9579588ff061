"""/docs renders in a real headless Chromium with no internet: assets come from the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.live import LiveServer

pytestmark = pytest.mark.live


def test_docs_render_operations_offline(live: LiveServer, tmp_path: Path) -> None:
    chromium = require_program("chromium")
    html = live.get("/docs").text
    assert "cdn" not in html.lower() and "/static/docs/swagger-ui-bundle.js" in html
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{live.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # Swagger UI builds these only after fetching its JS bundle and /openapi.json.
    assert "swagger-ui" in dom and "opblock" in dom
    for path in ("/predict/housing", "/predict/iris", "/predict/iris/batch", "/health"):
        assert f'data-path="{path}"' in dom, path
