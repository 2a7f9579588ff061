"""Files written so that a crash leaves either no file or the whole new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL = ".partial"  # a temporary file's suffix (``.<random>.partial`` beside its target)


def write_durably(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` fills a temporary file beside ``path``; it is synced, renamed over ``path``,
    and the folder is synced so that the rename survives a crash too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=PARTIAL)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
