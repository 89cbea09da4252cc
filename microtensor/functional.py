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
    linear,
    log_softmax,
    relu,
    rms_norm,
    sigmoid,
    softmax,
    tanh,
)

__all__ = ["cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear",
           "log_softmax", "relu", "rms_norm", "sigmoid", "softmax", "tanh"]
