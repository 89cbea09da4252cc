"""All primitives, grouped by kind. Each op's forward and backward sit side by side in
its module."""
from .elementwise import (abs, add, astype, clip, div, equal, exp, gelu, greater,
                          greater_equal, less, less_equal, log, masked_fill, maximum,
                          minimum, mul, neg, not_equal, pow, relu, sigmoid, sqrt, sub, tanh,
                          where)
from .linalg import matmul
from .nn import cross_entropy, dropout, embedding, layer_norm, log_softmax, softmax
from .reduce import max, mean, min, sum, var
from .shape import (concat, expand, flatten, getitem, permute, reshape, split, squeeze,
                    stack, swapaxes, unsqueeze)

__all__ = [
    "abs", "add", "astype", "clip", "div", "equal", "exp", "gelu", "greater",
    "greater_equal", "less", "less_equal", "log", "masked_fill", "maximum", "minimum", "mul",
    "neg", "not_equal", "pow", "relu", "sigmoid", "sqrt", "sub", "tanh", "where", "matmul",
    "cross_entropy", "dropout", "embedding", "layer_norm", "log_softmax", "softmax", "max",
    "mean", "min", "sum", "var", "concat", "expand", "flatten", "getitem", "permute",
    "reshape", "split", "squeeze", "stack", "swapaxes", "unsqueeze",
]
