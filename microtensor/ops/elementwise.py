"""Elementwise primitives. Each returns its output and the backward closure; `g` is the
gradient arriving at the output (`grad_out`). Broadcast operands get their gradient summed
back to their own shape by the `primitive` decorator, so these rules are written as if
every operand had the output's shape.
"""
import math

import numpy as np

from ..autograd import document_op, primitive
from ..errors import describe, op_error
from ..kernels import for_row_blocks, reusable


def check_numbers(name, x):
    """Refuse, naming `name`, an operand that is not numbers (None, a string): an op
    whose NumPy call would turn it into NaN, or a composed function whose first
    primitive would otherwise name itself in the error."""
    data = x if isinstance(x, np.ndarray) else getattr(x, "data", x)
    if np.asarray(data).dtype.kind not in "biuf":
        raise op_error(name, f"needs numbers, got {describe(x)}", TypeError,
                       "pass a float tensor, array or number")


def _is_array(x):
    return isinstance(x, np.ndarray)


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def promote_as_pytorch(a, b):
    """`a` and `b` cast to the dtype PyTorch gives their result, where it differs from
    NumPy's: a 0-d tensor does not widen a tensor of its own kind or above (float32 with
    a 0-d float64 stays float32), and one of a higher kind sets the dtype (int32 with a
    0-d float32 is float32; NumPy says float64). Where both are 0-d or neither is, and for
    Python numbers (weak in both libraries), NumPy already agrees."""
    if not (type(a) is np.ndarray and type(b) is np.ndarray) or a.dtype == b.dtype or (
            a.ndim == 0) == (b.ndim == 0):
        return a, b
    zero_d, other = (a, b) if a.ndim == 0 else (b, a)
    if zero_d.dtype.kind not in _CATEGORY or other.dtype.kind not in _CATEGORY:
        return a, b     # not numbers (a string): the op itself says what is wrong
    higher = _CATEGORY[zero_d.dtype.kind] > _CATEGORY[other.dtype.kind]
    dtype = zero_d.dtype if higher else other.dtype
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)


# ----------------------------------------------------------------- arithmetic

# A Python number operand (scores * 0.125) gets no gradient: it would be a full-size
# product summed to a scalar and then thrown away.

@primitive("add", rule="da = g ;  db = g")
def add(a, b):
    """a + b elementwise; `t + u` calls it. The shapes broadcast as in NumPy: sizes are
    aligned from the last axis, and a size of 1 stretches to match.

        >>> mt.add(mt.tensor([[1.0], [2.0]]), mt.tensor([10.0, 20.0]))    # (2, 1) + (2,)
        tensor([[11., 21.],
                [12., 22.]])
    """
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        return g, g
    return a + b, backward


@primitive("sub", rule="da = g ;  db = -g")
def sub(a, b):
    """a - b elementwise, broadcast as `add` is; `t - u` calls it."""
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        return (g if _is_array(a) else None), (-g if _is_array(b) else None)
    return a - b, backward


@primitive("mul", rule="da = g * b ;  db = g * a")
def mul(a, b):
    """a * b elementwise, broadcast as `add` is; `t * u` calls it. (The matrix product is
    `matmul`, `t @ u`.)"""
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        return (g * b if _is_array(a) else None), (g * a if _is_array(b) else None)
    return a * b, backward


@primitive("div", rule="da = g / b ;  db = -g * a / b^2")
def div(a, b):
    """a / b elementwise, broadcast as `add` is; `t / u` calls it. Integers divide to
    floats, as in PyTorch:

        >>> mt.tensor([1, 2]) / 4
        tensor([0.25, 0.5 ])
    """
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        grad_a = g / b
        return (grad_a if _is_array(a) else None), (-grad_a * a / b if _is_array(b) else None)
    return a / b, backward


