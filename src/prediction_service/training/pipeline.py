"""One generic training pipeline, parameterised by a model spec."""

from __future__ import annotations

import hashlib
import subprocess  # nosec B404 - only `git rev-parse HEAD`, no input from anyone
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from prediction_service.data import load_dataset
from prediction_service.domain import TrainingOutcome
from prediction_service.predictors import explainers
from prediction_service.predictors.portable import estimator_predict, to_bundle
from prediction_service.registry import Registry, RunRecorder
from prediction_service.registry.store import (
    BACKGROUND_FILE,
    CHALLENGER,
    FEEDBACK_LINEAGE_FILE,
    PREDICTOR_FILE,
    REFERENCE_FILE,
    REPORT_FILE,
    TEST_SPLIT_FILE,
)
from prediction_service.settings import Settings
from prediction_service.specs import ModelSpec, select_candidates
from prediction_service.training.build import build_estimator
from prediction_service.training.feedback import load_feedback, training_digest
from prediction_service.training.gate import decide
from prediction_service.training.metrics import score
from prediction_service.training.reference import reference_stats
from prediction_service.training.report import build_report
from prediction_service.training.search import Folds, Progress, cross_validate, search


@dataclass(frozen=True)
class TrainOptions:
    data_path: Path | None = None
    candidates: tuple[str, ...] | None = None  # subset of the spec's candidate names
    seed: int | None = None
    cv_folds: int | None = None
    # Labelled production rows join the training split (None: as the spec's automation says).
    include_feedback: bool | None = None


@dataclass
class CandidateResult:
    name: str
    estimator: str
    cv_mean: float
    cv_std: float
    test_score: float
    seconds: float
    chosen: bool = False


@dataclass
class TrainingResult:
    model: str
    registered_name: str
    version: str
    promoted: bool
    reason: str
    metric: str
    chosen: str
    run_id: str
    champion_before: str | None
    test_metrics: dict[str, float]
    cv_metrics: dict[str, float]
    seconds: float
    candidates: list[CandidateResult] = field(default_factory=list)
    rollout: bool = False  # passed the gate; the service's live rollout (shadow, canary) decides
    feedback_rows: int = 0

    def table(self) -> str:
        head = f"{'candidate':<26} {'cv ' + self.metric:>16} {'test ' + self.metric:>12}  chosen"
        rows = [head, "-" * len(head)]
        for c in self.candidates:
            cv = f"{c.cv_mean:.4f}±{c.cv_std:.4f}"
            rows.append(f"{c.name:<26} {cv:>16} {c.test_score:>12.4f}  {'*' if c.chosen else ''}")
        return "\n".join(rows)

    def outcome(self) -> TrainingOutcome:
        return TrainingOutcome(
            model=self.model,
            registered_name=self.registered_name,
            version=self.version,
            promoted=self.promoted,
            rollout=self.rollout,
            reason=self.reason,
            feedback_rows=self.feedback_rows,
            chosen=self.chosen,
            run_id=self.run_id,
            metrics={f"test_{k}": v for k, v in self.test_metrics.items()} | self.cv_metrics,
            seconds=round(self.seconds, 3),
        )

    def summary(self) -> str:
        state = (
            "is the new champion"
            if self.promoted
            else (
                f"is the {CHALLENGER}: a live rollout decides"
                if self.rollout
                else f"was not promoted ({CHALLENGER})"
            )
        )
        return (
            f"{self.registered_name} version {self.version} {state}: {self.reason}\n"
            f"test metrics: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.test_metrics.items()))
            + f"\ntrained in {self.seconds:.1f}s, MLflow run {self.run_id}"
        )


