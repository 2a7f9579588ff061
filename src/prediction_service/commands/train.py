"""``prediction-service train`` (and ``python -m prediction_service.training``, the trainers).

Exit codes: 0 every trained version became champion; 3 at least one was registered but
not promoted; 1 a spec, data or registry error stopped training; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from prediction_service import logs, tracing
from prediction_service.commands import settings_from
from prediction_service.domain import TrainingOutcome
from prediction_service.errors import NotFoundError, ServiceError
from prediction_service.settings import Settings
from prediction_service.specs import load_specs
from prediction_service.storage.jobs import JobStore
from prediction_service.training.pipeline import TrainOptions, run_training
from prediction_service.training.search import Progress

EXIT_NOT_PROMOTED = 3


def build_parser(model: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    what = f"the {model!r} model" if model else "one or more models"
    parser = argparse.ArgumentParser(
        prog=prog or (f"train_{model}.py" if model else "python -m prediction_service.training"),
        description=(
            f"Train {what} from its spec in config/models/, log every candidate to MLflow, "
            "register the best and give it the 'champion' alias if it passes the quality gate."
        ),
        epilog="Exit codes: 0 promoted to champion, 3 registered but not promoted (0 with "
        "--job-id: the job records it), 1 error.",
    )
    if model is None:
        parser.add_argument("models", nargs="*", help="model names (default: every spec)")
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="train only models whose registered name has no champion yet",
        )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite under mlruns/)"
    )
    parser.add_argument(
        "--specs-dir", type=Path, help="folder of model specs (default: config/models)"
    )
    parser.add_argument("--data", type=Path, help="CSV to train on instead of the spec's data.path")
    parser.add_argument(
        "--candidates", help="comma-separated subset of the spec's candidate names to try"
    )
    parser.add_argument("--seed", type=int, help="random seed for split, CV and estimators")
    parser.add_argument("--cv-folds", type=int, help="number of cross-validation folds")
    parser.add_argument(
        "--json-result",
        type=Path,
        help="also write the outcome (version, promoted, metrics) to this JSON file",
    )
    parser.add_argument(
        "--job-id",
        help="the retrain job this run is (set by the service): its outcome, or why it failed, "
        "is written to that job's row in the prediction database",
    )
    parser.add_argument(
        "--no-feedback",
        action="store_true",
        help="train on the CSV only, even where the spec's automation.training_data says "
        "include_feedback",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fast smoke run: only the spec's first candidate and 2-fold CV",
    )
    return parser


def main(argv: list[str] | None = None, model: str | None = None, prog: str | None = None) -> int:
    args = build_parser(model, prog).parse_args(argv)
    settings = settings_from(args)
    logs.setup(settings.log_format, "WARNING")
    tracing.configure()  # a retrain job continues its starter's trace (TRACEPARENT)
    progress_log = logging.getLogger("prediction_service.train")
    progress_log.setLevel(logging.INFO)  # the rest of the libraries stay at warnings

    def progress(msg: str) -> None:
        if logs.json_lines:  # one JSON line, as every other line of the job
            progress_log.info(msg, extra={"job_id": args.job_id})
        else:
            print(msg, file=sys.stderr, flush=True)

    jobs = job_store(settings) if args.job_id else None
    try:
        with tracing.span("train", {"retrain.job_id": args.job_id or ""}):
            code, outcomes, error = _train(args, model, settings, progress)
    except BaseException as exc:  # recorded on the job, then raised as it was
        if jobs:
            jobs.record_outcome(args.job_id, None, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        tracing.shutdown()
    if args.json_result:
        args.json_result.write_text(json.dumps([o.model_dump() for o in outcomes], indent=2))
    if jobs:
        jobs.record_outcome(args.job_id, outcomes[0] if outcomes else None, error)
        if code == EXIT_NOT_PROMOTED:
            return 0  # the job's row says whether it was promoted; the run itself succeeded
    else:  # a job's events are the service's to record, when it ends
        record_events(settings, outcomes)
    return code


def record_events(settings: Settings, outcomes: list[TrainingOutcome]) -> None:
    """What a training run from the command line did, on each model's event log (as a
    retrain job's end is): every decision is there, whoever made it. The prediction
    database being down costs the events, said on stderr, never the training."""
    if not outcomes:
        return
    from prediction_service.storage.events import standalone

    with standalone(settings.effective_database_url) as events:
        if events is None:
            return
        for o in outcomes:
            details = {"source": "train command", "run_id": o.run_id, "metrics": o.metrics}
            state = (
                "the champion" if o.promoted else "the challenger" if o.rollout else "not champion"
            )
            reason = f"version {o.version} registered by the train command, {state}: {o.reason}"
            events.record(o.model, "retrain_succeeded", reason, o.version, details)
            if o.promoted:
                events.record(
                    o.model, "promoted", f"the quality gate (train command): {o.reason}",
                    o.version, details,
                )  # fmt: skip


def job_store(settings: Settings) -> JobStore:
    from prediction_service.storage.db import make_engine

    return JobStore(make_engine(settings.effective_database_url))


def _train(
    args: argparse.Namespace, model: str | None, settings: Settings, progress: Progress
) -> tuple[int, list[TrainingOutcome], str | None]:
    """Exit code, one outcome per trained model, and the error that stopped training."""
    outcomes: list[TrainingOutcome] = []
    try:
        specs = load_specs(settings.specs_path)
        names = [model] if model else (args.models or list(specs))
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise NotFoundError(f"unknown model(s) {unknown}; specs: {sorted(specs)}")
        code = 0
        for name in names:
            spec = specs[name]
            if model is None and args.missing_only:
                from prediction_service.registry import Registry

                registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
                if registry.champion_version(spec.registered_name):
                    progress(f"[{name}] {spec.registered_name} already has a champion; skipping")
                    continue
            candidates = tuple(c for c in (args.candidates or "").split(",") if c) or None
            if args.quick and not candidates:
                candidates = (spec.candidates[0].name,)
            options = TrainOptions(
                data_path=args.data,
                candidates=candidates,
                seed=args.seed,
                cv_folds=args.cv_folds or (2 if args.quick else None),
                include_feedback=False if args.no_feedback else None,
            )
            result = run_training(spec, settings, options, progress)
            print(result.table())
            print(result.summary(), flush=True)
            outcomes.append(result.outcome())
            if not result.promoted:
                code = EXIT_NOT_PROMOTED
        return code, outcomes, None
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1, outcomes, exc.message
