"""The training report: figures of one training and a Markdown page tying them together.

Logged to the run under ``report/`` (``report.md`` and one PNG per figure, beside it), linked
from the run's ``report`` tag and from ``GET /models/{model}``. Regression: predicted against actual,
residuals against predicted, the residuals' histogram. Classification: the confusion matrix,
and per class the ROC and precision-recall curves. Both: every candidate's cross-validation
score with its spread, feature importance (the estimator's own, and the mean absolute exact
contribution over up to 1,000 test rows where the model can be explained), and the new version's test
metric beside the champion's. matplotlib (Agg backend) is imported here only: training-side.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from prediction_service.predictors.portable import split_pipeline
from prediction_service.specs import ModelSpec

_DPI = 100
_SIZE = (6.4, 4.8)  # inches: 640 x 480 pixels at _DPI
_SHAP_ROWS = 1000  # test rows behind the mean |contribution| importance


@dataclass(frozen=True)
class Figure:
    name: str  # file name under report/
    title: str
    png: bytes


class CandidateScore(Protocol):
    """What the report shows of each candidate (training.pipeline.CandidateResult)."""

    name: str
    cv_mean: float
    cv_std: float
    chosen: bool


def build_report(
    spec: ModelSpec,
    version: str,
    model: Any,
    X_test: np.ndarray,
    y_test: np.ndarray,
    candidates: Sequence[CandidateScore],
    test_metrics: dict[str, float],
    champion: tuple[str, dict[str, float]] | None,
    explain: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[list[Figure], str]:
    """The figures and the Markdown page of one training (``champion``: the version it was
    compared with and that version's test metrics on the same rows)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metric = spec.selection_metric
    figures: list[Figure] = []

    def add(name: str, title: str, draw: Callable[[Any], None]) -> None:
        fig, ax = plt.subplots(figsize=_SIZE, dpi=_DPI)
        try:
            draw(ax)
            ax.set_title(title)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=_DPI)
        finally:
            plt.close(fig)
        figures.append(Figure(name, title, buf.getvalue()))

    if spec.task == "regression":
        pred = np.asarray(model.predict(X_test), dtype=float)
        residual = y_test - pred
        lo, hi = float(min(y_test.min(), pred.min())), float(max(y_test.max(), pred.max()))

        def scatter(ax: Any) -> None:
            ax.scatter(y_test, pred, s=4, alpha=0.4)
            ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
            ax.set_xlabel(f"actual {spec.target.column}")
            ax.set_ylabel("predicted")

        def residuals(ax: Any) -> None:
            ax.scatter(pred, residual, s=4, alpha=0.4)
            ax.axhline(0, color="black", linewidth=1)
            ax.set_xlabel("predicted")
            ax.set_ylabel("actual - predicted")

        def histogram(ax: Any) -> None:
            ax.hist(residual, bins=60)
            ax.set_xlabel("actual - predicted")
            ax.set_ylabel("test rows")

        add("predicted_vs_actual.png", "Predicted against actual (test split)", scatter)
        add("residuals_vs_predicted.png", "Residuals against predicted (test split)", residuals)
        add("residual_histogram.png", "Residuals (test split)", histogram)
    else:
        from sklearn.metrics import auc, confusion_matrix, precision_recall_curve, roc_curve

        proba = np.asarray(model.predict_proba(X_test), dtype=float)
        classes = [str(c) for c in model.classes_]
        pred = np.asarray(classes)[proba.argmax(axis=1)]
        truth = np.asarray([str(v) for v in y_test])
        matrix = confusion_matrix(truth, pred, labels=classes)

        def confusion(ax: Any) -> None:
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
            ax.set_yticks(range(len(classes)), classes)
            ax.set_xlabel("predicted")
            ax.set_ylabel("actual")
            for (i, j), n in np.ndenumerate(matrix):
                ax.text(j, i, str(n), ha="center", va="center")

        def roc(ax: Any) -> None:
            for k, name in enumerate(classes):
                fpr, tpr, _ = roc_curve(truth == name, proba[:, k])
                ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(loc="lower right")

        def pr(ax: Any) -> None:
            for k, name in enumerate(classes):
                precision, recall, _ = precision_recall_curve(truth == name, proba[:, k])
                ax.plot(recall, precision, label=name)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.legend(loc="lower left")

        add("confusion_matrix.png", "Confusion matrix (test split)", confusion)
        add("roc.png", "ROC per class, one against the rest (test split)", roc)
        add("precision_recall.png", "Precision-recall per class (test split)", pr)

    def cv(ax: Any) -> None:
        names = [c.name for c in candidates]
        colors = ["tab:orange" if c.chosen else "tab:blue" for c in candidates]
        ax.bar(names, [c.cv_mean for c in candidates], yerr=[c.cv_std for c in candidates],
               color=colors, capsize=4)  # fmt: skip
        ax.set_ylabel(f"cv {metric} (mean, ± one std)")
        ax.tick_params(axis="x", labelrotation=20)

    add("cv_scores.png", f"Cross-validated {metric} per candidate (chosen in orange)", cv)

    features = spec.model_feature_names  # what the estimator sees, derived features included
    importance = _own_importance(model)
    shap = None
    if explain is not None:  # on at most _SHAP_ROWS test rows: ~4.5 ms a row for housing
        rows = X_test
        if len(rows) > _SHAP_ROWS:
            rows = rows[np.random.default_rng(0).choice(len(rows), _SHAP_ROWS, replace=False)]
        shap = np.abs(explain(rows)[:, :, :-1]).mean(axis=(0, 1))
    if importance is not None or shap is not None:

        def importances(ax: Any) -> None:
            y = np.arange(len(features))
            shown = [(n, v) for n, v in (("own", importance), ("mean |exact contribution|", shap))
                     if v is not None]  # fmt: skip
            height = 0.8 / len(shown)
            for i, (label, values) in enumerate(shown):
                scaled = values / values.max() if values.max() > 0 else values
                ax.barh(y + i * height, scaled, height=height, label=label)
            ax.set_yticks(y + height * (len(shown) - 1) / 2, features)
            ax.set_xlabel("relative importance (largest = 1)")
            ax.legend(loc="best")

        add("feature_importance.png", "Feature importance", importances)

    def versus(ax: Any) -> None:
        bars = [(f"version {version} (new)", test_metrics[metric])]
        if champion is not None:
            bars.append((f"version {champion[0]} (champion)", champion[1][metric]))
        ax.bar(
            [b[0] for b in bars],
            [b[1] for b in bars],
            color=["tab:orange", "tab:blue"][: len(bars)],
        )
        for i, (_, v) in enumerate(bars):
            ax.text(i, v, f"{v:.4f}", ha="center", va="bottom")
        ax.set_ylabel(f"test {metric}")

    add("versus_champion.png", f"Test {metric}: the new version and the champion", versus)
    return figures, _markdown(
        spec, version, figures, test_metrics, candidates, champion, shap is not None
    )


