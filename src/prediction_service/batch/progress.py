"""Progress of a long job: a bar redrawn in place on a terminal, a line every few seconds
in a log (and the same facts either way: rows done, rows a second, time left)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 24


class Progress:
    def __init__(
        self,
        total: int | None,
        stream: TextIO | None = None,
        every_s: float | None = None,
        exact: bool = True,
    ) -> None:
        self.total = total
        self.exact = exact  # False: total is an estimate
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = every_s if every_s is not None else (0.2 if self.tty else 5.0)
        self.done = 0
        self.skipped = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def advance(self, rows: int, skipped: bool = False) -> None:
        """``rows`` more done; ``skipped`` rows (a resumed job's finished parts) count
        toward the total but not the rate."""
        self.done += rows
        if skipped:
            self.started = time.monotonic()
            self.skipped = self.done
        now = time.monotonic()
        if now - self._shown >= self.every_s:
            self._shown = now
            self._show(final=False)

    def finish(self) -> None:
        self._show(final=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.done - self.skipped) / elapsed
        parts = [f"{self.done:,} rows"]
        total = max(self.total, self.done) if self.total is not None else None
        if total:
            parts[0] = f"{self.done:,}/{'' if self.exact else '~'}{total:,} rows"
        parts.append(f"{rate:,.0f} rows/s")
        if total and rate > 0 and self.done < total:
            parts.append(f"{_duration((total - self.done) / rate)} left")
        parts.append(f"{_duration(elapsed)} elapsed")
        return "  ".join(parts)

    def _show(self, final: bool) -> None:
        text = self.line()
        if self.tty:
            total = max(self.total or 0, self.done)
            filled = int(BAR * self.done / total) if total else 0
            bar = "#" * filled + "." * (BAR - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K" + ("\n" if final else ""))
        else:
            self.stream.write(f"{'done' if final else 'scoring'}: {text}\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
