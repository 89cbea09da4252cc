"""Activation functions beyond relu/tanh/sigmoid/gelu(tanh) (those are in elementwise.py),
each a primitive with its derivative, plus `gelu`, which picks the tanh form or the exact
one.
"""
import math

import numpy as np

from ..autograd import primitive
from ..errors import op_error
from .elementwise import (
    _erf_elementwise,
    add,
    check_numbers,
    div,
    gelu_tanh,
    mul,
    sigmoid,
    tanh,
)
from .elementwise import abs as absolute


def _sigmoid(z):
    return 0.5 * (np.tanh(0.5 * z) + 1)   # the stable form used by `sigmoid`


def _check_number(name, label, value, positive=False):
    """A finite number (positive if asked), or an error naming the op and the setting."""
    wanted = f"a {'positive ' if positive else ''}finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise op_error(name, f"{label} must be {wanted}, got {value!r}", TypeError)
    if not math.isfinite(value) or (positive and value <= 0):
        raise op_error(name, f"{label} must be {wanted}, got {value!r}")


@primitive("silu", rule="dx = g * s * (1 + x (1 - s)),  s = sigmoid(x)")
def silu(x):
    """x * sigmoid(x) (also called swish)."""
    s = _sigmoid(x)
    def backward(g):
        # d/dx [x s] = s + x s (1 - s)
        return (g * s * (1 + x * (1 - s)),)
    return x * s, backward


