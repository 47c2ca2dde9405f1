"""A plain-text progress bar for the CLI and benchmarks (no extra dependency).

`TextProgress` is a `(done, total)` callable, the same shape as the pipeline's and the decoders'
progress hooks, so it plugs straight into `pipeline.Hooks(progress=...)` or `TurboVAED.decode`.
On a terminal it redraws one line in place; on a pipe or log file it writes one line per update,
so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

Clock = Callable[[], float]


def format_seconds(seconds: float) -> str:
    """3.2 -> '3.2 s', 75 -> '1:15', 3700 -> '1:01:40'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TextProgress:
    """`progress(done, total)` -> `  label [#####-----]  3/8  0.52 s/step  ETA 2.6 s` on `stream`.

    The clock starts at construction (or `restart()`), so the first step's time counts too.
    """

    def __init__(self, label: str, unit: str = "step", stream: Optional[TextIO] = None, width: int = 24,
                 clock: Clock = time.perf_counter, in_place: Optional[bool] = None) -> None:
        self.label, self.unit, self.width, self.clock = label, unit, width, clock
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = in_place if in_place is not None else bool(isatty and isatty())
        self.start = clock()
        self.finished = False

    def restart(self) -> None:
        self.start = self.clock()
        self.finished = False

    def render(self, done: int, total: int) -> str:
        """The bar text for `done` of `total` (no line ending)."""
        total = max(int(total), 1)
        done = min(max(int(done), 0), total)
        filled = self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = self.clock() - self.start
        text = f"  {self.label} [{bar}] {done:>{len(str(total))}}/{total}"
        if done:
            per = elapsed / done
            text += f"  {per:.2f} s/{self.unit}"
            text += f"  ETA {format_seconds(per * (total - done))}" if done < total else \
                f"  done in {format_seconds(elapsed)}"
        return text

    def __call__(self, done: int, total: int) -> None:
        text = self.render(done, total)
        last = done >= total
        if self.in_place:
            self.stream.write("\r" + text + ("\n" if last else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.finished = last
