"""How numbers look in a drawing, in the terminal and in the player.

One place decides what "small" means (a tensor whose values fit in an 8 x 8 grid is shown
element by element; a larger one by its shape and statistics), how a number is printed, and
which colour a value gets in a heatmap. `viz.graph`, `viz.stepper` and `viz.player` all
use these, so the three views of one backward pass read the same.
"""
from __future__ import annotations

import html
import math
import unicodedata

import numpy as np

MAX_SIDE = 8  # a tensor is "small" when it fits in a MAX_SIDE x MAX_SIDE grid

# Diverging palettes: (negative end, positive end); zero is white. Values and gradients
# get different hues so a picture never leaves you guessing which one you are reading.
VALUE_PALETTE = ((33, 102, 172), (178, 24, 43))      # blue .. red
GRAD_PALETTE = ((118, 42, 131), (27, 120, 55))       # purple .. green


def as_grid(array, max_side: int = MAX_SIDE) -> np.ndarray | None:
    """A 2-D view of `array` if it fits in `max_side` x `max_side`, else None.

    A scalar is a 1 x 1 grid, a vector one row; higher ranks fold their leading axes into
    rows, so a (2, 2, 3) tensor is a 4 x 3 grid."""
    array = np.asarray(array)
    if array.size == 0:
        return None
    grid = array.reshape(1, -1) if array.ndim < 2 else array.reshape(-1, array.shape[-1])
    if grid.shape[0] > max_side or grid.shape[1] > max_side:
        return None
    return grid


def fmt(value) -> str:
    """One number, short: 3 significant digits, integers and booleans as they are."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if value == 0:
        return "0"
    return f"{value:.3g}"


MOMENTS_BLOCK = 1 << 16     # float64 elements converted at a time by `moments`


def moments(array) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of a real float array, accumulated in float64 a block
    at a time: one pass and no float64 copy of the whole array (a GPT-2 table is 38.6M
    floats, and a player describes a few hundred arrays of its size)."""
    flat = np.ravel(array)
    total = squares = 0.0
    with np.errstate(invalid="ignore", over="ignore"):    # inf and NaN: stats says so
        for start in range(0, flat.size, MOMENTS_BLOCK):
            block = flat[start:start + MOMENTS_BLOCK].astype(np.float64)
            total += block.sum()
            squares += np.dot(block, block)
    return flat.size, total, squares


