"""Check analytic gradients against central finite differences, in float64."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .autograd import no_grad
from .errors import op_error
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree (the message names where)."""


def gradcheck(fn: Callable, inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3) -> bool:
    """Compare the gradients backward computes for `fn(*inputs)` with central differences
    (f(x + eps) - f(x - eps)) / (2 eps), element by element, in float64.

    Every floating-point Tensor in `inputs` that requires grad is checked; the others are
    passed through unchanged. A non-scalar output is reduced to a scalar with a fixed
    random projection, so every output element takes part. Returns True, or raises
    GradcheckError naming the input, the worst element and both values.

    >>> x = mt.randn(3, 4, dtype=np.float64, requires_grad=True)
    >>> mt.gradcheck(lambda x: (x * x).sum(), [x])
    True
    """
    inputs = [Tensor(np.array(t.data, dtype=np.float64), requires_grad=True)
              if _checked(t) else t for t in inputs]
    checked = [i for i, t in enumerate(inputs) if _checked(t)]
    if not checked:
        raise op_error("gradcheck", "no input is a floating-point Tensor with "
                       "requires_grad=True, so there is nothing to check")

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    projection = np.random.default_rng(0).standard_normal(out.shape)
    if out.requires_grad:
        out.backward(projection)

    def scalar():
        with no_grad():
            return float(np.sum(np.asarray(fn(*inputs).data, dtype=np.float64) * projection))

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = _central_differences(scalar, x, eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and (np.nanmax(error) > 0 or np.isnan(error).any()):
            worst = np.unravel_index(np.nanargmax(np.where(np.isnan(error), np.inf, error)),
                                     error.shape)
            raise GradcheckError(
                f"gradcheck: gradient of input {i} (shape {x.shape}) is wrong at index "
                f"{tuple(int(k) for k in worst)}: backward gave {analytic[worst]:.6g}, "
                f"finite differences give {numeric[worst]:.6g} (atol={atol}, rtol={rtol})")
    return True


def _central_differences(scalar: Callable[[], float], x: Tensor, eps: float) -> np.ndarray:
    """d scalar / dx, element by element: (f(x + eps) - f(x - eps)) / (2 eps), each
    element nudged in place and put back. Indexed by position, not through a flattened
    view: x may be non-contiguous (a transposed input keeps its strides), and reshaping
    such an array copies it, so nudging the copy would leave x as it was."""
    numeric = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        original = x.data[index]
        x.data[index] = original + eps
        plus = scalar()
        x.data[index] = original - eps
        minus = scalar()
        x.data[index] = original
        numeric[index] = (plus - minus) / (2 * eps)
    return numeric


def _checked(t) -> bool:
    return isinstance(t, Tensor) and t.requires_grad and t.dtype.kind == "f"