def run_training(
    spec: ModelSpec,
    settings: Settings,
    options: TrainOptions = TrainOptions(),
    progress: Progress = print,
) -> TrainingResult:
    started = time.perf_counter()
    candidates = select_candidates(spec, options.candidates)
    data_path = options.data_path or spec.data_file(settings.home)
    seed = spec.split.seed if options.seed is None else options.seed
    folds = options.cv_folds or spec.split.cv_folds
    classification = spec.task == "classification"
    metric, higher = spec.selection_metric, spec.greater_is_better

    progress(f"[{spec.name}] validating {data_path}")
    dataset = load_dataset(spec, data_path)
    X, y = dataset.X.to_numpy(), dataset.y.to_numpy()
    row_ids = np.arange(len(X))
    train_ids, test_ids = train_test_split(
        row_ids,
        test_size=spec.split.test_size,
        random_state=seed,
        stratify=y if classification else None,
    )
    test_ids = np.sort(test_ids)
    split_digest = hashlib.sha256(",".join(map(str, test_ids)).encode()).hexdigest()
    X_train, y_train, X_test, y_test = X[train_ids], y[train_ids], X[test_ids], y[test_ids]
    progress(
        f"[{spec.name}] {len(X)} rows valid; train {len(train_ids)}, test {len(test_ids)} "
        f"(seed {seed}, split {split_digest[:12]}); {folds}-fold CV on {len(candidates)} candidates"
    )
    # Labelled production rows: the older join training (the test split stays the CSV's
    # rows, so the gate compares like with like), the newest are held out as "recent".
    feedback = recent = None
    automation = spec.automation
    if options.include_feedback or (
        options.include_feedback is None
        and automation
        and automation.training_data.include_feedback
    ):
        labelled = load_feedback(spec, settings.effective_database_url, settings.archive_location)
        # A production row equal to a test row would leak the test split into training.
        leaked = labelled.without(X_test)
        feedback, recent = leaked.split()
        X_train = np.vstack([X_train, feedback.X.to_numpy()])
        y_train = np.concatenate([y_train, feedback.y.to_numpy()])
        progress(
            f"[{spec.name}] {len(feedback)} labelled production rows join the training split; "
            f"the newest {len(recent)} are held out as recent; "
            f"{len(labelled) - len(leaked)} equal to test rows are left out"
        )
    splitter = (StratifiedKFold if classification else KFold)(
        folds, shuffle=True, random_state=seed
    )
    derive = spec.derive_weights()
    cv = Folds(X_train, y_train, list(splitter.split(X_train, y_train)), spec.task, metric,
               higher, seed, derive)  # fmt: skip

    registry = Registry(settings.effective_tracking_uri, settings.artifact_path)
    champion_before = registry.champion_version(spec.registered_name)
    results: list[CandidateResult] = []
    fitted: dict[str, Any] = {}
    run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with RunRecorder(registry, spec.name, run_name) as rec, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*feature names.*")
        warnings.filterwarnings("ignore", message=".*dataset source can be interpreted.*")
        chosen_params: dict[str, dict[str, Any]] = {}
        for i, cand in enumerate(candidates, 1):
            t0 = time.perf_counter()
            label = f"[{spec.name}] {cand.name} ({i}/{len(candidates)})"
            params = dict(cand.params)
            if cand.search is not None:
                best_trial, trials = search(cand, cv, progress, label)
                params, fold_scores = best_trial.params, best_trial.fold_scores
                rec.log_json(
                    {"best": best_trial.number, "trials": [t.__dict__ for t in trials]},
                    f"search/{cand.name}.json",
                )
            else:

                def on_fold(k: int, s: float, seconds: float) -> None:
                    progress(f"{label} fold {k}/{folds}: {metric} {s:.4f} in {seconds:.1f}s")

                fold_scores = cross_validate(cv, cand.estimator, params, on_fold)
            chosen_params[cand.name] = params
            final = build_estimator(cand.estimator, params, seed, derive).fit(X_train, y_train)
            test_metrics = score(spec.task, final, X_test, y_test)
            fitted[cand.name] = final
            result = CandidateResult(
                name=cand.name,
                estimator=cand.estimator,
                cv_mean=float(np.mean(fold_scores)),
                cv_std=float(np.std(fold_scores)),
                test_score=test_metrics[metric],
                seconds=time.perf_counter() - t0,
            )
            results.append(result)
            rec.log_candidate(
                cand.name,
                {"estimator": cand.estimator, **params},
                {
                    f"cv_{metric}_mean": result.cv_mean,
                    f"cv_{metric}_std": result.cv_std,
                    **{f"test_{k}": v for k, v in test_metrics.items()},
                    "train_seconds": result.seconds,
                },
            )
            progress(
                f"[{spec.name}] {cand.name}: cv {metric} {result.cv_mean:.4f}±{result.cv_std:.4f}, "
                f"test {result.test_score:.4f} ({result.seconds:.1f}s)"
            )

        best = (max if higher else min)(results, key=lambda r: r.cv_mean)
        best.chosen = True
        model = fitted[best.name]
        test_metrics = score(spec.task, model, X_test, y_test)

        rec.log_params(
            {
                "candidate": best.name,
                "estimator": best.estimator,
                **chosen_params[best.name],
                "seed": seed,
                "cv_folds": folds,
                "test_size": spec.split.test_size,
                "selection_metric": metric,
            }
        )
        rec.log_metrics(
            {
                **{f"test_{k}": v for k, v in test_metrics.items()},
                f"cv_{metric}_mean": best.cv_mean,
                f"cv_{metric}_std": best.cv_std,
            }
        )
        frame = dataset.X.copy()
        frame[spec.target.column] = dataset.y.to_numpy()
        rec.log_dataset(frame, data_path, spec.name, spec.target.column)
        train_frame = pd.DataFrame(X_train, columns=spec.feature_names)
        rec.log_json(
            reference_stats(train_frame, model.predict(X_train), spec.task, seed).model_dump(),
            REFERENCE_FILE,
        )
        rec.log_json({"seed": seed, "test_row_ids": test_ids.tolist()}, TEST_SPLIT_FILE)
        # The served predictor's portable form, checked on test and training rows.
        bundle = to_bundle(model, spec.task, np.vstack([X_test[:64], X_train[:64]]))
        if bundle is not None:
            rec.log_arrays(bundle, PREDICTOR_FILE)
        else:
            progress(f"[{spec.name}] {best.name} has no portable predictor; serving unpickles it")
        # Training rows that model-agnostic explanations integrate over (predictors/explainers).
        background = explainers.background_rows(X_train, seed)
        rec.log_arrays({"rows": background}, BACKGROUND_FILE)
        tags = {
            "model_name": spec.name,
            "git_commit": _git_commit(),
            "data_digest": dataset.digest,
            "spec_digest": spec.digest,
            "test_split_digest": split_digest,
            "training_data_digest": training_digest(X_train, y_train),
            "feedback_rows": str(len(feedback) if feedback else 0),
        }
        if feedback is not None and recent is not None:
            rec.log_json(
                {"training": feedback.ids, "recent_holdout": recent.ids}, FEEDBACK_LINEAGE_FILE
            )
        rec.set_tags(tags)
        progress(f"[{spec.name}] logging and registering {best.name} as {spec.registered_name}")
        model_uri = rec.log_model(model, dataset.X.iloc[:1])
        version = rec.register(model_uri, spec.registered_name)

        champion, champion_metrics = None, None
        if champion_before is not None:
            champion = registry.load_model(spec.registered_name, champion_before)
            champion_metrics = score(spec.task, champion, X_test, y_test)
        if recent is not None and len(recent) >= 2:  # reported, not gated: few rows, and new
            X_recent, y_recent = recent.X.to_numpy(), recent.y.to_numpy()
            on_recent = score(spec.task, model, X_recent, y_recent)[metric]
            rec.log_metrics({f"recent_{metric}": on_recent})
            line = f"{metric} {on_recent:.4f} on the {len(recent)} newest labelled rows"
            if champion is not None:
                champion_recent = score(spec.task, champion, X_recent, y_recent)[metric]
                rec.set_tags({f"champion_recent_{metric}": f"{champion_recent:.6f}"})
                line += f" (champion {champion_recent:.4f})"
            progress(f"[{spec.name}] {line}")
        decision = decide(spec.quality_gate, metric, test_metrics, champion_metrics)
        # A live rollout: a version that passes the gate is first shadowed or canaried on
        # live traffic, and feedback decides (the service's automation). The first version
        # of a model has nothing to be compared with, so it takes the alias directly.
        stages = automation.rollout.sequence if automation else ()
        staged = bool(decision.promote and champion_before is not None and stages)
        reason = decision.reason
        if staged:
            reason += f"; it becomes the challenger of a {' then '.join(stages)} rollout"
        gate_tags = {
            **tags,
            # The first stage it goes to: "shadow" or "canary".
            "gate_decision": (
                stages[0] if staged else "promoted" if decision.promote else "rejected"
            ),
            "gate_reason": reason,
            f"test_{metric}": f"{test_metrics[metric]:.6f}",
        }
        if champion_metrics is not None:
            gate_tags[f"champion_test_{metric}"] = f"{champion_metrics[metric]:.6f}"
            gate_tags["compared_with_version"] = champion_before or ""
        registry.set_version_tags(spec.registered_name, version, gate_tags)
        rec.set_tags({"gate_decision": gate_tags["gate_decision"], "registered_version": version})
        progress(f"[{spec.name}] drawing the training report")
        explainer = explainers.from_bundle(bundle, spec.task)[0] if bundle is not None else None
        if explainer is None:
            predict = estimator_predict(model, spec.task)
            explainer = explainers.model_agnostic(predict, spec.task, background)
        explain = None  # the report plots exact values over the columns the estimator sees
        if explainer.exact and explainer.n_features == len(spec.model_feature_names):
            explain = lambda X: explainer.explain(X).values  # noqa: E731
        compared = (
            (champion_before, champion_metrics) if champion_before and champion_metrics else None
        )
        figures, page = build_report(
            spec, version, model, X_test, y_test, results, test_metrics, compared, explain
        )
        folder = str(Path(REPORT_FILE).parent)
        rec.log_files(
            {f.name: f.png for f in figures} | {Path(REPORT_FILE).name: page.encode()}, folder
        )
        rec.set_tags({"report": REPORT_FILE})
        if decision.promote and not staged:
            registry.promote(spec.registered_name, version, previous=champion_before)
        else:
            registry.set_alias(spec.registered_name, CHALLENGER, version)

    return TrainingResult(
        model=spec.name,
        registered_name=spec.registered_name,
        version=version,
        promoted=decision.promote and not staged,
        reason=reason,
        metric=metric,
        chosen=best.name,
        run_id=rec.run_id,
        champion_before=champion_before,
        test_metrics=test_metrics,
        cv_metrics={f"cv_{metric}_mean": best.cv_mean, f"cv_{metric}_std": best.cv_std},
        seconds=time.perf_counter() - started,
        candidates=results,
        rollout=staged,
        feedback_rows=len(feedback) if feedback else 0,
    )


def _git_commit() -> str:
    try:
        out = subprocess.run(  # nosec B603 B607 - a fixed command; git from PATH by design
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