@primitive("leaky_relu", rule="dx = g * (1 if x > 0 else negative_slope)")
def leaky_relu(x, *, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise: a ReLU that lets a little gradient
    through below 0."""
    _check_number("leaky_relu", "negative_slope", negative_slope)
    slope = np.where(x > 0, 1.0, negative_slope).astype(np.result_type(x, 0.5))
    def backward(g):
        return (g * slope,)
    return x * slope, backward


@primitive("elu", rule="dx = g * (1 if x > 0 else alpha * exp(x))")
def elu(x, *, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    _check_number("elu", "alpha", alpha)
    negative = alpha * np.expm1(np.minimum(x, 0))   # expm1: exact near 0; min: no overflow
    def backward(g):
        return (g * np.where(x > 0, 1.0, negative + alpha),)
    return np.where(x > 0, x, negative), backward


@primitive("softplus", rule="dx = g * sigmoid(beta x)  (g where beta x > threshold)")
def softplus(x, *, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, computed without overflow; where beta x > threshold it
    is x itself (as PyTorch), since the two differ by less than exp(-threshold)."""
    _check_number("softplus", "beta", beta, positive=True)
    _check_number("softplus", "threshold", threshold)
    scaled = beta * x
    linear = scaled > threshold
    out = np.where(linear, x, np.logaddexp(0, scaled) / beta)
    def backward(g):
        return (g * np.where(linear, 1.0, _sigmoid(scaled)),)
    return out, backward


_INV_SQRT_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def gelu_exact_reference(x):
    """Exact GELU as in a textbook, and its backward: the specification `gelu_exact`
    meets. y = x Phi(x); dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    dtype = np.result_type(x, 0.5)
    cdf = (0.5 * (1 + np.asarray(_erf_elementwise(np.asarray(x, np.float64) * _INV_SQRT_2),
                                 np.float64))).astype(dtype)
    def backward(g):
        return (g * (cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * np.square(x))),)
    return x * cdf, backward


@primitive("gelu", rule="dx = g * dydx,  dydx = Phi(x) + x * phi(x),"
                        "  Phi, phi = the normal cdf and pdf")
def gelu_exact(x):
    """GELU as defined, x * Phi(x) with Phi(x) = (1 + erf(x / sqrt(2))) / 2 (PyTorch's
    default `gelu`, `approximate='none'`). Computes what `gelu_exact_reference` computes."""
    dtype = np.result_type(x, 0.5)
    cdf = (0.5 * (1 + np.asarray(_erf_elementwise(np.asarray(x, np.float64) * _INV_SQRT_2),
                                 np.float64))).astype(dtype)
    # d/dx [x Phi(x)] = Phi(x) + x phi(x), formed here while x and Phi(x) are at hand, so
    # the backward is one multiply and saves dydx (the textbook form saves Phi(x)).
    dydx = x * _INV_SQRT_2PI * np.exp(-0.5 * np.square(x))
    dydx += cdf
    def backward(g):
        return (g * dydx,)
    return x * cdf, backward


def gelu(x, approximate: str = "tanh"):
    """GELU. `approximate="tanh"` (the default here: GPT-2's form, PyTorch's
    `gelu(approximate='tanh')`) or `"none"` for the exact x * Phi(x) (PyTorch's default).

        >>> x = mt.tensor([-1.0, 0.0, 1.0])
        >>> mt.gelu(x)
        tensor([-0.1588,  0.    ,  0.8412])
        >>> mt.gelu(x, approximate="none")
        tensor([-0.1587,  0.    ,  0.8413])
    """
    if approximate == "tanh":
        return gelu_tanh(x)
    if approximate == "none":
        return gelu_exact(x)
    raise op_error("gelu", f"approximate must be 'tanh' or 'none', got {approximate!r}")


# ----------------------------------------------------------------- piecewise-linear

@primitive("hardtanh", rule="dx = g * (min_val < x < max_val)")
def hardtanh(x, *, min_val=-1.0, max_val=1.0):
    """x clipped to [min_val, max_val]. Unlike `clip`, the gradient is 0 at the bounds
    themselves (PyTorch's hardtanh, so relu6 sends nothing at 0 and 6)."""
    _check_number("hardtanh", "min_val", min_val)
    _check_number("hardtanh", "max_val", max_val)
    if min_val > max_val:
        raise op_error("hardtanh", f"min_val {min_val} is above max_val {max_val}",
                       fix="pass min_val <= max_val")
    inside = (x > min_val) & (x < max_val)
    def backward(g):
        return (g * inside,)
    return np.clip(x, min_val, max_val), backward


def relu6(x):
    """min(max(x, 0), 6): hardtanh(x, 0, 6), as torch's relu6."""
    check_numbers("relu6", x)
    return hardtanh(x, min_val=0.0, max_val=6.0)


@primitive("hardsigmoid", rule="dx = g / 6 where -3 < x < 3, else 0")
def hardsigmoid(x):
    """relu6(x + 3) / 6: a piecewise-linear sigmoid, 0 below -3 and 1 above 3."""
    inside = (x > -3) & (x < 3)
    def backward(g):
        return (g * inside / 6,)
    return np.clip(x / 6 + 0.5, 0, 1), backward


@primitive("hardswish", rule="dx = g * (0 if x <= -3, (2x + 3) / 6 if x < 3, else 1)")
def hardswish(x):
    """x * relu6(x + 3) / 6 (MobileNetV3's swish without the exp)."""
    # d/dx [x (x + 3) / 6] = (2x + 3) / 6 on the middle piece; at the corners PyTorch
    # takes the outer pieces' slopes (0 at -3, 1 at 3), and so do we.
    slope = np.where(x <= -3, 0.0, np.where(x < 3, (2 * x + 3) / 6, 1.0)).astype(
        np.result_type(x, 0.5))
    def backward(g):
        return (g * slope,)
    return x * np.clip(x + 3, 0, 6) / 6, backward


# ----------------------------------------------------------------- smooth

# SELU's constants (Klambauer et al. 2017): they keep activations at mean 0, variance 1.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    """scale * elu(x, alpha) with SELU's fixed alpha and scale (a composition)."""
    check_numbers("selu", x)
    return mul(elu(x, alpha=SELU_ALPHA), SELU_SCALE)


def celu(x, alpha: float = 1.0):
    """max(0, x) + min(0, alpha (exp(x / alpha) - 1)): alpha * elu(x / alpha), the
    composition (elu with its alpha at 1, scaled so the slope is continuous)."""
    _check_number("celu", "alpha", alpha)
    if alpha == 0:
        raise op_error("celu", "alpha must not be 0 (it divides x)", fix="the usual value is 1.0")
    check_numbers("celu", x)
    return mul(elu(div(x, alpha)), alpha)


def mish(x):
    """x * tanh(softplus(x)) (Misra 2019), the composition."""
    check_numbers("mish", x)
    return mul(x, tanh(softplus(x)))


def softsign(x):
    """x / (1 + |x|), the composition."""
    check_numbers("softsign", x)
    return div(x, add(absolute(x), 1))


@primitive("logsigmoid", rule="dx = g * sigmoid(-x)")
def logsigmoid(x):
    """log(sigmoid(x)) = -log(1 + exp(-x)), computed without overflow (logaddexp)."""
    def backward(g):
        return (g * _sigmoid(-x),)
    return -np.logaddexp(0, -x), backward


def quick_gelu(x):
    """x * sigmoid(1.702 x): the sigmoid approximation of GELU used by CLIP (a
    composition; PyTorch has no such function, Hugging Face calls it QuickGELU)."""
    check_numbers("quick_gelu", x)
    return mul(x, sigmoid(mul(x, 1.702)))
