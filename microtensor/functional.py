"""`microtensor.functional as F`: the neural-network functions, PyTorch-style names.

    >>> import microtensor.functional as F
    >>> probs = F.softmax(scores, axis=-1)
    >>> loss = F.cross_entropy(logits, targets, ignore_index=0)
"""
from .ops import (
    cross_entropy,
    dropout,
    embedding,
    gelu,
    layer_norm,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from .tensor import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight + bias, with weight shaped (in_features, out_features) as in the paper.
    (PyTorch stores the transpose, (out, in), and computes x @ W^T.)"""
    out = x @ weight
    return out if bias is None else out + bias


__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear",
           "log_softmax", "relu", "sigmoid", "softmax", "tanh"]
