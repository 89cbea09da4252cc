"""`microtensor.functional as F`: the neural-network functions, PyTorch-style names.

    >>> import microtensor.functional as F
    >>> scores, logits = mt.randn(2, 5), mt.randn(4, 10)
    >>> probs = F.softmax(scores, axis=-1)
    >>> loss = F.cross_entropy(logits, np.array([3, 0, 7, 1]), ignore_index=0)
"""
from .ops import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    celu,
    cross_entropy,
    dropout,
    elu,
    embedding,
    gelu,
    hardsigmoid,
    hardswish,
    hardtanh,
    layer_norm,
    layer_norm_linear,
    leaky_relu,
    linear,
    log_softmax,
    logsigmoid,
    mish,
    nll_loss,
    one_hot,
    pad,
    quick_gelu,
    relu,
    relu6,
    rms_norm,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    softsign,
    tanh,
)

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "celu",
           "cross_entropy", "dropout", "elu", "embedding", "gelu", "hardsigmoid",
           "hardswish", "hardtanh", "layer_norm", "layer_norm_linear", "leaky_relu",
           "linear", "log_softmax", "logsigmoid", "mish", "nll_loss", "one_hot", "pad",
           "quick_gelu", "relu", "relu6", "rms_norm", "selu", "sigmoid", "silu", "softmax",
           "softplus", "softsign", "tanh"]
