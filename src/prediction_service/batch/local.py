"""The local engine: a file of any size scored in fixed chunks, one output part per chunk.

Memory stays bounded by the chunk (rows are read, scored and written a chunk at a time).
Each part is written to a temporary name, synced and renamed, and only then recorded in
the output folder's ``_manifest.json``; a rerun of the same job (same input bytes, version
and options) skips the recorded parts and writes the rest, so a killed job resumed gives
the same output as one that never stopped.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from prediction_service.batch.progress import Progress
from prediction_service.batch.scorer import Scorer
from prediction_service.batch.sources import Source
from prediction_service.errors import ConflictError, TooManyInvalidRowsError
from prediction_service.storage.files import PARTIAL, write_durably

OutputFormat = Literal["parquet", "csv"]
MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class Tally:
    rows: int
    invalid: int
    reasons: dict[str, int]
    parts: int
    resumed_parts: int
    seconds: float


class Manifest:
    """The output folder's record of a job and its finished parts."""

    def __init__(self, folder: Path, job: dict[str, Any], overwrite: bool) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.job = job
        self.parts: dict[int, dict[str, Any]] = {}
        if self.path.exists() and not overwrite:
            found = orjson.loads(self.path.read_bytes())
            if found.get("job") != job:
                changed = sorted(k for k in job if found.get("job", {}).get(k) != job[k])
                raise ConflictError(
                    f"{folder} holds the parts of another job (it differs in {changed}); "
                    "choose another output folder, or pass --overwrite to replace them"
                )
            self.parts = {int(k): v for k, v in found["parts"].items()}
            for stale in folder.glob(f".*{PARTIAL}"):  # a part the stopped run was writing
                stale.unlink()
        elif folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise ConflictError(
                    f"{folder} is not empty and holds no scoring job; choose another output "
                    "folder, or pass --overwrite to replace what is in it"
                )
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)

    def record(self, k: int, entry: dict[str, Any], complete: bool = False) -> None:
        self.parts[k] = entry
        self.write(complete)

    def write(self, complete: bool) -> None:
        parts = {str(k): v for k, v in sorted(self.parts.items())}
        doc = {"job": self.job, "complete": complete, "parts": parts}
        content = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        write_durably(self.path, lambda fh: fh.write(content))


def score_files(
    scorer: Scorer,
    source: Source,
    output: Path,
    job: dict[str, Any],
    chunk_rows: int,
    output_format: OutputFormat,
    overwrite: bool = False,
    max_invalid_fraction: float | None = None,
    progress: Progress | None = None,
) -> Tally:
    started = time.perf_counter()
    manifest = Manifest(output, job, overwrite)
    resumed = len(manifest.parts)
    write = _writer(output_format)
    columns, features = scorer.read_columns, scorer.inputs
    reasons: Counter[str] = Counter()
    rows = invalid = k = 0
    # Part k is written (and then recorded) while part k+1 is scored.
    with ThreadPoolExecutor(1, thread_name_prefix="score-writer") as writer:
        writing: Future[None] | None = None
        for k, chunk in enumerate(source.chunks(chunk_rows, columns, features)):
            done = manifest.parts.get(k)
            if done is None:
                table, errors = scorer.score(chunk)
                found = Counter(e for e in errors.tolist() if e is not None)
                done = {"file": f"part-{k:05d}.{output_format}", "rows": table.num_rows,
                        "invalid": sum(found.values()), "reasons": dict(found)}  # fmt: skip
                if writing is not None:
                    writing.result()
                writing = writer.submit(write, table, output, k, done, manifest)
            rows += done["rows"]
            invalid += done["invalid"]
            reasons.update(done["reasons"])
            if progress is not None:
                progress.advance(done["rows"], skipped=k < resumed)
            check_invalid(invalid, source.rows if source.format == "parquet" else None,
                          max_invalid_fraction)  # fmt: skip
        if writing is not None:
            writing.result()
    manifest.write(complete=True)
    if progress is not None:
        progress.finish()
    check_invalid(invalid, rows, max_invalid_fraction)
    return Tally(rows, invalid, dict(reasons.most_common()), k + 1 if rows else 0, resumed,
                 time.perf_counter() - started)  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM (getrusage's maximum carries the
    parent's across exec, so a child of a large process would report the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_invalid(invalid: int, rows: int | None, bound: float | None) -> None:
    """Fail once the invalid rows pass ``bound`` of ``rows`` (known: Parquet's total, or at
    the end the rows read)."""
    if bound is None or not rows or invalid <= bound * rows:
        return
    raise TooManyInvalidRowsError(
        f"{invalid:,} of {rows:,} rows are invalid ({invalid / rows:.2%}), more than "
        f"--max-invalid-fraction {bound:g} allows; the parts written so far are kept"
    )


def _writer(output_format: OutputFormat) -> Callable[..., None]:
    put = pq.write_table if output_format == "parquet" else pcsv.write_csv

    def write(
        table: pa.Table, folder: Path, k: int, entry: dict[str, Any], manifest: Manifest
    ) -> None:
        """Part ``k``, durably under its name, then its entry in the manifest."""
        write_durably(folder / entry["file"], lambda fh: put(table, fh))
        manifest.record(k, entry)

    return write