def norm(array) -> float:
    """The Euclidean (Frobenius) norm, computed in float64 so float32 sums do not drift."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return float(np.sqrt(moments(array)[2]))
    return float(np.sqrt(np.sum(np.square(np.asarray(array, dtype=np.float64)))))


def stats(array) -> str:
    """'mean 0.0123  std 0.981  norm 12.3' (or the dtype's min/max for non-floats)."""
    array = np.asarray(array)
    if array.size == 0:
        return "empty"
    if array.dtype.kind not in "fc":
        return f"min {fmt(array.min())}  max {fmt(array.max())}"
    if array.dtype.kind == "f":
        # One pass: var = E[x^2] - mean^2, unless that cancels (|mean| >> std), where
        # the two-pass form below keeps the digits shown.
        count, total, squares = moments(array)
        mean, mean_square = total / count, squares / count
        if np.isfinite(mean) and np.isfinite(mean_square) and \
                mean_square - mean * mean > 1e-6 * mean_square:
            var = mean_square - mean * mean
            return f"mean {fmt(mean)}  std {fmt(np.sqrt(var))}  norm {fmt(np.sqrt(squares))}"
    as64 = array.astype(np.float64)
    finite = np.isfinite(as64)
    if not finite.all():
        # Masked scores hold -inf on purpose: describe the finite part, count the rest.
        rest = f"{int((~finite).sum())} non-finite"
        return rest if not finite.any() else f"{stats(as64[finite])}  ({rest})"
    return f"mean {fmt(as64.mean())}  std {fmt(as64.std())}  norm {fmt(norm(as64))}"


def preview(array, max_values: int = 64) -> str:
    """Values when there are at most `max_values` of them, else shape and statistics."""
    array = np.asarray(array)
    if array.size <= max_values:
        text = np.array2string(array, precision=4, suppress_small=True,
                               max_line_width=100, floatmode="maxprec")
        return text if array.ndim == 0 else f"{tuple(array.shape)} {text}"
    return f"{tuple(array.shape)} {stats(array)}"


def mix(rgb_a, rgb_b, t: float) -> tuple:
    """Linear blend: t=0 gives rgb_a, t=1 gives rgb_b."""
    return tuple(round(a + (b - a) * t) for a, b in zip(rgb_a, rgb_b))


def hex_colour(rgb) -> str:
    """(r, g, b) in 0..255 as '#rrggbb'."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def diverging(value: float, scale: float, palette=VALUE_PALETTE, fade: float = 0.0) -> str:
    """The heatmap colour of `value` on a symmetric scale [-scale, scale]; `fade` in [0, 1]
    pulls the colour towards white (used for dimmed nodes)."""
    white = (255, 255, 255)
    if not np.isfinite(value):
        return hex_colour(mix((0, 0, 0), white, fade))  # NaN/inf stand out in black
    t = 0.0 if scale == 0 else min(abs(value) / scale, 1.0)
    end = palette[0] if value < 0 else palette[1]
    return hex_colour(mix(mix(white, end, t), white, fade))


def text_colour(value: float, scale: float, dimmed: bool) -> str:
    """Black text on light cells, white on dark ones, grey on dimmed nodes."""
    if dimmed:
        return "#9a9a9a"
    strong = np.isfinite(value) and scale > 0 and abs(value) / scale > 0.6
    return "#ffffff" if strong or not np.isfinite(value) else "#000000"


def format_config(config) -> str:
    """An op's settings as "axis=-1, keepdims=True", the same in the graph, the stepper and
    the player: unset (None/False) ones left out, arrays by shape, long values cut."""
    parts = []
    for key, value in (config or {}).items():
        if value is None or value is False:
            continue
        text = f"array{tuple(value.shape)}" if isinstance(value, np.ndarray) else repr(value)
        parts.append(f"{key}={text if len(text) <= 24 else text[:21] + '...'}")
    return ", ".join(parts)


def printable(text) -> str:
    """`text` with line breaks as spaces and other control characters (and anything XML
    cannot hold) shown as escapes like `\\x1b`: a name can hold anything, an SVG cannot."""
    out = []
    for char in str(text):
        if char in "\n\r\t":
            out.append(" ")
        elif unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff":
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def escape(text: str) -> str:
    """Text for a Graphviz HTML-like label: printable, with &, <, >, quotes escaped, and
    backslashes doubled (Graphviz would read `\\N` or `\\G` in a label as the node's or
    the graph's name)."""
    return html.escape(printable(text), quote=True).replace("\\", "\\\\")


# System `dot` refuses any one string or HTML label over 16,384 bytes. A name in a label
# is cut to MAX_NAME characters (a readable box); a tooltip holds up to MAX_TOOLTIP (at
# most 5 bytes each once escaped: `&` becomes `&amp;`); the player keeps every name whole.
MAX_NAME = 100
MAX_TOOLTIP = 2000
MAX_TITLE = 300


def shorten(text, limit: int = MAX_NAME) -> str:
    """`text` cut in the middle to `limit` characters, its start and end kept
    ("model.layers.0.self_attn…q_proj.weight").

    >>> shorten("a" * 10 + "b" * 10, 9)
    'aaaa…bbbb'
    """
    text = str(text)
    if len(text) <= limit:
        return text
    head = limit // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head):]}"


def dot_string(text: str, limit: int = MAX_TOOLTIP) -> str:
    """Text for a plain (non-HTML) Graphviz attribute such as a tooltip: printable, cut to
    `limit` characters, its backslashes literal, never read as an HTML label even when it
    looks like `<b>`, and its `&` escaped: Graphviz passes `&lt;` through to the SVG as an
    entity, so a name `&lt;` would otherwise show as `<`."""
    import graphviz  # the drawing's dependency; labels.py itself needs only NumPy

    return graphviz.escape(printable(shorten(text, limit)).replace("&", "&amp;"))


# Advance widths of Helvetica's printable ASCII characters (space .. ~), in 1/1000 em, from
# its font metrics: what both layout engines assume for the drawings' font.
_HELVETICA = [278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667,
    667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667,
    611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556,
    278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722,
    500, 500, 500, 334, 260, 334, 584]


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of `text`'s width in points at font `size`: Helvetica's widths
    for ASCII, a full em for CJK, emoji and symbols, 0.65 em for other letters."""
    ems = 0.0
    for char in printable(text):
        code = ord(char)
        if 32 <= code <= 126:
            ems += _HELVETICA[code - 32] / 1000
        elif unicodedata.combining(char):
            continue
        elif unicodedata.east_asian_width(char) in "WF" or code > 0x2000:
            ems += 1.0
        else:
            ems += 0.65
    return ems * size * (1.08 if bold else 1.0)


def pad_width(text: str, size: float, bold: bool = False) -> int | None:
    """The width in points that a label holding `text` needs, when `text` has characters
    outside ASCII; else None (the engines measure ASCII themselves).

    Layout engines without metrics for a character guess its width (the bundled engine
    takes a space per UTF-8 byte, a CJK character comes out 0.8 em wide), so labels with
    such characters are given this width explicitly, in both engines."""
    if str(text).isascii():
        return None
    return math.ceil(text_width(text, size, bold)) + 2


def wrap(text: str, width: int = 44) -> list[str]:
    """Split a derivative rule into lines of about `width` characters, at spaces."""
    lines, line = [], ""
    for word in str(text).split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def summary(array, max_values: int = 64) -> dict:
    """A JSON-ready description: shape, dtype, norm, and the values when small."""
    array = np.asarray(array)
    out = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.dtype.kind in "fc" and array.size:
        out["norm"] = _json_number(norm(array))
        out["stats"] = stats(array)
    if array.size <= max_values:
        out["values"] = _json_values(array.tolist())
    return out


def _json_number(value):
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)  # JSON has no NaN/inf; the player prints the string
        return float(f"{value:.4g}")
    return value


def _json_values(values):
    if isinstance(values, list):
        return [_json_values(v) for v in values]
    return _json_number(values)


def room_for(lines) -> dict:
    """`width` (inches, a minimum) for a plain node whose `lines` ((text, size, bold) each)
    hold characters the engine cannot measure; {} when all are ASCII."""
    widths = [pad_width(text, size, bold) or 0 for text, size, bold in lines]
    if not any(widths):
        return {}
    return {"width": f"{max(widths) / 72 + 0.3:.2f}"}   # + the node's margins


# What the picture's colours and marks mean: (swatch cell attributes, text).
