"""The documentation site: built strict (a broken link or a page outside the nav fails), its
reference pages complete (every setting, metric and spec field, generated from the code),
offline, and rendered by a real headless Chromium (screenshots in the test's folder)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prediction_service.metrics import Metrics
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec
from tests.conftest import ROOT, require_program

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-4000:]
    return out


def text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))


def test_every_setting_metric_and_spec_field_is_in_the_reference(site: Path) -> None:
    settings = text(site / "reference" / "settings.html")
    for name in Settings.model_fields:
        assert f"PREDICT_{name.upper()}" in settings, name
    metrics = text(site / "reference" / "metrics.html")
    for declared in Metrics().declared:
        assert declared.name in metrics and declared.help[:40] in metrics, declared.name
    spec = text(site / "reference" / "spec.html")
    schema = ModelSpec.model_json_schema()
    for part in [schema, *schema["$defs"].values()]:
        for field, prop in part["properties"].items():
            if field in ("source", "digest"):  # set by the loader, not written in a spec
                continue
            assert re.search(rf"\b{field}\b", spec), field
            if "description" in prop:
                assert prop["description"][:30] in spec, field
    http = text(site / "reference" / "http.html")
    for path in ("/predict/iris", "/v2/models/iris/infer", "/invocations", "/retrain"):
        assert path in http, path
    cli = text(site / "reference" / "cli.html")
    assert "--workers" in cli and "--candidates" in cli and "migrate" in cli


def test_the_site_needs_no_internet(site: Path) -> None:
    for page in site.rglob("*.html"):
        html = page.read_text()
        external = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not external, (page.name, external[:3])


def test_chromium_renders_the_home_and_a_reference_page(site: Path, tmp_path: Path) -> None:
    chromium = require_program("chromium")
    for page, heading in (
        ("index.html", "Prediction service"),
        ("reference/settings.html", "Settings"),
    ):
        common = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
        ]  # fmt: skip
        url = (site / page).as_uri()
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        assert re.search(rf"<h1[^>]*>\s*{heading}", dom), dom[:2000]
        shot = tmp_path / (page.replace("/", "-") + ".png")
        subprocess.run(
            [*common, f"--screenshot={shot}", "--window-size=1280,900", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert shot.stat().st_size > 10_000, shot
        print(f"screenshot: {shot}")
