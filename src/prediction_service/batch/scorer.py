"""One chunk of a table in, the same rows scored out: the part both engines share.

The local engine hands it Arrow tables read from files; the Spark engine hands it the Arrow
batches ``mapInArrow`` gives each executor. Either way the rows are checked by the spec's
own codec (``FeatureCodec.screen``), predicted by the version's predictor as the service
loads it, and written with the same columns, so the two engines' outputs are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from prediction_service.errors import InvalidInputError
from prediction_service.serving.codec import FeatureCodec
from prediction_service.serving.model_store import Predictor
from prediction_service.specs import ModelSpec

# Output columns after the kept input columns (probability_<class> follow prediction).
PREDICTION, MODEL, VERSION, BATCH_ID, ERROR = (
    "prediction", "model", "model_version", "batch_id", "error",
)  # fmt: skip
PROBABILITY = "probability_"


@dataclass
class Chunk:
    """Rows read from the input; ``unreadable`` marks, per feature, cells its reader knows
    are not numbers although the column holds numbers (JSON Lines values of another type)."""

    table: pa.Table
    unreadable: Mapping[str, np.ndarray] | None = None


class Scorer:
    """Scores chunks of one input for one model version.

    ``text`` says the input is text (CSV), where a string column is parsed as numbers; in
    typed inputs (Parquet, JSON) a string is not a number, as in a request."""

    def __init__(
        self,
        predictor: Predictor,
        keep: Sequence[str],
        batch_id: str,
        text: bool = False,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.predictor = predictor
        self.spec = predictor.spec
        self.codec = FeatureCodec(self.spec, max_rows=1)
        self.inputs = (
            feature_columns(self.spec, columns) if columns is not None else self.codec.names
        )
        self.keep = list(keep)
        self.batch_id = batch_id
        self.text = text
        self.classes = predictor.classes
        clash = [c for c in self.keep if c in self.added_names]
        if clash:
            raise InvalidInputError(
                f"input columns {clash} have the names of output columns; keep the others "
                "with --keep"
            )

    @property
    def read_columns(self) -> list[str]:
        """The input columns the scorer reads: the kept ones and each feature's."""
        return list(dict.fromkeys([*self.keep, *self.inputs]))

    @property
    def added_names(self) -> list[str]:
        probabilities = [PROBABILITY + c for c in self.classes or ()]
        return [PREDICTION, *probabilities, MODEL, VERSION, BATCH_ID, ERROR]

    def schema(self, source: pa.Schema) -> pa.Schema:
        """The output's schema for an input of schema ``source``."""
        prediction = pa.float64() if self.classes is None else pa.string()
        added = [pa.field(PREDICTION, prediction)]
        added += [pa.field(PROBABILITY + c, pa.float64()) for c in self.classes or ()]
        added += [pa.field(n, pa.string()) for n in (MODEL, VERSION, BATCH_ID, ERROR)]
        return pa.schema([source.field(c) for c in self.keep] + added)

    def features(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The feature matrix, and which of its cells were missing or not numbers."""
        table, n = chunk.table, chunk.table.num_rows
        X = np.empty((n, len(self.codec.names)), dtype=np.float64)
        missing = np.zeros(X.shape, dtype=bool)
        not_number = np.zeros(X.shape, dtype=bool)
        for j, (name, source) in enumerate(zip(self.codec.names, self.inputs)):
            column = table.column(source)
            if column.null_count:
                missing[:, j] = column.is_null().to_numpy(zero_copy_only=False)
            kind = column.type
            if pa.types.is_integer(kind) or pa.types.is_floating(kind):
                X[:, j] = column.to_numpy(zero_copy_only=False)
            elif self.text and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                X[:, j], not_number[:, j] = _parsed(column)
            elif pa.types.is_null(kind):
                X[:, j] = np.nan
            else:  # booleans, strings in typed input, lists, dates: not numbers
                X[:, j] = np.nan
                not_number[:, j] = True
            if chunk.unreadable is not None and source in chunk.unreadable:
                not_number[:, j] |= chunk.unreadable[source]  # its reader left them empty
            missing[:, j] &= ~not_number[:, j]
            X[missing[:, j], j] = np.nan
        return X, missing, not_number

    def score(self, chunk: Chunk) -> tuple[pa.Table, np.ndarray]:
        """The chunk's rows scored (in the same order) and each row's error (None: valid)."""
        table, n = chunk.table, chunk.table.num_rows
        X, missing, not_number = self.features(chunk)
        errors = self.codec.screen(X, missing, not_number)
        valid = pd.isna(errors)
        everything = bool(valid.all())
        out = self.predictor.predict(X if everything else X[valid]) if valid.any() else None
        invalid = None if everything else ~valid

        def spread(values: np.ndarray) -> np.ndarray:  # valid rows' values at their places
            if everything:
                return values
            full = np.full((n, *values.shape[1:]), np.nan if values.dtype.kind == "f" else None)
            full[valid] = values
            return full

        columns: list[pa.Array | pa.ChunkedArray] = [table.column(c) for c in self.keep]
        if self.classes is None:
            values = (
                spread(np.asarray(out, dtype=np.float64).reshape(-1)) if out is not None else None
            )
            columns.append(_floats(values, invalid, n))
        else:
            labels = np.asarray(self.classes, dtype=object)
            best = spread(labels[out.argmax(axis=1)]) if out is not None else None
            columns.append(
                pa.nulls(n, pa.string()) if best is None else pa.array(best, pa.string())
            )
            for k in range(len(self.classes)):
                columns.append(_floats(spread(out[:, k]) if out is not None else None, invalid, n))
        info = self.predictor.info
        for constant in (info.name, info.version, self.batch_id):
            columns.append(pa.nulls(n, pa.string()).fill_null(constant))
        columns.append(pa.nulls(n, pa.string()) if everything else pa.array(errors, pa.string()))
        return pa.Table.from_arrays(columns, schema=self.schema(table.schema)), errors


def feature_columns(spec: ModelSpec, columns: Sequence[str]) -> tuple[str, ...]:
    """The input column of each feature: its name, or else the training data's column for
    it (a file shaped like the spec's CSV scores as it is). InvalidInputError if any is
    missing."""
    present = set(columns)
    found = [
        f.name if f.name in present else f.source_column if f.source_column in present else None
        for f in spec.features
    ]
    missing = [f.name for f, c in zip(spec.features, found) if c is None]
    if missing:
        raise InvalidInputError(
            f"the input has no column for the features {missing}; {spec.name} needs "
            f"{spec.feature_names} (its columns: {list(columns)[:20]})"
        )
    return tuple(c for c in found if c is not None)


def _floats(values: np.ndarray | None, invalid: np.ndarray | None, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.float64())
    return pa.array(values, pa.float64(), mask=invalid)


def _parsed(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Text as numbers (C speed when every value parses), and which cells did not parse."""
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
        parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        return parsed, np.isnan(parsed) & text.notna().to_numpy()
