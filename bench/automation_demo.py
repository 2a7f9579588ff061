"""Leave the service running with automation on and watch it decide: `python bench/automation_demo.py`.

Copies the shipped specs with a schedule trigger and a canary rollout into a throw-away
home, trains both models, starts the API, and plays the clients for ``--seconds``: each
predicts a random dataset row and sends back its true value as feedback. Nobody calls an
admin route. Then it prints every model's events, oldest first, and the version serving.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from run import free_port, server  # noqa: E402

from prediction_service.data import load_dataset  # noqa: E402
from prediction_service.specs import load_specs  # noqa: E402


def automation(schedule_s: float) -> dict[str, Any]:
    return {
        "triggers": {"schedule_s": schedule_s, "drift": {"consecutive_checks": 3}},
        "cooldown_s": schedule_s * 2 / 3,
        "training_data": {"include_feedback": True},
        "rollout": {"mode": "canary", "canary_percent": 20, "min_labels": 100,
                    "max_duration_s": 900},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=400, help="how long the clients run")
    parser.add_argument("--schedule", type=float, default=90, help="automation schedule_s")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="automation-demo-"))
    (home / "specs").mkdir()
    for path in (ROOT / "config" / "models").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["data"]["path"] = str(ROOT / raw["data"]["path"])
        raw["automation"] = automation(args.schedule)
        (home / "specs" / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    token = "demo-" + os.urandom(12).hex()
    env = {
        **os.environ,
        "PREDICT_HOME": str(home),
        "PREDICT_SPECS_DIR": str(home / "specs"),
        "PREDICT_ADMIN_TOKEN": token,
        "PREDICT_AUTOMATION_INTERVAL_S": "5",
        "PREDICT_RELOAD_INTERVAL_S": "5",
        "PREDICT_DRIFT_INTERVAL_S": "10",
    }
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "prediction_service.training"], env=env, cwd=home,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    print(f"trained both models in {time.monotonic() - started:.0f} s, in {home}", flush=True)
    port = free_port()
    cmd = [sys.executable, str(ROOT / "run_api.py"), "--port", str(port)]
    # Each model's dataset as its spec reads it: features by request name, true values.
    data = {
        name: load_dataset(spec, spec.data_file(ROOT))
        for name, spec in load_specs(home / "specs").items()
    }
    rng = random.Random(1)
    with server(cmd, "/ready", port, env) as s:
        url, n = s["url"], 0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            for model, dataset in data.items():
                i = rng.randrange(len(dataset))
                features, truth = dataset.X.iloc[i].to_dict(), dataset.y.iloc[i]
                out = requests.post(f"{url}/predict/{model}", json=features, timeout=30).json()
                feedback = {"prediction_id": out["prediction_id"], "actual": truth}
                requests.post(f"{url}/feedback", json=feedback, timeout=30)
            n += 1
        print(f"{n} predictions of each model, each with its ground truth")
        for model in data:
            auth = {"Authorization": f"Bearer {token}"}
            events = requests.get(f"{url}/models/{model}/events", headers=auth, timeout=30)
            print(f"\n{model} (oldest first):")
            for e in reversed(events.json()["events"]):
                print(
                    f"  {e['at'][11:19]}  {e['type']:<18} v{e['version'] or '-':<3} {e['reason']}"
                )
            serving = requests.get(f"{url}/models/{model}", timeout=30).json()["version"]
            print(f"  serving: version {serving}")


if __name__ == "__main__":
    main()