def _own_importance(model: Any) -> np.ndarray | None:
    """The estimator's own importance: LightGBM's total gain, a tree ensemble's impurity
    decrease, or a linear model's absolute coefficients (on scaled features)."""
    final = split_pipeline(model)[1]
    if hasattr(final, "booster_"):
        return np.asarray(final.booster_.feature_importance(importance_type="gain"), dtype=float)
    if hasattr(final, "feature_importances_"):
        return np.asarray(final.feature_importances_, dtype=float)
    if hasattr(final, "coef_"):
        return np.abs(np.atleast_2d(final.coef_)).mean(axis=0)
    return None


def _markdown(
    spec: ModelSpec,
    version: str,
    figures: list[Figure],
    test_metrics: dict[str, float],
    candidates: Sequence[CandidateScore],
    champion: tuple[str, dict[str, float]] | None,
    explained: bool,
) -> str:
    metric = spec.selection_metric
    lines = [
        f"# {spec.registered_name} version {version}",
        "",
        spec.description,
        "",
        "## Test metrics",
        "",
        "| metric | this version |" + (f" champion (version {champion[0]}) |" if champion else ""),
        "| --- | --- |" + (" --- |" if champion else ""),
    ]
    for name, value in sorted(test_metrics.items()):
        row = f"| {name} | {value:.4f} |"
        if champion is not None:
            row += f" {champion[1].get(name, float('nan')):.4f} |"
        lines.append(row)
    lines += [
        "",
        "## Candidates",
        "",
        f"| candidate | cv {metric} | chosen |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c.name} | {c.cv_mean:.4f} ± {c.cv_std:.4f} | {'yes' if c.chosen else ''} |"
              for c in candidates]  # fmt: skip
    lines += ["", "## Figures", ""]
    if not explained:
        lines += ["Feature importance shows the estimator's own measure only: this model has "
                  "no exact explainer.", ""]  # fmt: skip
    for f in figures:
        lines += [f"### {f.title}", "", f"![{f.title}]({f.name})", ""]
    return "\n".join(lines)
