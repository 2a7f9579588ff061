"""One single-row body per shipped spec (config/models): the first row of its dataset, in
the request's field names. The one source of the bodies every benchmark sends."""

from __future__ import annotations

from pathlib import Path

from prediction_service.serving.codec import example_row
from prediction_service.specs import load_specs

ROOT = Path(__file__).resolve().parents[1]
BODIES: dict[str, dict[str, float]] = {
    name: example_row(spec, ROOT) for name, spec in load_specs(ROOT / "config" / "models").items()
}
