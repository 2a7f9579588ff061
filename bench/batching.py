"""Adaptive batching, with and without, in alternating wrk runs at c=1, 8, 32 and 64.

`python bench/batching.py [--rounds 3] [--seconds 8] [--trees 3000]`:

- **heavy**: a LightGBM of ``--trees`` trees over the housing data (trained here, into a
  temporary registry), whose one-row predict costs about as much as the rest of a request.
  Two servers over the same version, one with ``serving.batching`` in its spec and one
  without; their wrk runs alternate, so both share the machine's moment.
- **shipped**: the two shipped champions (``make train`` first), batched with
  ``min_row_cost_us: 0`` (they predict in a few microseconds, so the default would serve them
  unbatched) against the same spec without batching.

For each batched run it reads the server's own ``prediction_batch_rows`` histogram: model
calls per second and rows per call, where the gain (or the loss) comes from.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from typing import Any

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import BODIES, ROOT, free_port, log, server, warm, wrk  # noqa: E402

BATCHING = {"max_batch_size": 64, "max_latency_ms": 2.0}
CONCURRENCY = (1, 8, 32, 64)


def spec_dirs(tmp: Path, specs: dict[str, dict[str, Any]], force: bool) -> tuple[Path, Path]:
    """Two spec folders, the same specs without and with ``serving.batching``."""
    off, on = tmp / "specs-off", tmp / "specs-on"
    for folder in (off, on):
        folder.mkdir()
    for name, spec in specs.items():
        (off / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        batching = {**BATCHING, **({"min_row_cost_us": 0} if force else {})}
        (on / f"{name}.yaml").write_text(
            yaml.safe_dump({**spec, "serving": {"batching": batching}})
        )
    return off, on


def heavy_spec(trees: int) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "config" / "models" / "housing.yaml").read_text())
    lightgbm = next(c for c in spec["candidates"] if c["estimator"] == "lightgbm_regressor")
    lightgbm["params"].update(n_estimators=trees, learning_rate=0.02)
    spec["candidates"] = [lightgbm]
    spec["split"]["cv_folds"] = 2
    spec["quality_gate"] = {"tolerance": 1.0}
    spec.pop("automation", None)
    return spec


def train(env: dict[str, str], spec_dir: Path) -> None:
    os.environ.update(env)
    from prediction_service.settings import Settings
    from prediction_service.specs import load_specs
    from prediction_service.training.pipeline import run_training

    settings = Settings(specs_dir=spec_dir)
    for spec in load_specs(spec_dir).values():
        log(f"training {spec.name} ({spec.candidates[0].params.get('n_estimators')} trees)")
        run_training(spec, settings, progress=lambda _m: None)


def batch_rows(url: str, model: str) -> tuple[float, float]:
    """The batched model's calls and rows so far (its prediction_batch_rows histogram)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    values = []
    for name in ("count", "sum"):
        pattern = rf'^prediction_batch_rows_{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+-]+)$'
        values.append(sum(float(v) for v in re.findall(pattern, text, re.M)))
    return values[0], values[1]


def compare(
    env: dict[str, str], dirs: tuple[Path, Path], models: list[str], rounds: int, seconds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        urls = {}
        for side, folder in zip(("off", "on"), dirs):
            port = free_port()
            side_env = {
                **env, "PREDICT_SPECS_DIR": str(folder),
                "PREDICT_DATABASE_URL": f"sqlite:///{folder / 'predictions.db'}",
                "PREDICT_LOGS_DIR": str(folder / "logs"),
            }  # fmt: skip
            cmd = [sys.executable, "run_api.py", "--port", str(port), "--log-level", "warning"]
            urls[side] = stack.enter_context(server(cmd, "/ready", port, side_env))["url"]
        for side, url in urls.items():
            for model in models:
                described = requests.get(f"{url}/models/{model}", timeout=10).json()
                log(f"{model}, batching {side}: {described.get('batching')}")
        for model in models:
            body = BODIES[model]
            for url in urls.values():
                warm(f"{url}/predict/{model}", body, 300)
            for c in CONCURRENCY:
                runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
                calls = rows = 0.0
                for r in range(rounds):
                    for side in ("off", "on"):
                        url = urls[side]
                        before = batch_rows(url, model)
                        log(f"{model} c={c} batching {side} (round {r + 1})")
                        runs[side].append(wrk(f"{url}/predict/{model}", body, c, seconds))
                        after = batch_rows(url, model)
                        calls, rows = calls + after[0] - before[0], rows + after[1] - before[1]
                off, on = (
                    {k: median(p[k] for p in runs[s]) for k in ("rps", "p50_ms", "p99_ms")}
                    for s in ("off", "on")
                )
                out[f"{model} c={c}"] = {
                    "off": off, "on": on, "runs": runs,
                    "rps_ratio": round(on["rps"] / off["rps"], 3),
                    "calls_per_s": round(calls / (rounds * seconds)),
                    "rows_per_call": round(rows / calls, 2) if calls else None,
                }  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| model | req/s without | req/s with | ratio | p99 without / with (ms) "
        "| model calls/s with | rows per call |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, r in result.items():
        lines.append(
            f"| {key} | {r['off']['rps']:,.0f} | {r['on']['rps']:,.0f} | {r['rps_ratio']:.2f}x "
            f"| {r['off']['p99_ms']:.2f} / {r['on']['p99_ms']:.2f} | {r['calls_per_s']:,} "
            f"| {r['rows_per_call']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="without/with pairs per point")
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    parser.add_argument("--trees", type=int, default=3000, help="the heavy model's trees")
    parser.add_argument("--only", choices=("heavy", "shipped"), help="one of the two parts")
    parser.add_argument("--max-batch-size", type=int, default=BATCHING["max_batch_size"])
    parser.add_argument("--max-latency-ms", type=float, default=BATCHING["max_latency_ms"])
    args = parser.parse_args()
    BATCHING.update(max_batch_size=args.max_batch_size, max_latency_ms=args.max_latency_ms)
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as name:
        tmp = Path(name)
        if args.only != "shipped":
            heavy = tmp / "heavy"
            heavy.mkdir()
            env = {
                **os.environ, "PREDICT_HOME": str(ROOT),
                "PREDICT_TRACKING_URI": f"sqlite:///{heavy / 'mlflow.db'}",
                "PREDICT_ARTIFACT_ROOT": str(heavy / "artifacts"),
            }  # fmt: skip
            dirs = spec_dirs(heavy, {"housing": heavy_spec(args.trees)}, force=False)
            train(env, dirs[0])
            result = compare(env, dirs, ["housing"], args.rounds, args.seconds)
            print(f"heavy: LightGBM, {args.trees} trees over the housing data\n")
            print(table(result) + "\n", flush=True)
        if args.only != "heavy":
            shipped = tmp / "shipped"
            shipped.mkdir()
            shutil.copy2(ROOT / "mlruns" / "mlflow.db", shipped / "mlflow.db")
            env = {
                **os.environ, "PREDICT_HOME": str(ROOT),
                "PREDICT_TRACKING_URI": f"sqlite:///{shipped / 'mlflow.db'}",
                "PREDICT_ARTIFACT_ROOT": str(ROOT / "mlruns" / "artifacts"),
            }  # fmt: skip
            specs = {
                m: yaml.safe_load((ROOT / "config" / "models" / f"{m}.yaml").read_text())
                for m in BODIES
            }
            dirs = spec_dirs(shipped, specs, force=True)
            result = compare(env, dirs, list(BODIES), args.rounds, args.seconds)
            print("shipped champions, batched with min_row_cost_us: 0\n")
            print(table(result), flush=True)


if __name__ == "__main__":
    main()
