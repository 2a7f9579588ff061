"""Production rows with ground truth, as training data: what ``include_feedback`` adds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import inspect, select

from prediction_service.data import validate_frame
from prediction_service.specs import ModelSpec
from prediction_service.storage.archive import Archive, catalogued_files
from prediction_service.storage.db import ArchiveFileRecord, PredictionRecord, make_engine

# Where DataValidationError says the rows came from.
SOURCE = Path("prediction log (labelled rows)")


@dataclass(frozen=True)
class Feedback:
    """Labelled production rows, oldest first, validated like the spec's CSV."""

    X: pd.DataFrame
    y: pd.Series
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, recent_share: float = 0.2) -> tuple[Feedback, Feedback]:
        """(older, newest): the newest share is held out to report how a model does on what
        production sends now; the older rows join the training split."""
        n_recent = int(len(self) * recent_share) if len(self) >= 5 else 0
        cut = len(self) - n_recent
        return self._rows(list(range(cut))), self._rows(list(range(cut, len(self))))

    def without(self, X: np.ndarray) -> Feedback:
        """These rows but those whose features equal a row of ``X``."""
        taken = {tuple(row) for row in np.asarray(X, dtype=float).tolist()}
        keep = [i for i, row in enumerate(self.X.to_numpy(dtype=float).tolist())
                if tuple(row) not in taken]  # fmt: skip
        return self._rows(keep)

    def _rows(self, rows: list[int]) -> Feedback:
        return Feedback(
            self.X.iloc[rows].reset_index(drop=True),
            self.y.iloc[rows].reset_index(drop=True),
            [self.ids[i] for i in rows],
        )


def load_feedback(spec: ModelSpec, database_url: str, archive: str | None = None) -> Feedback:
    """Every prediction of ``spec``'s model that received ground truth, in prediction order:
    the archived ones (from ``archive``, the files its catalog names) and the live ones. No
    prediction log yet (a fresh machine) means no rows."""
    engine = make_engine(database_url)
    rows: list[tuple[str, dict[str, float], object]] = []
    try:
        if inspect(engine).has_table(PredictionRecord.__tablename__):
            if archive is not None and inspect(engine).has_table(ArchiveFileRecord.__tablename__):
                rows = _archived(engine, Archive.at(archive), spec.name)
            stmt = (
                select(PredictionRecord.id, PredictionRecord.features, PredictionRecord.actual)
                .where(
                    PredictionRecord.model == spec.name,
                    PredictionRecord.actual_at.is_not(None),
                    PredictionRecord.arm.is_(None),  # a shadow's row repeats its pair's input
                )
                .order_by(PredictionRecord.seq)
            )
            with engine.connect() as conn:
                rows += [(i, f, a) for i, f, a in conn.execute(stmt)]
    finally:
        engine.dispose()
    if not rows:
        X = pd.DataFrame({name: np.empty(0) for name in spec.feature_names})
        return Feedback(X, pd.Series([], dtype=object, name=spec.target.column), [])
    # Columns named as in the CSV, so the CSV's validation reads them.
    columns = {
        f.source_column: [features.get(f.name) for _, features, _ in rows] for f in spec.features
    }
    frame = pd.DataFrame(columns | {spec.target.column: [actual for _, _, actual in rows]})
    X, y = validate_frame(spec, frame, SOURCE, complete=False)
    return Feedback(X, y, [i for i, _, _ in rows])


def _archived(engine: Any, archive: Archive, model: str) -> list[tuple[str, Any, Any]]:
    table = archive.read(
        catalogued_files(engine, model), ("seq", "id", "features", "actual", "arm")
    )
    out = []
    for seq, pid, features, actual, arm in sorted(zip(*(c.to_pylist() for c in table.columns))):
        if actual is not None and arm is None:
            out.append((pid, orjson.loads(features), orjson.loads(actual)))
    return out


def training_digest(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the rows a model was fitted on (features, then targets)."""
    h = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update("\x1f".join(map(str, y.tolist())).encode())
    return h.hexdigest()
