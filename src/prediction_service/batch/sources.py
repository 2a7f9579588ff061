"""Input files read in chunks of a fixed number of rows, whatever their format.

Parquet (a file or a folder of parts), CSV and JSON Lines. Chunks are cut at the same rows
on every run of the same input (the files are read in name order, each from its start), so
a resumed job's part ``k`` holds the same rows as an uninterrupted job's.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from prediction_service.batch.scorer import Chunk
from prediction_service.errors import InvalidInputError, NotFoundError

Format = Literal["parquet", "csv", "jsonl"]
SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
    ".ndjson": "jsonl",
}  # fmt: skip
_SAMPLE_BYTES = 1 << 20  # read to estimate a text file's rows


@dataclass(frozen=True)
class Source:
    path: Path
    files: tuple[Path, ...]
    format: Format
    columns: tuple[str, ...]  # in the input's order
    rows: int | None  # exact for Parquet, an estimate for text (None: unknown)

    def digest(self) -> str:
        """SHA-256 over every file's name and bytes: the input's identity."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def chunks(self, rows: int, columns: Sequence[str], features: Sequence[str]) -> Iterator[Chunk]:
        """The input's ``columns`` in chunks of exactly ``rows`` rows (the last one fewer).
        ``features`` are read as values to check, never refused by the reader: text in CSV
        (the scorer parses it), any JSON value in JSON Lines."""
        if self.format == "jsonl":
            yield from _json_chunks(self.files, rows, columns, features)
            return
        pending: list[pa.Table] = []
        held = 0
        for batch in self._batches(rows, columns, features):
            table = pa.Table.from_batches([batch])
            while held + table.num_rows >= rows:
                take = rows - held
                yield Chunk(pa.concat_tables([*pending, table.slice(0, take)]).combine_chunks())
                table, pending, held = table.slice(take), [], 0
            if table.num_rows:
                pending.append(table)
                held += table.num_rows
        if held:
            yield Chunk(pa.concat_tables(pending).combine_chunks())

    def _batches(
        self, rows: int, columns: Sequence[str], features: Sequence[str]
    ) -> Iterator[pa.RecordBatch]:
        for f in self.files:
            if self.format == "parquet":
                yield from pq.ParquetFile(f).iter_batches(batch_size=rows, columns=list(columns))
            else:
                reader = pcsv.open_csv(
                    f,
                    convert_options=pcsv.ConvertOptions(
                        include_columns=list(columns),
                        column_types={f: pa.string() for f in features},
                        strings_can_be_null=True,
                    ),
                )
                yield from reader


def guess_format(paths: Sequence[str]) -> Format:
    """The format the files' names say (all the same), or InvalidInputError."""
    found = {SUFFIXES.get(Path(p).suffix.lower()) for p in paths}
    if len(found) == 1 and None not in found:
        return found.pop()  # type: ignore[return-value]
    raise InvalidInputError(
        f"cannot tell the input's format from its file names ({', '.join(paths[:3])}); give "
        f"--input-format ({', '.join(sorted(set(SUFFIXES.values())))})"
    )


def open_source(path: Path, format: Format | None = None) -> Source:
    """The input at ``path`` (a file, or a folder of files of one format)."""
    if not path.exists():
        raise NotFoundError(f"input {path} does not exist")
    files = (
        tuple(
            sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        )
        if path.is_dir()
        else (path,)
    )
    if not files:
        raise InvalidInputError(f"input folder {path} holds no files")
    format = format or guess_format([str(f) for f in files])
    if format == "parquet":
        metas = [pq.ParquetFile(f) for f in files]
        names = tuple(metas[0].schema_arrow.names)
        for f, m in zip(files, metas):
            if set(m.schema_arrow.names) != set(names):
                raise InvalidInputError(f"{f} has other columns than {files[0]}")
        return Source(path, files, format, names, sum(m.metadata.num_rows for m in metas))
    if format == "csv":
        header = _csv_header(files[0])
        return Source(path, files, format, header, _estimate_lines(files, skip=1))
    return Source(path, files, format, _json_columns(files[0]), _estimate_lines(files))


def _csv_header(path: Path) -> tuple[str, ...]:
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=_SAMPLE_BYTES))
    return tuple(reader.schema.names)


def _json_columns(path: Path) -> tuple[str, ...]:
    """The keys of the first lines (a JSON Lines file has no header)."""
    seen: dict[str, None] = {}
    with path.open("rb") as fh:
        for line in itertools.islice(fh, 1000):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(row, dict):
                seen.update(dict.fromkeys(row))
    return tuple(seen)


def _estimate_lines(files: Sequence[Path], skip: int = 0) -> int | None:
    """Rows in text files, from the bytes per line of each file's first megabyte."""
    total = 0.0
    for f in files:
        size = f.stat().st_size
        with f.open("rb") as fh:
            sample = fh.read(_SAMPLE_BYTES)
        lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") else 1)
        if not sample or lines <= 0:
            continue
        total += (lines if len(sample) == size else size / (len(sample) / lines)) - skip
    return max(int(total), 0)


def _lines(files: Sequence[Path]) -> Iterator[bytes]:
    for f in files:
        with f.open("rb") as fh:
            yield from (line for line in fh if line.strip())


def _json_chunks(
    files: Sequence[Path], rows: int, columns: Sequence[str], features: Sequence[str]
) -> Iterator[Chunk]:
    """JSON Lines as chunks. A line that is not a JSON object gives a row whose features are
    all unreadable; a feature value that is not a number marks its cell, as in a request;
    another column whose values mix types is kept as their JSON text."""
    lines = _lines(files)
    wanted = set(features)
    while block := list(itertools.islice(lines, rows)):
        records = []
        broken = np.zeros(len(block), dtype=bool)
        for i, line in enumerate(block):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                row, broken[i] = {}, True
            records.append(row)
        arrays: dict[str, pa.Array] = {}
        unreadable: dict[str, np.ndarray] = {}
        for name in columns:
            values = [r.get(name) for r in records]
            if name not in wanted:
                arrays[name] = _kept(values)
                continue
            numbers = [v if type(v) in (int, float) and not _too_big(v) else None for v in values]
            arrays[name] = pa.array(numbers, pa.float64())
            unreadable[name] = broken | np.array(
                [v is not None and n is None for v, n in zip(values, numbers)], dtype=bool
            )
        yield Chunk(pa.table(arrays), unreadable)


def _kept(values: list[object]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [None if v is None else orjson.dumps(v).decode() for v in values], pa.string()
        )


def _too_big(v: object) -> bool:
    return isinstance(v, int) and not -(2**63) <= v < 2**63
