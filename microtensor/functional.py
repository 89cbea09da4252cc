"""`microtensor.functional as F`: the neural-network functions, PyTorch-style names.

    >>> import microtensor.functional as F
    >>> scores, logits = mt.randn(2, 5), mt.randn(4, 10)
    >>> probs = F.softmax(scores, axis=-1)
    >>> loss = F.cross_entropy(logits, np.array([3, 0, 7, 1]), ignore_index=0)
"""
from .ops import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    dropout,
    elu,
    embedding,
    gelu,
    layer_norm,
    layer_norm_linear,
    leaky_relu,
    linear,
    log_softmax,
    nll_loss,
    one_hot,
    pad,
    relu,
    rms_norm,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "dropout", "elu", "embedding", "gelu", "layer_norm", "layer_norm_linear",
           "leaky_relu", "linear", "log_softmax", "nll_loss", "one_hot", "pad", "relu",
           "rms_norm", "sigmoid", "silu", "softmax", "softplus", "tanh"]
