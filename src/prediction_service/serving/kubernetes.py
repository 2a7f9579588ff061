"""Retrain jobs as Kubernetes Jobs (``PREDICT_RETRAIN_BACKEND=kubernetes``).

The API pod never trains. Each retrain job becomes a ``batch/v1`` Job copied from the
``jobTemplate`` of a suspended CronJob (``PREDICT_K8S_JOB_TEMPLATE``, shipped in
``deploy/kubernetes/base/retrain-template.yaml``), the way ``kubectl create job --from=cronjob/``
does, so the image, settings, Secrets and resources are the manifests' and Kustomize keeps
them in step with the Deployment. The Job's container runs ``prediction-service train MODEL
--job-id ID``, which writes its outcome to the job's row; this launcher reads the Job's status
back until it completes or fails. Jobs outlive the pod that created them: a restarted pod
watches the unfinished ones again.

Talks to the API server through the official ``kubernetes`` client, with raw JSON bodies so
the Job sent is exactly the template's, changed only where this module says.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from prediction_service import tracing
from prediction_service.errors import ServiceError
from prediction_service.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
JOB_ID_LABEL = "prediction-service/job-id"
MODEL_ANNOTATION = "prediction-service/model"
LOG_LINES = 500  # of a finished Job's pod output, kept in the job's log file


class KubernetesLauncher:
    """Creates one Job per retrain job and polls its status until it ends."""

    detached = True

    def __init__(self, api_client: Any, namespace: str, template: str, poll_s: float) -> None:
        from kubernetes import client

        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.template = template
        self.poll_s = poll_s
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesLauncher:
        """In a pod: the pod's service account and namespace; elsewhere: the kubeconfig."""
        from kubernetes import client, config

        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
            else:
                config.load_kube_config()
        except Exception as exc:  # noqa: BLE001 - the client raises several kinds
            raise ServiceError(
                "PREDICT_RETRAIN_BACKEND=kubernetes but no cluster configuration was found "
                f"(in-cluster service account or kubeconfig): {exc}"
            ) from exc
        namespace = settings.k8s_namespace
        if not namespace and NAMESPACE_FILE.is_file():
            namespace = NAMESPACE_FILE.read_text().strip()
        return cls(
            client.ApiClient(),
            namespace or "default",
            settings.k8s_job_template,
            settings.k8s_poll_s,
        )

    def job_name(self, job_id: str) -> str:
        return f"{self.template[:46]}-{job_id[:16]}"  # within the 63 characters of a label

    def build_job(self, job_id: str, args: list[str], template: dict[str, Any]) -> dict[str, Any]:
        """The Job for one retrain: the CronJob's jobTemplate, named, labelled, with our args."""
        spec = copy.deepcopy(template["spec"]["jobTemplate"])
        meta = spec.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), JOB_ID_LABEL: job_id}
        pod = spec["spec"]["template"]
        pod.setdefault("metadata", {})
        pod["metadata"]["labels"] = {**(pod["metadata"].get("labels") or {}), JOB_ID_LABEL: job_id}
        container = pod["spec"]["containers"][0]
        container["args"] = args
        trace = [{"name": k, "value": v} for k, v in tracing.child_env().items()]
        if trace:  # the template's env stays untouched unless there is a trace to continue
            env = [e for e in container.get("env") or [] if e.get("name") != "TRACEPARENT"]
            container["env"] = env + trace
        model = args[1] if len(args) > 1 else ""
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.job_name(job_id),
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {
                    **(meta.get("annotations") or {}),
                    MODEL_ANNOTATION: model,
                    "cronjob.kubernetes.io/instantiate": "manual",
                },
            },
            "spec": spec["spec"],
        }

    def launch(self, job_id: str, args: list[str], log_file: Path) -> None:
        template = self._call(self.batch.read_namespaced_cron_job, self.template, self.namespace)
        job = self.build_job(job_id, args, template)
        self._call(self.batch.create_namespaced_job, self.namespace, job)
        log.info("retrain job %s: created Kubernetes Job %s", job_id, job["metadata"]["name"])

    def wait(self, job_id: str, log_file: Path) -> str | None:
        from kubernetes.client.exceptions import ApiException

        name = self.job_name(job_id)
        while not self._stop.wait(self.poll_s):
            try:
                job = self._call(self.batch.read_namespaced_job_status, name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return f"Kubernetes Job {name} no longer exists"
                log.warning("reading Kubernetes Job %s: %s (will retry)", name, exc.reason)
                continue
            except Exception as exc:  # noqa: BLE001 - the API server may be briefly away
                log.warning("reading Kubernetes Job %s: %s (will retry)", name, exc)
                continue
            ended = job_end(job.get("status") or {})
            if ended is not None:
                self._save_log(name, log_file)
                return None if ended == "" else f"Kubernetes Job {name} failed: {ended}"
        return None  # stopping: the Job runs on; a restarted service watches it again

    def _save_log(self, name: str, log_file: Path) -> None:
        """The output of the Job's last pod, into the job's log file (what ``log_tail`` and
        the progress line read for local jobs). Best effort: the pod may be gone."""
        try:
            pods = self._call(
                self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={name}"
            )
            items = pods.get("items") or []
            if not items:
                return
            pod = max(items, key=lambda p: p["metadata"].get("creationTimestamp") or "")
            text = self.core.read_namespaced_pod_log(
                pod["metadata"]["name"], self.namespace, tail_lines=LOG_LINES,
                _preload_content=False,
            ).data  # fmt: skip
            log_file.write_bytes(text)
        except Exception as exc:  # noqa: BLE001 - the outcome is in the database anyway
            log.warning("could not read the log of Kubernetes Job %s: %s", name, exc)

    def progress(self, job_id: str) -> str | None:
        name = self.job_name(job_id)
        return f"running as Kubernetes Job {self.namespace}/{name} (kubectl logs job/{name})"

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A client call with the JSON as sent and received, not the client's model classes."""
        response = method(*args, **kwargs, _preload_content=False)
        return dict(json.loads(response.data))


def job_end(status: dict[str, Any]) -> str | None:
    """None while the Job runs; "" when it completed; else why it failed."""
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    if "Complete" in conditions or status.get("succeeded"):
        return ""
    failed = conditions.get("Failed")
    if failed or status.get("failed"):
        failed = failed or {}
        reason = failed.get("reason") or "the pod failed"
        message = failed.get("message")
        return f"{reason}: {message}" if message else reason
    return None
