"""Request and response models. Record models are generated from each spec."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from prediction_service.specs import ModelSpec


def example_row(spec: ModelSpec, home: Path) -> dict[str, float]:
    """The first row of the spec's dataset, for OpenAPI examples (midpoints if unreadable)."""
    example = {f.name: (f.min + f.max) / 2 for f in spec.features}
    try:
        with spec.data_file(home).open(newline="") as fh:
            row = next(csv.DictReader(fh))
        example = {f.name: float(row[f.source_column]) for f in spec.features}
    except (OSError, StopIteration, KeyError, ValueError):
        pass
    return example


def record_model(spec: ModelSpec, example: dict[str, float]) -> type[BaseModel]:
    """One record of ``spec``'s features: finite numbers inside each feature's range."""
    fields: dict[str, Any] = {}
    for f in spec.features:
        kind = int if f.type == "int" else float
        fields[f.name] = (
            Annotated[
                kind,
                Field(
                    ge=f.min,
                    le=f.max,
                    strict=True,
                    allow_inf_nan=False,
                    description=f.description or None,
                    examples=[example[f.name]],
                ),
            ],
            ...,
        )
    camel = "".join(part.capitalize() for part in spec.name.split("_"))
    return create_model(
        f"{camel}Record",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [dict(example)]}),
        **fields,
    )


def batch_model(spec: ModelSpec, record: type[BaseModel], max_size: int) -> type[BaseModel]:
    camel = record.__name__.removesuffix("Record")
    return create_model(
        f"{camel}Batch",
        __config__=ConfigDict(extra="forbid"),
        records=(
            list[record],  # type: ignore[valid-type]
            Field(
                min_length=1,
                description=f"1 to {max_size} records; larger batches get 413.",
            ),
        ),
    )


class PredictionOut(BaseModel):
    model: str
    registered_name: str
    version: str
    prediction: float | str
    probabilities: dict[str, float] | None = Field(
        default=None, description="Probability of each class (classifiers only)."
    )
    prediction_id: str
    latency_ms: float


class BatchItemOut(BaseModel):
    prediction_id: str
    prediction: float | str
    probabilities: dict[str, float] | None = None


class BatchOut(BaseModel):
    model: str
    registered_name: str
    version: str
    count: int
    predictions: list[BatchItemOut]
    latency_ms: float


class ErrorOut(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None
