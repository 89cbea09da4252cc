"""Modules and parameters: the building blocks of models.

A `Module` registers every `Parameter` and sub-`Module` assigned to it as an attribute,
so `model.parameters()` finds them all, in assignment order.

    >>> import microtensor as mt
    >>> from microtensor import nn
    >>> model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> logits = model(mt.randn(8, 2))
    >>> sum(p.size for p in model.parameters())
    82
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from . import functional as F
from .errors import op_error
from .tensor import DEFAULT_FLOAT, Tensor, generator


class Parameter(Tensor):
    """A Tensor that a Module registers as learnable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None, name: str | None = None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, name=name)


class Module:
    """Base class: subclasses set Parameters and Modules as attributes in `__init__` and
    define `forward`. Calling the module calls `forward`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise op_error(type(self).__name__, "assigned an attribute before "
                           "Module.__init__ ran", RuntimeError,
                           "call super().__init__() first in __init__")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module and every sub-module, with dotted paths ('' for self)."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            path, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            stack[0:0] = [(f"{path}.{name}" if path else name, child)
                          for name, child in module._modules.items()]

    def modules(self) -> Iterator["Module"]:
        return (module for _, module in self.named_modules())

    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Every parameter once (a shared one under its first name), with dotted paths."""
        seen = set()
        for path, module in self.named_modules():
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{path}.{name}" if path else name), param

    def parameters(self) -> Iterator[Parameter]:
        return (param for _, param in self.named_parameters())

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    def name_parameters(self) -> "Module":
        """Set each parameter's `.name` to its dotted path (graphs show these names)."""
        for path, param in self.named_parameters():
            param.name = path
        return self

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        own = sum(p.size for p in self._parameters.values())
        total = sum(p.size for p in self.parameters())
        head = f"{type(self).__name__}({self.extra_repr()})"
        if not self._modules:
            return f"{head}  [{total:,} params]" if total else head
        lines = [f"{head}  [{total:,} params]"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        if own:
            for name, p in self._parameters.items():
                lines.append(f"  ({name}): Parameter{tuple(p.shape)}")
        return "\n".join(lines)


class Linear(Module):
    """y = x @ weight + bias, with weight shaped (in_features, out_features) as in the
    paper's XW notation. PyTorch stores the transpose, (out, in); transpose when porting.
    Weights start Xavier/Glorot-uniform, biases at zero."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        limit = np.sqrt(6 / (in_features + out_features))
        self.weight = Parameter(generator().uniform(-limit, limit, (in_features, out_features))
                                .astype(DEFAULT_FLOAT))
        self.bias = Parameter(np.zeros(out_features, DEFAULT_FLOAT)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of `num_embeddings` vectors of size `dim`, looked up by integer ids.
    Initialised from N(0, 1), as in PyTorch."""

    def __init__(self, num_embeddings: int, dim: int, std: float = 1.0):
        super().__init__()
        _check_sizes("Embedding", num_embeddings=num_embeddings, dim=dim)
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter((std * generator().standard_normal((num_embeddings, dim)))
                                .astype(DEFAULT_FLOAT))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    """Normalise the last axis (biased variance, as the paper and PyTorch), then scale
    by `weight` (ones) and shift by `bias` (zeros)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        _check_sizes("LayerNorm", dim=dim)
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, DEFAULT_FLOAT))
        self.bias = Parameter(np.zeros(dim, DEFAULT_FLOAT))

    def forward(self, x):
        if x.shape[-1] != self.dim:
            raise op_error("LayerNorm", f"expected the last axis to have size {self.dim}, "
                           f"got input of shape {tuple(x.shape)}")
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}"


class Dropout(Module):
    """Zero elements with probability p while training; identity in eval mode."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0 <= p < 1:
            raise op_error("Dropout", f"p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, p=self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """GELU, tanh form (see `microtensor.ops.gelu`)."""

    def forward(self, x):
        return F.gelu(x)


class Sequential(Module):
    """Modules applied in order: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list's are not)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]


def _check_sizes(where: str, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise op_error(where, f"{name} must be a positive integer, got {value!r}")