@primitive("pow", rule="da = g * b * a^(b-1) ;  db = g * a^b * log(a)")
def pow(a, b):
    """a ** b elementwise, broadcast as `add` is; `t ** 2` and `2 ** t` call it.

        >>> x = mt.tensor([2.0], requires_grad=True)
        >>> (x ** 3).backward()       # d(x^3)/dx = 3 x^2 = 12
        >>> x.grad
        array([12.], dtype=float32)
    """
    a, b = promote_as_pytorch(a, b)
    out = a ** b
    def backward(g):
        # As in PyTorch: a negative base gives a NaN exponent gradient, not an error, and
        # the exponent gradient is only computed when the exponent is an array.
        with np.errstate(divide="ignore", invalid="ignore"):
            # where b == 0, a^b is constant 1: gradient 0, even at a == 0 (0^-1 is inf).
            grad_a = g * np.where(b == 0, 0, b * a ** (b - 1))
            # PyTorch's convention at a == 0, b >= 0: a^b does not grow with b there, 0.
            grad_b = (g * np.where((a == 0) & (b >= 0), 0, out * np.log(a))
                      if _is_array(b) else None)
        return grad_a, grad_b
    return out, backward


@primitive("neg", rule="dx = -g")
def neg(x):
    """-x elementwise; `-t` calls it."""
    def backward(g):
        return (-g,)
    return -x, backward


# ----------------------------------------------------------------- unary functions

@primitive("exp", rule="dx = g * exp(x)")
def exp(x):
    """e to the power x, elementwise."""
    out = np.exp(x)
    def backward(g):
        return (g * out,)
    return out, backward


@primitive("log", rule="dx = g / x")
def log(x):
    """The natural logarithm, elementwise: -inf at 0 and NaN below it, as in NumPy."""
    def backward(g):
        return (g / x,)
    return np.log(x), backward


@primitive("sqrt", rule="dx = g / (2 * sqrt(x))")
def sqrt(x):
    """The square root, elementwise (NaN below 0)."""
    out = np.sqrt(x)
    def backward(g):
        return (g / (2 * out),)
    return out, backward


@primitive("tanh", rule="dx = g * (1 - tanh(x)^2)")
def tanh(x):
    """The hyperbolic tangent, elementwise: x squashed into (-1, 1)."""
    out = np.tanh(x)
    def backward(g):
        return (g * (1 - out * out),)
    return out, backward


@primitive("sigmoid", rule="dx = g * s * (1 - s),  s = sigmoid(x)")
def sigmoid(x):
    """1 / (1 + exp(-x)) elementwise: x squashed into (0, 1). Computed as
    (tanh(x / 2) + 1) / 2, which never overflows.

        >>> mt.sigmoid(mt.tensor([-100.0, 0.0, 100.0]))
        tensor([0. , 0.5, 1. ])
    """
    # 1/(1+exp(-x)) overflows in exp for very negative x; tanh form is stable everywhere.
    out = 0.5 * (np.tanh(0.5 * x) + 1)
    def backward(g):
        return (g * out * (1 - out),)
    return out, backward


@primitive("relu", rule="dx = g * (x > 0)")
def relu(x):
    """max(x, 0) elementwise, the rectified linear unit (gradient 0 at x = 0, as in PyTorch)."""
    out = np.maximum(x, 0)
    def backward(g):
        return (g * (x > 0),)
    return out, backward


_GELU_C = float(np.sqrt(2 / np.pi))  # a Python float, so float32 stays float32


def gelu_tanh_reference(x):
    """GELU's tanh form as in a textbook, and its backward: the specification `gelu_tanh`
    meets. y = 0.5 x (1 + t) with t = tanh(c (x + k x^3)), c = sqrt(2/pi), k = 0.044715;
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)."""
    c, k = _GELU_C, 0.044715
    t = np.tanh(c * (x + k * x**3))
    def backward(g):
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * k * x**2)),)
    return 0.5 * x * (1 + t), backward


def gelu_tanh_gate(x, x_squared, out):
    """s = (1 + tanh(c (x + k x^3))) / 2 written into `out` (which may be `x_squared`), so
    that GELU is x s: the steps `gelu_tanh` and decoding's value-only GELU share."""
    np.multiply(x_squared, _GELU_C * 0.044715, out=out)
    out += _GELU_C
    out *= x
    np.tanh(out, out=out)                     # t = tanh(c (x + k x^3))
    out *= 0.5
    out += 0.5                                # s = (1 + t) / 2
    return out


