"""Progress of a long step as the user sees it: a tqdm bar in a terminal; elsewhere (CI, nohup, a
log file, where a bar is one endless line) a line every PROGRESS_S seconds and one at the end:

    evaluate: 1,024/7,476 rows (812 rows/s, ETA 0:08)

Everything goes to stderr, so a command's stdout stays its result.

    with Progress("train: epoch 1/30", total=steps, unit="steps") as progress:
        for batch in batches:
            ...
            progress.update(1, loss=f"{loss:.3f}")
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

PROGRESS_S = 5.0  # seconds between lines when stderr is not a terminal


def note(name: str, message: str) -> None:
    """One line of a command's progress (a stage begun or done), on stderr."""
    tqdm.write(f"{name}: {message}", file=sys.stderr)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class Progress:
    def __init__(self, name: str, total: int | None = None, unit: str = "it", enabled: bool = True,
                 every_s: float = PROGRESS_S):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.enabled = enabled
        self.done, self.postfix = 0, {}
        self.started = self.shown = time.monotonic()
        terminal = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=name, unit=f" {unit}", leave=False, file=sys.stderr) if terminal else None

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
        elif self.enabled and time.monotonic() - self.shown >= self.every_s:
            self._line()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        of = f"/{self.total:,}" if self.total else ""
        eta = f", ETA {_clock((self.total - self.done) / rate)}" if self.total and rate > 0 and self.done < self.total else ""
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        return f"{self.name}: {self.done:,}{of} {self.unit} ({rate:,.0f} {self.unit}/s{extra}{eta}, {_clock(elapsed)} so far)"

    def _line(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)
        self.shown = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
