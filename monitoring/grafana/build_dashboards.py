"""Generate the Grafana dashboards: `python monitoring/grafana/build_dashboards.py`.

The JSON in dashboards/ is committed; a test checks it matches this script's output and
runs every query against a real Prometheus scraping the real API.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dashboards")
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
SINGLE = 'route!~".*/batch"'


class Board:
    """Panels laid out left to right in rows of 24 grid units."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = self._row_h = 0

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        unit: str = "short",
        width: int = 8,
        height: int = 8,
        description: str = "",
        thresholds: list[tuple[float | None, str]] | None = None,
    ) -> None:
        if self._x + width > 24:
            self._newline()
        steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
        self.panels.append(
            {
                "type": kind,
                "title": title,
                "description": description,
                "id": len(self.panels) + 1,
                "datasource": DATASOURCE,
                "gridPos": {"h": height, "w": width, "x": self._x, "y": self._y},
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                    },
                    "overrides": [],
                },
                "options": (
                    {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
                    if kind == "stat"
                    else {"legend": {"displayMode": "table", "placement": "bottom"}}
                ),
                # Latency histograms carry trace ids as exemplars (with tracing on): shown
                # as points that link to the trace (the datasource's exemplar link).
                "targets": [
                    {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": e, "legendFormat": lg,
                     "exemplar": "_bucket" in e}
                    for i, (e, lg) in enumerate(targets)
                ],  # fmt: skip
            }
        )
        self._x += width
        self._row_h = max(self._row_h, height)

    def annotation(self, name: str, expr: str, title: str, tags: str) -> None:
        """Marks on every time series where ``expr`` has a sample (Prometheus annotations)."""
        self.annotations.append(
            {
                "name": name,
                "datasource": DATASOURCE,
                "enable": True,
                "iconColor": "purple",
                "expr": expr,
                "step": "30s",
                "titleFormat": title,
                "tagKeys": tags,
                "useValueForTime": False,
            }
        )

    def model_variable(self) -> None:
        self.variables.append(
            {
                "name": "model",
                "label": "Model",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(model_loaded, model)", "refId": "model"},
                "definition": "label_values(model_loaded, model)",
                "refresh": 2,
                "includeAll": False,
                "multi": False,
                "sort": 1,
            }
        )

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["prediction-service"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": self.annotations},
            "panels": self.panels,
        }


def service_overview() -> Board:
    b = Board(
        "prediction-service-overview",
        "Prediction service: overview",
        "Is the service healthy? Traffic, errors, latency, saturation and the prediction log.",
    )
    b.row("Health")
    b.panel("API up", [('min(up{job="prediction-api"})', "up")], kind="stat", width=4, height=4,
            thresholds=[(None, "red"), (1, "green")])  # fmt: skip
    b.panel("Models loaded", [("sum(model_loaded)", "loaded")], kind="stat", width=4, height=4)
    b.panel("Requests / s", [(f"sum(rate(http_requests_total[{RATE}]))", "req/s")],
            kind="stat", unit="reqps", width=4, height=4)  # fmt: skip
    b.panel(
        "5xx ratio",
        [(f'(sum(rate(http_requests_total{{status=~"5.."}}[{RATE}])) or vector(0))'
          f" / sum(rate(http_requests_total[{RATE}]))", "5xx")],
        kind="stat", unit="percentunit", width=4, height=4,
        thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
    )  # fmt: skip
    b.panel("p99 latency (single records)", [("max(job:http_request_duration_seconds:p99)", "p99")],
            kind="stat", unit="s", width=4, height=4,
            thresholds=[(None, "green"), (0.1, "orange"), (0.25, "red")])  # fmt: skip
    b.panel("Workers", [("sum(service_workers)", "workers")], kind="stat", width=4, height=4)

    b.row("Traffic and errors")
    b.panel("Requests by route and status",
            [(f"sum by (route, status) (rate(http_requests_total[{RATE}]))", "{{route}} {{status}}")],
            unit="reqps", width=12)  # fmt: skip
    b.panel(
        "Error ratio by class",
        [
            (f'sum(rate(http_requests_total{{status=~"4.."}}[{RATE}])) / sum(rate(http_requests_total[{RATE}]))', "4xx"),
            (f'(sum(rate(http_requests_total{{status=~"5.."}}[{RATE}])) or vector(0)) / sum(rate(http_requests_total[{RATE}]))', "5xx"),
            ("max(job:http_errors_5xx:ratio_rate5m)", "5xx (5m, recorded)"),
        ],
        unit="percentunit", width=12,
    )  # fmt: skip

    b.row("Latency and saturation")
    b.panel(
        "Latency quantiles (single records)",
        [(f"histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{SINGLE}}}[{RATE}])))", f"p{int(q * 100)}")
         for q in (0.5, 0.9, 0.99)],
        unit="s", width=8,
    )  # fmt: skip
    b.panel(
        "Latency p99 by route",
        [(f"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[{RATE}])))", "{{route}}")],
        unit="s", width=8,
    )  # fmt: skip
    b.panel("Requests in flight", [("sum(http_requests_in_flight)", "in flight")], width=8)
    b.panel("CPU (cores)", [(f"sum(rate(service_cpu_seconds_total[{RATE}]))", "cpu")],
            unit="short", width=8)  # fmt: skip
    b.panel("Resident memory", [("sum(service_resident_memory_bytes)", "rss")],
            unit="bytes", width=8)  # fmt: skip
    b.panel(
        "Recorded request rate and latency",
        [("sum(job:http_requests:rate5m)", "req/s (5m)"),
         ("max(job:http_request_duration_seconds:p50)", "p50 (5m)"),
         ("max(job:http_request_duration_seconds:p90)", "p90 (5m)")],
        width=8,
    )  # fmt: skip

    b.row("Prediction log")
    b.panel(
        "Prediction-log rows",
        [(f"sum(rate(prediction_log_written_total[{RATE}]))", "written/s"),
         (f"sum(rate(prediction_log_write_failures_total[{RATE}]))", "failed/s"),
         (f"sum(rate(prediction_log_dropped_total[{RATE}]))", "dropped/s")],
        unit="short", width=12,
    )  # fmt: skip
    b.panel("Write queue depth", [("sum(prediction_log_queue_depth)", "queued rows")], width=12)
    return b