@primitive("gelu", rule="dx = g * dydx,  dydx = s (1 + 2c x (1 - s) (1 + 3k x^2)),"
                        "  s = (1 + tanh(c (x + k x^3))) / 2", new_grads=True)
def gelu_tanh(x):
    """GELU in its tanh form (as in GPT-2 and PyTorch's `gelu(approximate='tanh')`):
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Computes what `gelu_tanh_reference`
    computes, faster (see kernels.py)."""
    # The forward writes the output and the derivative dy/dx in the same pass over the
    # rows, while x and x^2 are in cache, so the backward is one multiply. The backward
    # keeps dydx, one array the size of the activation, and neither x nor t (the
    # textbook form keeps both). In-place updates: on large activations each temporary
    # array costs more (allocation, page faults) than the arithmetic, and row blocks keep
    # the few buffers in cache. Any shape (0-d included) is viewed as a column of
    # elements, so it splits into blocks.
    x = np.asarray(x)
    shape = x.shape
    x = x.reshape(-1, 1)
    dtype = np.result_type(x, 0.5)
    out = np.empty(x.shape, dtype)
    dydx = np.empty(x.shape, dtype)
    gelu_tanh_and_slope(x, out, dydx)

    def backward(g):
        return (np.multiply(g, dydx.reshape(shape), out=reusable(g, dydx)),)
    return out.reshape(shape), backward


def gelu_tanh_and_slope(x, out, dydx) -> None:
    """GELU's tanh form of x written into `out` and its derivative dy/dx into `dydx`, in
    row blocks (`for_row_blocks`), all three the same shape; `out` may be x itself (the
    fused feed-forward writes GELU over the product it reads)."""
    c, k = _GELU_C, 0.044715

    def forward_block(x, out, dydx, x_squared, s):
        # With s = (1 + t) / 2, y = x s. As 1 - t^2 = 4 s (1 - s), the textbook derivative
        # 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3k x^2) is s + 2c x s (1 - s) (1 + 3k x^2).
        # s (1 - s) comes first: it is exactly 0 where |x| is large, so the growing
        # factors meet a 0 before they can overflow (0 * inf would be NaN).
        np.multiply(x, x, out=x_squared, dtype=dydx.dtype)   # (float even for integer x)
        gelu_tanh_gate(x, x_squared, s)
        np.subtract(1, s, out=dydx)
        dydx *= s
        dydx *= x                             # x s (1 - s)
        slope = np.multiply(x_squared, 6 * c * k, out=x_squared)   # x^2 is not needed again
        slope += 2 * c                        # 2c (1 + 3k x^2)
        dydx *= slope
        dydx += s
        np.multiply(x, s, out=out)            # y = x s, last: out may be x
    for_row_blocks(forward_block, x, out, dydx, scratch=2)


@primitive("abs", rule="dx = g * sign(x)")
def abs(x):
    """|x| elementwise; `abs(t)` calls it (gradient 0 at x = 0, as in PyTorch)."""
    def backward(g):
        return (g * np.sign(x),)
    return np.abs(x), backward


