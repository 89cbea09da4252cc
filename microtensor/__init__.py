"""microtensor: reverse-mode automatic differentiation on NumPy, small enough to read.

    >>> import microtensor as mt
    >>> x = mt.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    >>> W = mt.randn(3, 2, requires_grad=True, name="W")
    >>> loss = (x @ W).softmax(axis=-1).max()
    >>> loss.backward()
    >>> W.grad.shape
    (3, 2)
"""
from . import functional, nn, ops, optim
from .autograd import (
    BackwardStep,
    backward_steps,
    detect_anomaly,
    enable_grad,
    is_grad_enabled,
    no_grad,
    primitive,
)
from .checkpoint import CheckpointError, load, save
from .gradcheck import GradcheckError, gradcheck
from .ops import (
    abs,
    add,
    clip,
    cross_entropy,
    div,
    dropout,
    embedding,
    exp,
    expand,
    flatten,
    gelu,
    layer_norm,
    log,
    log_softmax,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neg,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    sqrt,
    squeeze,
    sub,
    sum,
    swapaxes,
    tanh,
    unsqueeze,
    var,
    where,
)
from .tensor import (
    Tensor,
    arange,
    eye,
    from_numpy,
    full,
    generator,
    manual_seed,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)

__version__ = "0.1.0"

__all__ = [
    "BackwardStep", "CheckpointError", "GradcheckError", "Tensor", "abs", "add", "arange",
    "backward_steps", "clip", "concat", "cross_entropy", "detect_anomaly", "div", "dropout",
    "embedding", "enable_grad", "exp", "expand", "eye", "flatten", "from_numpy", "full",
    "functional", "gelu", "generator", "gradcheck", "is_grad_enabled", "layer_norm", "load",
    "log", "log_softmax", "manual_seed", "masked_fill", "matmul", "max", "maximum", "mean",
    "min", "minimum", "mul", "neg", "nn", "no_grad", "ones", "ones_like", "ops", "optim",
    "permute", "pow", "primitive", "rand", "randn", "relu", "reshape", "save", "sigmoid",
    "softmax", "split", "sqrt", "squeeze", "stack", "sub", "sum", "swapaxes", "tanh", "tensor",
    "transpose", "unsqueeze", "var", "where", "zeros", "zeros_like",
]


def concat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis: `mt.concat([a, b], axis=-1)`."""
    return ops.concat(*tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis: `mt.stack([a, b])` has shape (2, *a.shape)."""
    return ops.stack(*tensors, axis=axis)


def transpose(x: Tensor, axis1: int, axis2: int) -> Tensor:
    """Swap two axes (PyTorch's `torch.transpose`)."""
    return ops.swapaxes(x, axis1=axis1, axis2=axis2)