def model_detail() -> Board:
    m = 'model="$model"'
    b = Board(
        "prediction-service-model",
        "Prediction service: model",
        "How one model and its versions behave: traffic, latency, outputs, live quality, drift.",
    )
    b.model_variable()
    b.row("Serving")
    b.panel("Serving version", [(f"max by (version) (model_version_info{{{m}}} == 1)", "v{{version}}")],
            kind="stat", width=6, height=4)  # fmt: skip
    b.panel("Loaded", [(f"min(model_loaded{{{m}}})", "loaded")], kind="stat", width=6, height=4,
            thresholds=[(None, "red"), (1, "green")])  # fmt: skip
    b.panel("Challenger traffic", [(f"max(model_challenger_traffic_percent{{{m}}})", "challenger %")],
            kind="stat", unit="percent", width=6, height=4)  # fmt: skip
    b.panel("Version swaps (1h)", [(f"sum(increase(model_swaps_total{{{m}}}[1h]))", "swaps")],
            kind="stat", width=6, height=4)  # fmt: skip

    b.row("Traffic and latency")
    b.panel("Predictions by version", [(f"sum by (version) (rate(predictions_total{{{m}}}[{RATE}]))", "v{{version}}")],
            unit="short", width=8)  # fmt: skip
    b.panel(
        "Model latency by version (p50, p99)",
        [(f"histogram_quantile({q}, sum by (le, version) (rate(prediction_duration_seconds_bucket{{{m}, kind=\"single\"}}[{RATE}])))", f"p{int(q * 100)} v{{{{version}}}}")
         for q in (0.5, 0.99)]
        + [("max(model:prediction_duration_seconds:p99{" + m + "})", "p99 (5m, recorded)")],
        unit="s", width=8,
    )  # fmt: skip
    b.panel("Errors by reason", [(f"sum by (reason) (rate(prediction_errors_total{{{m}}}[{RATE}]))", "{{reason}}")],
            unit="short", width=8)  # fmt: skip

    b.row("Outputs")
    b.panel("Class distribution (classifiers)",
            [(f"sum by (class, version) (rate(predicted_class_total{{{m}}}[{RATE}]))", "{{class}} v{{version}}")],
            unit="short", width=8)  # fmt: skip
    b.panel(
        "Predicted value quantiles (regressors)",
        [(f"histogram_quantile({q}, sum by (le, version) (rate(prediction_value_bucket{{{m}}}[{RATE}])))", f"p{int(q * 100)} v{{{{version}}}}")
         for q in (0.1, 0.5, 0.9)],
        width=8,
    )  # fmt: skip
    b.panel(
        "Confidence (classifiers)",
        [(f"histogram_quantile(0.5, sum by (le, version) (rate(prediction_confidence_bucket{{{m}}}[{RATE}])))", "median v{{version}}"),
         (f'sum by (version) (rate(prediction_confidence_bucket{{{m}, le="0.6"}}[{RATE}])) / sum by (version) (rate(prediction_confidence_count{{{m}}}[{RATE}]))', "share below 0.6 v{{version}}")],
        unit="percentunit", width=8,
    )  # fmt: skip

    b.row("Live quality (from feedback)")
    b.panel(
        "Live quality by version",
        [(f"model_live_quality{{{m}}}", "{{metric}} v{{version}}"),
         (f"max by (metric, bound) (model_live_quality_threshold{{{m}}})", "{{metric}} {{bound}} (spec)")],
        width=12,
    )  # fmt: skip
    b.panel("Feedback received", [(f"sum by (version) (rate(feedback_total{{{m}}}[{RATE}]))", "v{{version}}")],
            unit="short", width=12)  # fmt: skip

    b.row("Drift (recent traffic vs training data)")
    b.panel("Feature PSI", [(f"max by (feature) (feature_drift_psi{{{m}}})", "{{feature}}")], width=8,
            thresholds=[(None, "green"), (0.1, "orange"), (0.2, "red")])  # fmt: skip
    b.panel(
        "Feature KS p-value",
        [(f"min by (feature) (feature_drift_ks_pvalue{{{m}}})", "{{feature}}")],
        width=8,
    )
    b.panel(
        "Drifted features and prediction drift",
        [(f"sum(feature_drift_detected{{{m}}})", "drifted features"),
         (f"max(prediction_drift_psi{{{m}}})", "prediction PSI"),
         (f"max(drift_window_rows{{{m}}})", "window rows")],
        width=8,
    )  # fmt: skip

    b.row("Retraining")
    b.panel("Retrain jobs (1h)", [(f"sum by (status) (increase(retrain_runs_total{{{m}}}[1h]))", "{{status}}")],
            width=8)  # fmt: skip
    b.panel("Retrain running", [(f"max(retrain_in_progress{{{m}}})", "running")], width=8)
    b.panel("Mean retrain duration",
            [(f"sum(retrain_duration_seconds_sum{{{m}}}) / sum(retrain_duration_seconds_count{{{m}}})", "mean")],
            unit="s", width=8)  # fmt: skip

    # Each automation or admin decision (GET /models/{model}/events says why) as a mark.
    b.annotation("Model events", f"sum by (type) (increase(model_events_total{{{m}}}[1m])) > 0",
                 "{{type}}", "type")  # fmt: skip
    b.row("Automation (GET /models/$model/events has the reasons)")
    b.panel("Events (1h)", [(f"sum by (type) (increase(model_events_total{{{m}}}[1h]))", "{{type}}")],
            width=8)  # fmt: skip
    b.panel("Canary: labelled predictions per arm", [(f"max by (arm) (canary_labels{{{m}}})", "{{arm}}"),
            (f"max(canary_active{{{m}}})", "canary running")], width=8)  # fmt: skip
    b.panel("Canary: live quality per arm",
            [(f"max by (arm, metric) (canary_live_quality{{{m}}})", "{{metric}} {{arm}}")],
            width=8)  # fmt: skip
    b.row("Shadow (a copy of the requests, answered by the champion)")
    b.panel("Shadow rows predicted and dropped",
            [(f"sum by (version) (rate(shadow_predictions_total{{{m}}}[{RATE}]))", "v{{version}} predicted"),
             (f"sum(rate(shadow_dropped_total{{{m}}}[{RATE}]))", "dropped")], unit="ops", width=8)  # fmt: skip
    b.panel("Shadow agreement with the champion (last hour)",
            [(f"max by (measure) (shadow_agreement{{{m}}})", "{{measure}}")], width=8)  # fmt: skip
    b.panel("Shadow: labelled pairs and live quality per arm",
            [(f"max(shadow_labels{{{m}}})", "labelled pairs"),
             (f"max by (arm, metric) (shadow_live_quality{{{m}}})", "{{metric}} {{arm}}"),
             (f"max(shadow_active{{{m}}})", "shadow running")], width=8)  # fmt: skip
    b.panel("Shadow CPU per row",
            [(f"sum(rate(shadow_cpu_seconds_total{{{m}}}[{RATE}])) / "
              f"sum(rate(shadow_predictions_total{{{m}}}[{RATE}]))", "seconds per row")],
            unit="s", width=8)  # fmt: skip
    return b


BOARDS = {"service-overview.json": service_overview, "model-detail.json": model_detail}


def render() -> dict[str, str]:
    return {name: json.dumps(build().json(), indent=2) + "\n" for name, build in BOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python {Path(__file__).name}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