@primitive("clip", rule="dx = g * (min <= x <= max)")
def clip(x, *, min=None, max=None):
    """x limited to [min, max] elementwise, either bound may be None (PyTorch's `clamp`).
    The gradient passes where min <= x <= max, the bounds included (`hardtanh` leaves them
    out).

        >>> mt.clip(mt.tensor([-2.0, 0.5, 3.0]), 0, 1)
        tensor([0. , 0.5, 1. ])
    """
    if min is None and max is None:
        raise op_error("clip", "give at least one of min and max")
    out = np.clip(x, min, max)
    def backward(g):
        inside = np.ones(np.shape(x), dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        return (g * inside,)
    return out, backward


def _tie_shares(a_wins, tie, dtype):
    """The share of g that goes to `a`: 1 where it wins, 1/2 at a tie, 0 where it loses.
    `b` gets the rest, so the two always add up to g."""
    share_a = a_wins.astype(dtype)
    share_a[tie] = 0.5
    return share_a


@primitive("maximum", rule="da = g * s ;  db = g * (1 - s),  s = 1 if a > b, 1/2 if a == b, "
                           "else 0")
def maximum(a, b):
    """The larger of a and b elementwise, broadcast (np.maximum, torch.maximum); `max` is
    the reduction over an axis.

        >>> mt.maximum(mt.tensor([1.0, 5.0]), 3)
        tensor([3., 5.])
    """
    # Ties split the gradient evenly, as PyTorch does and as the max reduction does
    # (so maximum(x, 0) used as a ReLU sends 1/2 at x == 0).
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        share_a = _tie_shares(np.asarray(a > b), np.asarray(a == b), g.dtype)
        return g * share_a, g * (1 - share_a)
    return np.maximum(a, b), backward


@primitive("minimum", rule="da = g * s ;  db = g * (1 - s),  s = 1 if a < b, 1/2 if a == b, "
                           "else 0")
def minimum(a, b):
    """The smaller of a and b elementwise, broadcast (np.minimum, torch.minimum)."""
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        share_a = _tie_shares(np.asarray(a < b), np.asarray(a == b), g.dtype)
        return g * share_a, g * (1 - share_a)
    return np.minimum(a, b), backward


def _check_mask(name, mask):
    if np.asarray(mask).dtype != bool or not isinstance(mask, (np.ndarray, np.bool_, bool)):
        raise op_error(name, f"the condition/mask must be a boolean tensor or array, got "
                       f"{describe(mask)}", TypeError,
                       "build it with a comparison, e.g. scores > 0, or .astype(bool)")


@primitive("where", rule="da = g * cond ;  db = g * ~cond")
def where(cond, a, b):
    """`a` where `cond` is True, else `b` (of the dtype PyTorch gives: a 0-d tensor
    promotes as in `+`)."""
    _check_mask("where", cond)
    a, b = promote_as_pytorch(a, b)
    def backward(g):
        # Select, never multiply by the other branch: a NaN/inf in the unselected branch
        # must not leak into the gradient (0 * inf = nan).
        zero = np.zeros((), dtype=g.dtype)
        return None, np.where(cond, g, zero), np.where(cond, zero, g)
    return np.where(cond, a, b), backward


def masked_fill_reference(x, mask, value):
    """masked_fill as in a textbook, and its backward: the specification `masked_fill`
    meets. The output selects value or x; the gradient selects 0 or g (a select, never a
    multiply by ~mask: g * 0 would turn an inf in g into NaN)."""
    def backward(g):
        return np.where(mask, np.zeros((), dtype=g.dtype), g), None
    return np.where(mask, np.asarray(value, dtype=x.dtype), x), backward


@primitive("masked_fill", rule="dx = g * ~mask")
def masked_fill(x, mask, *, value):
    """`x` with `value` written where `mask` is True (attention masks use -inf).
    Computes what `masked_fill_reference` computes, faster."""
    _check_mask("masked_fill", mask)
    value = np.asarray(value, dtype=x.dtype)
    # A copy, then `value` written through the mask: about twice as fast as np.where,
    # which reads a broadcast (T, T) mask and both branches for every element.
    out = np.empty(np.broadcast_shapes(x.shape, np.shape(mask)), x.dtype)
    np.copyto(out, x)
    np.copyto(out, value, where=mask)
    def backward(g):
        grad = np.array(g, dtype=g.dtype)      # a writable copy (g may be a broadcast view)
        np.copyto(grad, np.zeros((), dtype=g.dtype), where=mask)
        return grad, None
    return out, backward


@primitive("astype", rule="dx = g  (cast back to x's dtype)")
def astype(x, *, dtype):
    """x cast to `dtype` (NumPy's astype; PyTorch's `x.to(dtype)`). Floats cast to integers
    are truncated toward zero; a float result keeps the graph.

        >>> mt.ops.astype(mt.tensor([1.5, -2.5]), dtype=np.int64)
        tensor([ 1, -2], dtype=int64)
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc":       # np.dtype({}) is a structured dtype, not a number
        raise op_error("astype", f"cannot cast {describe(x)} to {dtype}", TypeError,
                       "use a bool, integer or float dtype")
    def backward(g):
        return (g,)
    return x.astype(dtype), backward


# ----------------------------------------------------------------- comparisons
# No gradient: their outputs are booleans. They are primitives only so that they accept
# Tensors, arrays and numbers alike; bool outputs never require grad.

def _comparison(name, compare, symbol, torch_name):
    @primitive(name, rule="no gradient (boolean output)")
    def op(a, b):
        return compare(a, b), lambda g: (None, None)
    op.__name__ = name
    document_op(op, (f"a {symbol} b elementwise, broadcast: a boolean tensor, no gradient "
                  f"(np.{name}, torch.{torch_name}); `t {symbol} u` calls it."))
    return op


less = _comparison("less", np.less, "<", "lt")
less_equal = _comparison("less_equal", np.less_equal, "<=", "le")
greater = _comparison("greater", np.greater, ">", "gt")
greater_equal = _comparison("greater_equal", np.greater_equal, ">=", "ge")
equal = _comparison("equal", np.equal, "==", "eq")
not_equal = _comparison("not_equal", np.not_equal, "!=", "ne")


def _check_float_test(name):
    @primitive(name, rule="no gradient (boolean output)")
    def op(x):
        return getattr(np, name)(x), lambda g: (None,)
    op.__name__ = name
    document_op(op, f"Elementwise np.{name}: a boolean tensor, no gradient.")
    return op


isnan = _check_float_test("isnan")
isfinite = _check_float_test("isfinite")


@primitive("isinf", rule="no gradient (boolean output)")
def isinf(x, *, detect_positive=True, detect_negative=True):
    """True where x is +inf or -inf (either one can be left out): a boolean tensor, no
    gradient."""
    out = np.zeros(np.shape(x), dtype=bool)
    if detect_positive:
        out |= np.isposinf(x)
    if detect_negative:
        out |= np.isneginf(x)
    return out, lambda g: (None,)


# ----------------------------------------------------------------- more unary math

@primitive("sign", rule="dx = 0  (sign is flat wherever it is differentiable)")
def sign(x):
    """-1, 0 or 1 by the sign of x, elementwise; its gradient is 0."""
    def backward(g):
        return (np.zeros_like(g),)
    return np.sign(x), backward


@primitive("sin", rule="dx = g * cos(x)")
def sin(x):
    """The sine of x (in radians), elementwise."""
    def backward(g):
        return (g * np.cos(x),)
    return np.sin(x), backward


@primitive("cos", rule="dx = -g * sin(x)")
def cos(x):
    """The cosine of x (in radians), elementwise."""
    def backward(g):
        return (-g * np.sin(x),)
    return np.cos(x), backward


@primitive("square", rule="dx = g * 2x")
def square(x):
    """x * x elementwise, as one op (`x ** 2` is `pow`)."""
    def backward(g):
        return (g * 2 * x,)
    return np.square(x), backward


@primitive("rsqrt", rule="dx = -g / (2 x^(3/2)) = -g * y^3 / 2,  y = 1/sqrt(x)")
def rsqrt(x):
    """1 / sqrt(x): inf at 0 and NaN below it, as in PyTorch."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1 / np.sqrt(x)
    def backward(g):
        return (g * -0.5 * out * out * out,)
    return out, backward


# math.erf is exact to double precision; NumPy has no erf. One Python call per element
# is slow next to a ufunc, but fine for this library's sizes, and exact where a rational
# approximation would not be.
_erf_elementwise = np.frompyfunc(math.erf, 1, 1)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


@primitive("erf", rule="dx = g * 2/sqrt(pi) * exp(-x^2)")
def erf(x):
    """The Gauss error function, 2/sqrt(pi) * integral_0^x exp(-t^2) dt."""
    check_numbers("erf", x)   # np.asarray(None, float) would be NaN
    dtype = np.result_type(x, 0.5)
    out = np.asarray(_erf_elementwise(np.asarray(x, np.float64)), np.float64).astype(dtype)
    def backward(g):
        return (g * _TWO_OVER_SQRT_PI * np.exp(-np.square(x)),)
    return out, backward
