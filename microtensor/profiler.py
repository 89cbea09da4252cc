"""Where the time goes: per-op forward and backward times, call counts and bytes.

    >>> import microtensor as mt
    >>> x = mt.randn(8, 8, requires_grad=True)
    >>> with mt.profile() as prof:
    ...     (x * x).sum().backward()
    >>> prof.rows["mul"]["forward_calls"], prof.rows["mul"]["backward_calls"]
    (1, 1)

Off by default; when off, each op pays one thread-local attribute read. Inside the block
every op's forward is timed from its inputs' arrays to its output array, and every node's
backward closure is timed during `backward()`. "Bytes" are the bytes of the arrays an op
returns (its output forward, its input gradients backward): a proxy for what it
allocates, which misses temporaries inside the op and counts views as if they were new.
Times include the timer's own cost (well under a microsecond per op), so ops that are
nearly free look slightly dearer than they are.
"""
from __future__ import annotations

from .autograd import _mode

_FIELDS = ("forward_calls", "forward_s", "forward_bytes",
           "backward_calls", "backward_s", "backward_bytes")


class profile:
    """Context manager that collects per-op statistics in `rows` ({op name: {field:
    value}}, fields: forward/backward `_calls`, `_s` (seconds) and `_bytes`).
    Thread-local, like `no_grad`; a nested `profile` collects on its own and the outer
    one resumes after it. One object may be entered again to add more steps."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def record(self, name: str, phase: str, seconds: float, nbytes: int) -> None:
        """Add one call of op `name` in `phase` ("forward" or "backward")."""
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = dict.fromkeys(_FIELDS, 0)
        row[phase + "_calls"] += 1
        row[phase + "_s"] += seconds
        row[phase + "_bytes"] += nbytes

    def __enter__(self):
        self._previous = _mode.profile
        _mode.profile = self
        return self

    def __exit__(self, *exc):
        _mode.profile = self._previous

    def total_seconds(self) -> float:
        """The forward and backward time of every op, summed, in seconds."""
        return sum(r["forward_s"] + r["backward_s"] for r in self.rows.values())

    def sorted_rows(self) -> list[tuple[str, dict]]:
        """(name, row) pairs, the op with the most time (forward + backward) first."""
        return sorted(self.rows.items(),
                      key=lambda item: -(item[1]["forward_s"] + item[1]["backward_s"]))

    def table(self, per: int = 1) -> str:
        """A readable table, times in ms and bytes in MB, each divided by `per` (e.g. the
        number of training steps profiled, to show one step)."""
        header = ("op", "fwd ms", "bwd ms", "calls fwd/bwd", "MB fwd/bwd")
        lines = [header]
        for name, r in self.sorted_rows():
            lines.append((name, f"{1e3 * r['forward_s'] / per:.3f}",
                          f"{1e3 * r['backward_s'] / per:.3f}",
                          f"{r['forward_calls'] // per}/{r['backward_calls'] // per}",
                          (f"{r['forward_bytes'] / per / 1e6:.2f}/"
                           f"{r['backward_bytes'] / per / 1e6:.2f}")))
        lines.append(("total", f"{1e3 * sum(r['forward_s'] for r in self.rows.values()) / per:.3f}",
                      f"{1e3 * sum(r['backward_s'] for r in self.rows.values()) / per:.3f}",
                      "", ""))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
        text.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(text)
