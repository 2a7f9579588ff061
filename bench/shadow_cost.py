"""What a shadow of 100% of traffic costs the answers: single-row req/s and p99 at c=8 with the
shadow on and off, alternating on one server, and the shadow's own CPU per row.

`python bench/shadow_cost.py [--rounds 3] [--seconds 10]` over a copy of the default
registry (`make train` first; `make bench` runs it on its own). Each model gets a challenger
(a quick retrain, or the previous champion when the retrain is promoted), then the shadow is
switched on and off through the admin API between wrk runs, so both sides share the process,
its warm caches and the machine's moment.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import BODIES, ROOT, free_port, log, server, warm, wrk  # noqa: E402

TOKEN = "bench-shadow-admin-token-0123456789"


def challenger(env: dict[str, str], model: str, registered: str) -> None:
    """A challenger for ``model``: a quick retrain, or the champion it replaced."""
    from prediction_service.registry import Registry

    subprocess.run(
        [sys.executable, f"train_{model}.py", "--quick"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    registry = Registry(env["PREDICT_TRACKING_URI"], Path(env["PREDICT_ARTIFACT_ROOT"]))
    champion = registry.champion_version(registered)
    if registry.alias_version(registered, "challenger") in (None, champion):
        previous = registry.version_info(registered, champion or "").tags["previous_champion"]
        registry.set_alias(registered, "challenger", previous)


def counter(url: str, name: str, model: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+-]+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def measure(env: dict[str, str], rounds: int, seconds: int) -> dict[str, Any]:
    from prediction_service.specs import load_specs

    specs = load_specs(ROOT / "config" / "models")
    for model in BODIES:
        log(f"a challenger for {model}'s shadow")
        challenger(env, model, specs[model].registered_name)
    port = free_port()
    cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
    out: dict[str, Any] = {}
    with server(cmd, "/ready", port, {**env, "PREDICT_ADMIN_TOKEN": TOKEN}) as s:
        url, auth = s["url"], {"Authorization": f"Bearer {TOKEN}"}
        for model, body in BODIES.items():
            target = f"{url}/predict/{model}"
            warm(target, body, 500)
            runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
            cpu = rows = 0.0
            for r in range(rounds):
                for side, percent in (("off", 0), ("on", 100)):
                    requests.post(
                        f"{url}/models/{model}/shadow", json={"percent": percent}, headers=auth,
                        timeout=30,
                    ).raise_for_status()  # fmt: skip
                    before = (counter(url, "shadow_cpu_seconds_total", model),
                              counter(url, "shadow_predictions_total", model))  # fmt: skip
                    log(f"{model} c=8 shadow {side} (round {r + 1})")
                    runs[side].append(wrk(target, body, 8, seconds))
                    if side == "on":
                        cpu += counter(url, "shadow_cpu_seconds_total", model) - before[0]
                        rows += counter(url, "shadow_predictions_total", model) - before[1]
            on, off = (
                {k: median(p[k] for p in runs[side]) for k in ("rps", "p99_ms")}
                for side in ("on", "off")
            )
            out[model] = {
                "off": off, "on": on, "runs": runs,
                "rps_ratio": round(on["rps"] / off["rps"], 3),
                "p99_ratio": round(on["p99_ms"] / off["p99_ms"], 3),
                "shadow_cpu_us_per_row": round(cpu / rows * 1e6, 1) if rows else None,
                "shadow_rows": int(rows),
            }  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| model | req/s, shadow off | req/s, shadow 100% | ratio | p99 off / on (ms) | p99 ratio "
        "| shadow CPU per row |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, r in result.items():
        lines.append(
            f"| {model} | {r['off']['rps']:,.0f} | {r['on']['rps']:,.0f} | {r['rps_ratio']:.2f}x "
            f"| {r['off']['p99_ms']:.2f} / {r['on']['p99_ms']:.2f} | {r['p99_ratio']:.2f}x "
            f"| {r['shadow_cpu_us_per_row']} us ({r['shadow_rows']:,} rows) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs per model")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        shutil.copy2(ROOT / "mlruns" / "mlflow.db", Path(tmp) / "mlflow.db")
        env = {
            **os.environ,
            "PREDICT_HOME": str(ROOT),
            "PREDICT_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            "PREDICT_ARTIFACT_ROOT": str(ROOT / "mlruns" / "artifacts"),
            "PREDICT_DATABASE_URL": f"sqlite:///{Path(tmp) / 'predictions.db'}",
            "PREDICT_LOGS_DIR": str(Path(tmp) / "logs"),
        }
        print(table(measure(env, args.rounds, args.seconds)))


if __name__ == "__main__":
    main()
