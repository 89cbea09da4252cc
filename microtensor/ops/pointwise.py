"""More elementwise math, beside the core set in elementwise.py: inverse trigonometric and
hyperbolic functions, exp2 and log2, rounding, copysign, lerp, and the value tests
isclose and bitwise_not. `g` is the gradient arriving at the output; broadcast operands
get theirs summed back by the `primitive` decorator.

Outside a function's domain (asin of 2, acosh of 0, log2 of -1) the value is NaN, as in
NumPy and PyTorch; `mt.detect_anomaly()` finds where one was made.
"""
import math

import numpy as np

from ..autograd import document_op, primitive
from ..errors import describe, op_error
from .elementwise import promote_as_pytorch

_LN2 = math.log(2)   # a Python float, so float32 stays float32


# ----------------------------------------------------------------- trigonometric

@primitive("tan", rule="dx = g * (1 + tan(x)^2)")
def tan(x):
    """The tangent of x (in radians), elementwise."""
    out = np.tan(x)
    def backward(g):
        return (g * (1 + out * out),)
    return out, backward


@primitive("asin", rule="dx = g / sqrt(1 - x^2)")
def asin(x):
    """The inverse of sin on [-1, 1], in [-pi/2, pi/2]."""
    def backward(g):
        return (g / np.sqrt(1 - x * x),)
    return np.arcsin(x), backward


@primitive("acos", rule="dx = -g / sqrt(1 - x^2)")
def acos(x):
    """The inverse of cos on [-1, 1], in [0, pi]."""
    def backward(g):
        return (-g / np.sqrt(1 - x * x),)
    return np.arccos(x), backward


@primitive("atan", rule="dx = g / (1 + x^2)")
def atan(x):
    """The inverse of tan, in (-pi/2, pi/2)."""
    def backward(g):
        return (g / (1 + x * x),)
    return np.arctan(x), backward


# ----------------------------------------------------------------- hyperbolic

@primitive("sinh", rule="dx = g * cosh(x)")
def sinh(x):
    """The hyperbolic sine, (e^x - e^-x) / 2, elementwise."""
    def backward(g):
        return (g * np.cosh(x),)
    return np.sinh(x), backward


@primitive("cosh", rule="dx = g * sinh(x)")
def cosh(x):
    """The hyperbolic cosine, (e^x + e^-x) / 2, elementwise."""
    def backward(g):
        return (g * np.sinh(x),)
    return np.cosh(x), backward


@primitive("asinh", rule="dx = g / sqrt(x^2 + 1)")
def asinh(x):
    """The inverse of sinh, defined for every x."""
    def backward(g):
        return (g / np.sqrt(x * x + 1),)
    return np.arcsinh(x), backward


@primitive("acosh", rule="dx = g / sqrt(x^2 - 1)")
def acosh(x):
    """The inverse of cosh on [1, inf)."""
    def backward(g):
        return (g / np.sqrt(x * x - 1),)
    return np.arccosh(x), backward


@primitive("atanh", rule="dx = g / (1 - x^2)")
def atanh(x):
    """The inverse of tanh on (-1, 1)."""
    def backward(g):
        return (g / (1 - x * x),)
    return np.arctanh(x), backward


# ----------------------------------------------------------------- powers of two

@primitive("exp2", rule="dx = g * 2^x * ln 2")
def exp2(x):
    """2 to the power x, elementwise."""
    out = np.exp2(x)
    def backward(g):
        return (g * out * _LN2,)
    return out, backward


@primitive("log2", rule="dx = g / (x ln 2)")
def log2(x):
    """The base-2 logarithm, elementwise: -inf at 0 and NaN below it."""
    def backward(g):
        return (g / (x * _LN2),)
    return np.log2(x), backward


# ----------------------------------------------------------------- rounding

def _rounding(name, to_integer):
    @primitive(name, rule="dx = 0  (a step function: flat wherever it is differentiable)")
    def op(x):
        # An integer tensor is already whole: it stays as it is, in its dtype (PyTorch).
        out = np.array(x) if np.asarray(x).dtype.kind in "iub" else to_integer(x)
        return out, lambda g: (np.zeros_like(g),)
    op.__name__ = name
    document_op(op, (f"Elementwise np.{to_integer.__name__}, as torch.{name}; the gradient is "
                  f"zero everywhere, as in PyTorch."))
    return op


floor = _rounding("floor", np.floor)
ceil = _rounding("ceil", np.ceil)
trunc = _rounding("trunc", np.trunc)


@primitive("round", rule="dx = 0  (a step function: flat wherever it is differentiable)")
def round(x, *, decimals=0):
    """Round to `decimals` places, halves to the even neighbour (round(2.5) is 2), as
    np.round and torch.round; the gradient is zero."""
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
        raise op_error("round", f"decimals must be an integer, got {decimals!r}", TypeError)
    out = np.array(x) if np.asarray(x).dtype.kind in "iub" and decimals >= 0 \
        else np.round(x, int(decimals))
    return out, lambda g: (np.zeros_like(g),)


# ----------------------------------------------------------------- two and three operands

@primitive("copysign", rule="da = g * copysign(a, b) / a  (0 where a == 0) ;  db = 0")
def copysign(a, b):
    """|a| with the sign of b (the sign bit, so -0.0 counts as negative), as
    torch.copysign. Only `a` gets a gradient: +g or -g, 0 where a == 0 (PyTorch's rule).
    A 0-d tensor promotes as in `+`."""
    a, b = promote_as_pytorch(a, b)
    out = np.copysign(a, b)
    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            flips = np.where(a == 0, 0, out / np.where(a == 0, 1, a))    # +1 or -1
        grad_b = np.zeros(np.shape(b), g.dtype) if isinstance(b, np.ndarray) else None
        return g * flips, grad_b
    return out, backward


@primitive("lerp", rule="dstart = g * (1 - w) ;  dend = g * w ;  dw = g * (end - start)")
def lerp(start, end, weight):
    """start + weight (end - start): linear interpolation, as torch.lerp. Written from
    the nearer end (PyTorch's form), so weight 1 gives `end` exactly. A 0-d `start` or
    `end` promotes as in `+` (PyTorch refuses two dtypes here)."""
    start, end = promote_as_pytorch(start, end)
    gap = end - start
    out = np.where(np.abs(weight) < 0.5, start + weight * gap, end - gap * (1 - weight))
    def backward(g):
        grad_weight = g * gap if isinstance(weight, np.ndarray) else None
        return g * (1 - weight), g * weight, grad_weight
    return out, backward


@primitive("isclose", rule="no gradient (boolean output)")
def isclose(a, b, *, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol |b|, elementwise (np.isclose, torch.isclose): booleans."""
    return np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan), \
        lambda g: (None, None)


@primitive("bitwise_not", rule="no gradient (boolean or integer output)")
def bitwise_not(x):
    """`~x`: logical not of a boolean tensor, bitwise not of an integer one (PyTorch's
    `~`). A float tensor is refused, as in PyTorch.

    >>> (~(mt.arange(4) > 1)).tolist()
    [True, True, False, False]
    """
    if np.asarray(x).dtype.kind not in "biu":
        raise op_error("bitwise_not", f"~ needs a boolean or integer tensor, got "
                       f"{describe(x)}", TypeError, "for a mask, compare first (~(x > 0)); "
                       "to negate numbers use -x")
    return np.invert(x), lambda g: (None,)
