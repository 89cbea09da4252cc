"""A one-line progress bar for training in a terminal: steps done, the loss, time elapsed
and an estimate of the time left.

Our own rather than tqdm's or rich's: the command line needs one bar, redrawn in place,
that log lines can print above; that is forty lines, and either library would be the
project's first dependency for the terminal. When output goes to a file or a pipe
(a log, CI, the tests) there is no bar: the log lines every `--log-every` steps carry
the same numbers.

    >>> import io
    >>> bar = ProgressBar(total=200, stream=io.StringIO(), width=10)
    >>> bar.update(50, loss=1.5)
    >>> print(bar.stream.getvalue().split("\\r")[-1].split(" | 0")[0])
     25% |##........|    50/200 loss 1.5
"""
from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """`update(done, loss)` after each step redraws the bar (at most every
    `min_interval` seconds, and always at the last step); `log(line)` prints a line
    above it; `close()` clears it. Time counts from the first update, and so does the
    rate behind the time left: a resumed run's earlier steps took no time in this
    session, and the first step's time includes setting up."""

    def __init__(self, total: int, stream=None, width: int = 30, min_interval: float = 0.1):
        self.total, self.width, self.min_interval = total, width, min_interval
        self.stream = sys.stdout if stream is None else stream
        self.started = self.first = None
        self.last_draw = -float("inf")
        self.losses: list[float] = []
        self.shown = False

    def update(self, done: int, loss: float) -> None:
        """Step `done` of `total` finished with this loss; the bar shows the mean loss
        of the steps since it was last drawn."""
        now = time.perf_counter()
        if self.started is None:
            self.started, self.first = now, done
        self.losses.append(loss)
        if now - self.last_draw < self.min_interval and done < self.total:
            return
        elapsed = now - self.started
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        left = clock((self.total - done) / rate) if rate > 0 else "?"
        filled = round(self.width * done / self.total)
        mean_loss = sum(self.losses) / len(self.losses)
        self.stream.write(f"\r{done / self.total:4.0%} |{'#' * filled}"
                          f"{'.' * (self.width - filled)}| {done:5d}/{self.total} loss "
                          f"{mean_loss:.4g} | {clock(elapsed)} elapsed, ~{left} left\033[K")
        self.stream.flush()
        self.losses, self.last_draw, self.shown = [], now, True

    def log(self, line: str) -> None:
        """Print `line` where the bar was; the next update draws the bar below it."""
        self.clear()
        self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar from its line."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.shown = False

    def close(self) -> None:
        """Leave the terminal as it was: the bar erased."""
        self.clear()
        self.stream.flush()
