"""The Kubernetes manifests, rendered by the real kubectl (Kustomize) and checked offline.

No cluster runs here, so each overlay is rendered, every built-in object is validated against
the API server's own OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), the
Prometheus Operator objects are validated against the CRD fields they use and compared with
the monitoring config they mirror, the parts
that must agree with each other and with the code are checked to agree, and checkov scans
both renders for policy (security context, probes, limits, RBAC).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from prediction_service.settings import Settings
from tests.conftest import IN_CI, ROOT, require_program

pytestmark = pytest.mark.integration

K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("production", "local")
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still in upstream support when written

# The Prometheus Operator's CRDs are not among kubernetes-validate's schemas: the fields we
# use, with the types and duration pattern of the operator's monitoring.coreos.com/v1 CRDs.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}  # fmt: skip
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name", "namespace"]}
RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string", "minLength": 1},
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRINGS,
        "annotations": STRINGS,
    },
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}


def crd(spec: dict[str, Any]) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 object whose spec has exactly these properties."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": METADATA,
            "spec": {"type": "object", "additionalProperties": False, **spec},
        },
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "PrometheusRule": crd({
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "labels": STRINGS,
                        "rules": {"type": "array", "minItems": 1, "items": RULE},
                    },
                },
            },
        },
    }),
    "ServiceMonitor": crd({
        "required": ["selector", "endpoints"],
        "properties": {
            "jobLabel": {"type": "string"},
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": STRINGS},
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                    },
                },
            },
        },
    }),
}  # fmt: skip

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    kubectl = require_program("kubectl")
    out = {}
    for overlay in OVERLAYS:
        text = subprocess.run(  # noqa: S603 - fixed arguments
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        out[overlay] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def find(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    (match,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return match


def pod_specs(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        spec = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
        if obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]["spec"]


def api_container(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    specs = dict(pod_specs(objects))
    return specs[f"{kind}/{name}"]["containers"][0]


def test_the_generated_copies_are_current() -> None:
    result = subprocess.run(  # noqa: S603
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_the_api_server(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    kinds = sorted(o["kind"] for o in objects)
    print(f"{overlay}: {len(objects)} objects: {', '.join(kinds)}")
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names)
    for obj in objects:
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
            continue
        # Raises with the offending path on an unknown field, a wrong type or a missing field.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "prediction-service", obj["metadata"]


def test_the_operator_objects_mirror_the_monitoring_config(rendered: dict[str, Objects]) -> None:
    objects = rendered["production"]
    groups = []
    for path in sorted((ROOT / "monitoring/prometheus/rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    rule = find(objects, "PrometheusRule")
    assert rule["spec"]["groups"] == groups
    assert len({g["name"] for g in groups}) == len(groups)  # the CRD keys the list by name

    # Our rules and dashboards select job="prediction-api": the ServiceMonitor must produce it.
    assert any('job="prediction-api"' in r["expr"] for g in groups for r in g["rules"])
    monitor = find(objects, "ServiceMonitor")
    service = find(objects, "Service", "prediction-service")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "prediction-api"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}

    dashboards = find(objects, "ConfigMap", "prediction-service-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {
        p.name: p.read_text() for p in (ROOT / "monitoring/grafana/dashboards").glob("*.json")
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_and_its_retrain_jobs_agree(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    cronjob = find(objects, "CronJob")
    assert cronjob["spec"]["suspend"] is True  # a template, never scheduled
    api = api_container(objects, "Deployment", "prediction-service")
    job = api_container(objects, "CronJob", cronjob["metadata"]["name"])
    assert api["image"] == job["image"]
    # Before the API starts, its pod migrates the prediction database with the same image
    # and stores (replicas starting together take turns under the database's lock).
    (migrate,) = dict(pod_specs(objects))["Deployment/prediction-service"]["initContainers"]
    assert migrate["command"] == ["prediction-service", "migrate"]
    assert migrate["image"] == api["image"]
    secrets = [e.get("secretRef", {}).get("name", "") for e in api["envFrom"]]
    assert [e["secretRef"]["name"] for e in migrate["envFrom"]] == [
        name for name in secrets if name.startswith("prediction-service-stores")
    ]
    # The same settings and stores; the auth Secret stays with the API (training needs no token).
    assert job["envFrom"] == [
        e for e in api["envFrom"] if e.get("secretRef", {}).get("name") != "prediction-service-auth"
    ]

    # The specs ConfigMap (hashed name) is the one mounted in both, and holds config/models.
    def models_volume(kind: str, name: str) -> str:
        (volume,) = [
            v for v in dict(pod_specs(objects))[f"{kind}/{name}"]["volumes"] if "configMap" in v
        ]
        return str(volume["configMap"]["name"])

    models = models_volume("Deployment", "prediction-service")
    assert models == models_volume("CronJob", cronjob["metadata"]["name"])
    assert models.startswith("prediction-service-models-")  # the content hash rolls pods out
    assert find(objects, "ConfigMap", models)["data"] == {
        p.name: p.read_text() for p in (ROOT / "config/models").glob("*.yaml")
    }

    # Every setting the env ConfigMap sets is one the service reads, and it names this CronJob.
    (env_ref,) = [e["configMapRef"]["name"] for e in api["envFrom"] if "configMapRef" in e]
    env = find(objects, "ConfigMap", env_ref)["data"]
    fields = {f"PREDICT_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(**{k.removeprefix("PREDICT_").lower(): v for k, v in env.items()})
    assert settings.retrain_backend == "kubernetes"
    assert settings.k8s_job_template == cronjob["metadata"]["name"]
    assert str(settings.specs_dir) in {m["mountPath"] for m in api["volumeMounts"]}
    assert settings.grpc_port in {p["containerPort"] for p in api["ports"]}

    # The API's service account may read that CronJob and manage Jobs, and nothing else.
    role = find(objects, "Role")
    binding = find(objects, "RoleBinding")
    pod = dict(pod_specs(objects))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == [
        pod["Deployment/prediction-service"]["serviceAccountName"]
    ]
    grants = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert grants == {
        ("cronjobs", "get"),
        *(("jobs", v) for v in ("create", "get", "list", "delete")),
        ("jobs/status", "get"),
        ("pods", "list"),
        ("pods/log", "get"),
    }
    (cron_rule,) = [r for r in role["rules"] if r["resources"] == ["cronjobs"]]
    assert cron_rule["resourceNames"] == [cronjob["metadata"]["name"]]
    train_sa = pod[f"CronJob/{cronjob['metadata']['name']}"]["serviceAccountName"]
    assert train_sa != pod["Deployment/prediction-service"]["serviceAccountName"]
    assert find(objects, "ServiceAccount", train_sa)["automountServiceAccountToken"] is False


def test_a_pod_stops_within_its_grace_period(rendered: dict[str, Objects]) -> None:
    """preStop, then uvicorn's drain, then the gRPC drain, must fit before SIGKILL."""
    objects = rendered["production"]
    spec = dict(pod_specs(objects))["Deployment/prediction-service"]
    api = spec["containers"][0]
    args = api["args"]
    graceful = float(args[args.index("--graceful-timeout") + 1])
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    grpc_grace = Settings.model_fields["grpc_grace_s"].default
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful + grpc_grace + 5
    deployment = find(objects, "Deployment", "prediction-service")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert find(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_production_requires_credentials_and_local_does_not(
    rendered: dict[str, Objects],
) -> None:
    def auth(overlay: str) -> dict[str, Any]:
        api = api_container(rendered[overlay], "Deployment", "prediction-service")
        (ref,) = [
            e["secretRef"]
            for e in api["envFrom"]
            if e.get("secretRef", {}).get("name") == "prediction-service-auth"
        ]
        return dict(ref)

    assert auth("production").get("optional", False) is False
    assert auth("local")["optional"] is True
    # Production creates no Secret (you do, see docs/how-to/deploy.md); the local one has no password.
    assert not [o for o in rendered["production"] if o["kind"] == "Secret"]
    namespace = find(rendered["production"], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def checkov() -> str:
    """make install-dev puts checkov in a venv of its own (its pins clash with ours)."""
    path = ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov"
    if path.is_file():
        return str(path)
    message = "checkov is not installed (make install-dev puts it in .venv/tools/checkov)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def test_checkov_finds_no_policy_failure(rendered: dict[str, Objects], tmp_path: Path) -> None:
    program = checkov()
    for overlay, objects in rendered.items():
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objects))
    result = subprocess.run(  # noqa: S603
        [program, "--config-file", str(K8S / ".checkov.yaml"), "-d", str(tmp_path), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    print(f"checkov: {summary}")
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [] and result.returncode == 0, failed or result.stderr
    assert summary["passed"] > 100  # the scan saw the objects
