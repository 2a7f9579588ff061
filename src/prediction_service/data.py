"""Loading a spec's CSV and validating it before anything trains on it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prediction_service.errors import DataValidationError
from prediction_service.specs import ModelSpec


@dataclass(frozen=True)
class Dataset:
    """Validated features (columns named as in the spec) and target (class names for classifiers)."""

    X: pd.DataFrame
    y: pd.Series
    path: Path
    digest: str  # SHA-256 of the file's bytes

    def __len__(self) -> int:
        return len(self.X)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dataset(spec: ModelSpec, path: Path) -> Dataset:
    """Read and validate ``path`` against ``spec``; raise DataValidationError listing every problem."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataValidationError(path, ["file does not exist"]) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(path, [f"not a readable CSV: {exc}"]) from None
    X, y = validate_frame(spec, frame, path)
    return Dataset(X=X, y=y, path=path, digest=file_sha256(path))


def validate_frame(
    spec: ModelSpec, frame: pd.DataFrame, path: Path, complete: bool = True
) -> tuple[pd.DataFrame, pd.Series]:
    """Features (named as in the spec) and target of ``frame``, whose columns are named as
    in a CSV; DataValidationError naming ``path`` lists every problem. ``complete``: the
    frame is a whole training set (at least ``min_rows``, every class present), not an
    addition to one."""
    problems: list[str] = []
    wanted = [f.source_column for f in spec.features] + [spec.target.column]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        problems.append(
            f"missing columns: {', '.join(missing)} (found: {', '.join(frame.columns)})"
        )
        raise DataValidationError(path, problems)

    if complete and len(frame) < spec.data.min_rows:
        problems.append(f"{len(frame)} rows, fewer than the minimum of {spec.data.min_rows}")

    features: dict[str, np.ndarray] = {}
    for feat in spec.features:
        col = frame[feat.source_column]
        label = f"column {feat.source_column!r}"
        values = pd.to_numeric(col, errors="coerce")
        not_numeric = values.isna() & col.notna()
        if not_numeric.any():
            example = col[not_numeric].iloc[0]
            problems.append(
                f"{label}: {int(not_numeric.sum())} rows are not numbers "
                f"(dtype {col.dtype}, e.g. {example!r})"
            )
            continue
        arr = values.to_numpy(dtype=float)
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            problems.append(f"{label}: {n_nan} rows are empty or NaN")
        n_inf = int(np.isinf(arr).sum())
        if n_inf:
            problems.append(f"{label}: {n_inf} rows are infinite")
        finite = arr[np.isfinite(arr)]
        outside = int(((finite < feat.min) | (finite > feat.max)).sum())
        if outside:
            problems.append(
                f"{label}: {outside} rows outside the valid range [{feat.min}, {feat.max}] "
                f"(seen {finite.min():g} to {finite.max():g})"
            )
        if feat.type == "int":
            fractional = int((finite != np.round(finite)).sum())
            if fractional:
                problems.append(f"{label}: {fractional} rows are not whole numbers")
        features[feat.name] = arr

    target = _validate_target(spec, frame[spec.target.column], problems, complete)
    if problems:
        raise DataValidationError(path, problems)
    assert target is not None
    return pd.DataFrame(features, columns=spec.feature_names), target


def _validate_target(
    spec: ModelSpec, col: pd.Series, problems: list[str], complete: bool
) -> pd.Series | None:
    label = f"target column {spec.target.column!r}"
    n_missing = int(col.isna().sum())
    if n_missing:
        problems.append(f"{label}: {n_missing} rows are empty or NaN")
        return None
    if spec.task == "regression":
        values = pd.to_numeric(col, errors="coerce")
        bad = int((values.isna() | ~np.isfinite(values.fillna(0))).sum())
        if bad:
            problems.append(f"{label}: {bad} rows are not finite numbers")
            return None
        return values.astype(float).rename(spec.target.column)

    classes = spec.target.classes or []
    if pd.api.types.is_integer_dtype(col):
        out_of_range = int(((col < 0) | (col >= len(classes))).sum())
        if out_of_range:
            problems.append(
                f"{label}: {out_of_range} rows have a class code outside 0..{len(classes) - 1}"
            )
            return None
        names = pd.Series(np.asarray(classes, dtype=object)[col.to_numpy()], name=col.name)
    else:
        names = col.astype(str)
        unknown = sorted(set(names) - set(classes))
        if unknown:
            problems.append(f"{label}: unknown classes {unknown[:5]} (spec lists {classes})")
            return None
    absent = [c for c in classes if c not in set(names)]
    if absent and complete:
        problems.append(f"{label}: classes never present: {', '.join(absent)}")
    return names
