"""Every candidate of the shipped specs served as the champion: single-row req/s over HTTP
at c=1, beside its in-process predict time and the path that serves it.

`python bench/candidates.py [--seconds 8] [--model iris]`: each candidate is trained alone
(its spec's own parameters, no gate) into a temporary registry and served by its own
server, one after another; the table gives each one's req/s as a fraction of its spec's
fastest candidate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import BODIES, ROOT, free_port, log, server, warm, wrk  # noqa: E402


def predict_us(env: dict[str, str], spec_dir: Path, model: str) -> float:
    """Median microseconds of one single-row predict of the served form, in this process."""
    os.environ.update(env)
    from prediction_service.metrics import Metrics
    from prediction_service.registry import Registry
    from prediction_service.serving.batching import row_cost
    from prediction_service.serving.model_store import ModelStore
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs

    settings = Settings(specs_dir=spec_dir)
    specs = load_specs(spec_dir)
    store = ModelStore(
        specs, Registry(settings.effective_tracking_uri, settings.artifact_path), Metrics()
    )
    served = store.load_version(model, "1")
    row = np.array([list(BODIES[model].values())], dtype=np.float64)
    return row_cost(served.predict, row, repeat=200) * 1e6


def measure(model: str, seconds: int, tmp: Path) -> list[dict[str, Any]]:
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs
    from prediction_service.training.pipeline import run_training

    source = yaml.safe_load((ROOT / "config" / "models" / f"{model}.yaml").read_text())
    rows = []
    for candidate in source["candidates"]:
        work = tmp / f"{model}-{candidate['name']}"
        spec_dir = work / "specs"
        spec_dir.mkdir(parents=True)
        spec = {**source, "candidates": [candidate], "quality_gate": {"tolerance": 1.0}}
        spec.pop("automation", None)
        (spec_dir / f"{model}.yaml").write_text(yaml.safe_dump(spec))
        env = {
            **os.environ, "PREDICT_HOME": str(ROOT), "PREDICT_SPECS_DIR": str(spec_dir),
            "PREDICT_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "PREDICT_ARTIFACT_ROOT": str(work / "artifacts"),
            "PREDICT_DATABASE_URL": f"sqlite:///{work / 'predictions.db'}",
            "PREDICT_LOGS_DIR": str(work / "logs"),
        }  # fmt: skip
        os.environ.update(env)
        log(f"training {model} {candidate['name']}")
        (trained,) = load_specs(spec_dir).values()
        run_training(trained, Settings(specs_dir=spec_dir), progress=lambda _m: None)
        in_process = predict_us(env, spec_dir, model)
        port = free_port()
        cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
        with server(cmd, "/ready", port, env) as s:
            described = requests.get(f"{s['url']}/models/{model}", timeout=10).json()
            target = f"{s['url']}/predict/{model}"
            warm(target, BODIES[model], 300)
            log(f"{model} {candidate['name']} c=1")
            run = wrk(target, BODIES[model], 1, seconds)
        rows.append({
            "model": model, "candidate": candidate["name"], "estimator": candidate["estimator"],
            "predictor": described.get("predictor"), "predict_us": round(in_process, 1),
            "rps": run["rps"], "p99_ms": run["p99_ms"],
        })  # fmt: skip
    fastest = max(r["rps"] for r in rows)
    for r in rows:
        r["of_fastest"] = round(r["rps"] / fastest, 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per candidate")
    parser.add_argument("--model", choices=sorted(BODIES), help="one spec only")
    args = parser.parse_args()
    lines = [
        "| spec | candidate | served by | predict, 1 row (us) | req/s, c=1 | of the fastest "
        "| p99 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-candidates-") as name:
        for model in [args.model] if args.model else sorted(BODIES):
            for r in measure(model, args.seconds, Path(name)):
                lines.append(
                    f"| {r['model']} | {r['candidate']} ({r['estimator']}) | {r['predictor']} "
                    f"| {r['predict_us']} | {r['rps']:,.0f} | {r['of_fastest']:.2f} "
                    f"| {r['p99_ms']:.2f} |"
                )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
