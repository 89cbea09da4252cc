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

import itertools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from . import checkpoint
from . import functional as F
from .autograd import _mode, _SetMode
from .errors import check_sizes, op_error
from .safetensors_io import EXTENSION as SAFETENSORS_EXTENSION
from .safetensors_io import load_safetensors, save_safetensors
from .tensor import DEFAULT_FLOAT, Tensor, generator

_FAST_FORMS: dict[type, Callable] = {}


def fast_form(module_type: type) -> Callable:
    """Register `form(module, *args, **kwargs)` as the fast form of `module_type`.

    Calling a module of exactly that type runs the form instead of `forward` while fast
    paths are on (the default; `mt.fast_paths(False)` turns them off). The form must
    give `forward`'s numbers (to rounding) and gradients, from fused ops that name their
    textbook reference, and call `module.forward` itself for the cases it does not speed
    up. Forward hooks still run after it. This keeps every speed trick out of the
    modules, whose `forward` stays the textbook computation.

        >>> class Square(nn.Module):
        ...     def forward(self, x):
        ...         return x * x
        >>> @nn.fast_form(Square)
        ... def square_fast(module, x):
        ...     return x ** 2
        >>> Square()(mt.tensor([3.0]))
        tensor([9.])
    """
    if not (isinstance(module_type, type) and issubclass(module_type, Module)):
        raise op_error("fast_form", f"expected a Module subclass, got {module_type!r}",
                       TypeError, "decorate with @fast_form(MyModule), the class itself")

    def register(form: Callable) -> Callable:
        if not callable(form):
            raise op_error("fast_form", f"the fast form of {module_type.__name__} must be "
                           f"callable, got {type(form).__name__}", TypeError,
                           "decorate a function form(module, *args, **kwargs)")
        _FAST_FORMS[module_type] = form
        return form
    return register


def watched(modules) -> bool:
    """Whether any of `modules` has a forward hook or a replaced `forward`: a fast form
    may skip a sub-module's call (fold it into a product) only when this is False, so
    that what watches a module always sees it called."""
    for module in modules:
        attributes = module.__dict__
        if "forward" in attributes or attributes.get("_forward_hooks"):
            return True
    return False


class Parameter(Tensor):
    """A Tensor that a Module registers as learnable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None, name: str | None = None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, name=name)


class LoadResult(NamedTuple):
    """What `load_state_dict(strict=False)` skipped: names missing from the state and
    names in the state that the module does not have."""
    missing_keys: list[str]
    unexpected_keys: list[str]


class RemovableHandle:
    """What `register_forward_hook` returns: `remove()` takes the hook off (twice is
    harmless); as a context manager, the hook is on inside the `with` block only."""

    _ids = itertools.count()   # next() on a count is atomic: safe from any thread

    def __init__(self, hooks: dict):
        self.hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self) -> None:
        """Take the hook off (a second call does nothing)."""
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class: subclasses set Parameters and Modules as attributes in `__init__` and
    define `forward`. Calling the module calls `forward`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})      # name -> (Tensor or None, persistent)
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise op_error(type(self).__name__, "assigned an attribute before "
                           "Module.__init__ ran", RuntimeError,
                           "call super().__init__() first in __init__")
        buffers = self.__dict__.get("_buffers", {})
        if name in buffers and not isinstance(value, (Parameter, Module)):
            # Assigning to a buffer's name replaces the buffer (as in PyTorch).
            value = _buffer_tensor(type(self).__name__, name, value)
            buffers[name] = (value, buffers[name][1])
            object.__setattr__(self, name, value)
            return
        buffers.pop(name, None)
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
        self.__dict__.get("_buffers", {}).pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Keep `tensor` on the module as state that is not learned (running statistics,
        a fixed table, a counter): an attribute that `state_dict` saves and
        `load_state_dict` restores (unless `persistent=False`), and that is never a
        parameter, so no optimizer updates it. Assigning to the name later replaces it.

            >>> counter = nn.Module()
            >>> counter.register_buffer("steps_seen", mt.zeros((), dtype=np.int64))
            >>> list(counter.state_dict())
            ['steps_seen']
        """
        where = f"{type(self).__name__}.register_buffer"
        if not isinstance(name, str) or not name.isidentifier():
            raise op_error(where, f"name must be an identifier, got {name!r}", TypeError)
        if name in self._parameters or name in self._modules:
            raise op_error(where, f"'{name}' is already a "
                           f"{'parameter' if name in self._parameters else 'sub-module'}",
                           fix="choose another name, or delete the attribute first")
        tensor = _buffer_tensor(where, name, tensor)
        if "_buffers" not in self.__dict__:   # a module built before buffers existed
            object.__setattr__(self, "_buffers", {})
        self._buffers[name] = (tensor, bool(persistent))
        object.__setattr__(self, name, tensor)

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        """Every buffer (None ones skipped), with dotted paths."""
        for path, module in self.named_modules():
            for name, (tensor, _) in module.__dict__.get("_buffers", {}).items():
                if tensor is not None:
                    yield (f"{path}.{name}" if path else name), tensor

    def buffers(self) -> Iterator[Tensor]:
        """Every buffer tensor of this module and its sub-modules (None ones skipped);
        `named_buffers` gives their dotted paths too."""
        return (tensor for _, tensor in self.named_buffers())

    def _persistent_buffers(self) -> dict[str, Tensor]:
        return {(f"{path}.{name}" if path else name): tensor
                for path, module in self.named_modules()
                for name, (tensor, persistent) in module.__dict__.get("_buffers", {}).items()
                if persistent and tensor is not None}

    def forward(self, *args, **kwargs):
        """The module's computation, which every subclass defines. Call the module,
        `layer(x)`, rather than `forward`: the call also runs the registered fast form (see
        `fast_form`) and the forward hooks."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        """Run the module: its `forward` (or its type's registered fast form), then its
        forward hooks; ops made meanwhile record this module as the one that made them."""
        # The one seam for speed: a module type's registered fast form runs in place of
        # its textbook `forward` (unless fast paths are off, or this module's forward was
        # replaced: then what replaced it must run).
        fast = _FAST_FORMS.get(type(self)) if _mode.fast else None
        outer = _mode.modules
        _mode.modules = outer + (self,)     # each op made now records who made it
        try:
            if fast is not None and "forward" not in self.__dict__:
                output = fast(self, *args, **kwargs)
            else:
                output = self.forward(*args, **kwargs)
        finally:
            _mode.modules = outer
        hooks = self.__dict__.get("_forward_hooks")
        if hooks:
            for hook, with_kwargs in list(hooks.values()):
                returned = hook(self, args, kwargs, output) if with_kwargs \
                    else hook(self, args, output)
                if returned is not None:
                    output = returned
        return output

    def register_forward_hook(self, hook, *, with_kwargs: bool = False) -> RemovableHandle:
        """Call `hook(module, args, output)` after every forward of this module (with
        `with_kwargs=True`, `hook(module, args, kwargs, output)`), as PyTorch does. A hook
        that returns a value replaces the output. Hooks run in the order registered; the
        returned handle's `remove()` (or leaving its `with` block) takes the hook off.

            >>> layer, x, seen = nn.Linear(2, 3), mt.randn(4, 2), []
            >>> handle = layer.register_forward_hook(lambda m, args, out: seen.append(out))
            >>> y = layer(x); handle.remove()
        """
        if not callable(hook):
            raise op_error(f"{type(self).__name__}.register_forward_hook", f"hook must be "
                           f"callable, got {type(hook).__name__}", TypeError,
                           "pass a function hook(module, args, output)")
        if "_forward_hooks" not in self.__dict__:
            object.__setattr__(self, "_forward_hooks", {})
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = (hook, with_kwargs)
        return handle

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
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

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module, depth first (`named_modules` without the paths)."""
        return (module for _, module in self.named_modules())

    def children(self) -> Iterator[Module]:
        """The direct sub-modules, in assignment order (not their own sub-modules)."""
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
        """Every learnable Parameter of this module and its sub-modules, each once, in
        assignment order: what an optimizer is given.

            >>> [tuple(p.shape) for p in nn.Linear(2, 3).parameters()]
            [(2, 3), (3,)]
        """
        return (param for _, param in self.named_parameters())

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        """Set `training` on this module and every sub-module (True: Dropout drops, False:
        it passes x through); returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode, `train(False)`, for this module and its sub-modules; returns self.
        (To switch dropout off in one thread only, use `mt.dropout_off()`.)"""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to None (PyTorch's `zero_grad(set_to_none=True)`).
        Call it between steps: `backward` adds into `.grad`."""
        for param in self.parameters():
            param.grad = None

    def name_parameters(self) -> Module:
        """Set each parameter's `.name` to its dotted path (graphs show these names)."""
        for path, param in self.named_parameters():
            param.name = path
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Every parameter's values by dotted name, as copies (later training does not
        change a state_dict already taken).

            >>> nn.Linear(2, 3).state_dict()["weight"].shape
            (2, 3)
        """
        state = OrderedDict((name, param.data.copy()) for name, param in
                            self.named_parameters())
        state.update((name, buffer.data.copy()) for name, buffer in
                     self._persistent_buffers().items())   # after the parameters
        return state

    def load_state_dict(self, state, strict: bool = True) -> LoadResult:
        """Copy values from `state` (name -> array) into the parameters and persistent
        buffers, in place (so an optimizer holding them stays valid). Checks everything
        before changing anything: one error lists every missing, unexpected and
        mis-shaped name. With `strict=False`, missing and unexpected names are allowed
        and returned; mis-shaped ones are always an error.

            >>> model, other = nn.Linear(2, 3), nn.Linear(2, 3)
            >>> model.load_state_dict(other.state_dict())
            LoadResult(missing_keys=[], unexpected_keys=[])
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise op_error(where, f"expected a dict of name -> array, got "
                           f"{type(state).__name__}", TypeError,
                           "pass model.state_dict() or mt.load(path)")
        params = {**dict(self.named_parameters()), **self._persistent_buffers()}
        missing = [name for name in params if name not in state]
        unexpected = [name for name in state if name not in params]
        problems = []
        values = _loadable_values(params, state, problems)
        if strict:
            problems = ([f"missing: {name}" for name in missing]
                        + [f"unexpected: {name}" for name in unexpected] + problems)
        if problems:
            fix = ("load with strict=False to skip missing/unexpected names"
                   if strict and (missing or unexpected) else
                   "build the model with the configuration the checkpoint was saved with")
            raise op_error(where, f"{len(problems)} problem(s), nothing was loaded ({fix}):"
                           + "".join(f"\n  - {problem}" for problem in problems))
        for name, value in values.items():
            target = params[name]
            if target.data.flags.writeable:
                np.copyto(target.data, value, casting="same_kind")
            else:  # a buffer holding a read-only array (a broadcast view, say): replace it
                target.data = value.astype(target.dtype)
        return LoadResult(missing, unexpected)

    def save(self, path: str | os.PathLike) -> None:
        """Write `state_dict()` to `path`, atomically and without pickle: as
        `.safetensors` when the path ends so (the format PyTorch users exchange weights
        in), otherwise as a `.npz` (see `microtensor.checkpoint`).

            >>> model, fresh = nn.Linear(2, 3), nn.Linear(2, 3)
            >>> model.save("model.npz"); fresh.load("model.npz")
            >>> model.save("model.safetensors"); fresh.load("model.safetensors")
        """
        if _is_safetensors(path):
            save_safetensors(self.state_dict(), path)
        else:
            checkpoint.save(dict(self.state_dict()), path)

    def load(self, path: str | os.PathLike, strict: bool = True) -> Module:
        """Load a file written by `save` (.npz or .safetensors, by the extension) into
        this module (in place); returns self."""
        state = load_safetensors(path) if _is_safetensors(path) else checkpoint.load(path)
        try:
            self.load_state_dict(state, strict=strict)
        except ValueError as error:
            detail = str(error).split(": ", 1)[-1]  # drop the load_state_dict prefix
            fix = ("it looks like a training checkpoint: use model.load_state_dict("
                   "mt.load(path)['model'])" if isinstance(state.get("model"), dict)
                   else None)
            raise op_error(f"{type(self).__name__}.load", f"'{os.fspath(path)}' does not "
                           f"fit this model: {detail}", ValueError, fix) from None
        return self

    def num_parameters(self) -> int:
        """How many numbers the module learns (shared parameters counted once)."""
        return sum(param.size for param in self.parameters())

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        """The configuration `repr` shows between the parentheses ("2, 16, bias=True" for a
        Linear); subclasses override it."""
        return ""

    def __repr__(self):
        """The module tree: each module's configuration, its own parameters' shapes and
        the number of parameters it holds (sub-modules included).

            Sequential  [82 params]
              (0): Linear(2, 16, bias=True)  weight (2, 16), bias (16,)  [48 params]
              (1): ReLU()
              (2): Linear(16, 2, bias=True)  weight (16, 2), bias (2,)  [34 params]
        """
        total = self.num_parameters()
        head = f"{type(self).__name__}({self.extra_repr()})"
        if self._modules and not self.extra_repr():
            head = type(self).__name__
        own = ", ".join(f"{name} {tuple(p.shape)}" for name, p in self._parameters.items())
        if own:
            head += f"  {own}"
        if total:
            head += f"  [{total:,} params]"
        lines = [head]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines)


def _loadable_values(params: dict, state, problems: list) -> dict[str, np.ndarray]:
    """The arrays of `state` that fit the tensors of `params` they are named for, by name;
    a value that is not an array, or has the wrong shape or dtype, is added to `problems`."""
    values = {}
    for name, param in params.items():
        if name not in state:
            continue
        value = state[name]
        if isinstance(value, Tensor):
            value = value.data
        if not isinstance(value, (np.ndarray, np.generic, int, float)):
            problems.append(f"{name}: expected an array, got {type(value).__name__}")
            continue
        value = np.asarray(value)
        if value.shape != param.shape:
            problems.append(f"{name}: checkpoint has shape {value.shape}, "
                            f"model has {param.shape}")
        elif not np.can_cast(value.dtype, param.dtype, casting="same_kind"):
            problems.append(f"{name}: checkpoint dtype {value.dtype} cannot become "
                            f"the model's {param.dtype}")
        else:
            values[name] = value
    return values


def _buffer_tensor(where: str, name: str, value):
    """A buffer's value as a Tensor (arrays are wrapped; None is allowed)."""
    if value is None:
        return None
    if isinstance(value, Parameter):
        raise op_error(where, f"'{name}' is a Parameter; a buffer is state that is not "
                       f"learned", TypeError, "assign a Parameter as an attribute to make it "
                       "learnable, or pass a plain tensor (e.g. p.detach())")
    if isinstance(value, np.ndarray):
        value = Tensor(value)
    if not isinstance(value, Tensor):
        raise op_error(where, f"buffer '{name}' must be a Tensor, an array or None, got "
                       f"{type(value).__name__}", TypeError)
    if value.requires_grad:
        raise op_error(where, f"buffer '{name}' requires grad, but buffers are never "
                       f"learned", TypeError, "pass .detach(), or make it a Parameter")
    return value


class skip_init(_SetMode):
    """Modules built inside start from zeros instead of drawing random weights: for a
    model whose every weight is read from a file next, where the draws would be thrown
    away (`DecoderLM.from_pretrained` builds GPT-2 124M this way; the draws were nine
    tenths of its loading time). PyTorch's `torch.nn.utils.skip_init` serves the same
    end. Thread-local; the global generator is left where it was.

    >>> with nn.skip_init():
    ...     layer = nn.Linear(3, 2)
    >>> float(abs(layer.weight.data).sum())
    0.0
    """

    flag, value = "initialize", False


def _starting_weights(shape: tuple, draw) -> np.ndarray:
    """A new module's initial weights of `shape`: `draw()` (its random rule) as
    DEFAULT_FLOAT, or zeros inside `skip_init`."""
    if not _mode.initialize:
        return np.zeros(shape, DEFAULT_FLOAT)
    return draw().astype(DEFAULT_FLOAT)


class Linear(Module):
    """y = x @ weight + bias, with weight shaped (in_features, out_features) as in the
    paper's XW notation. PyTorch stores the transpose, (out, in); transpose when porting.
    Weights start Xavier/Glorot-uniform, biases at zero."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        check_sizes("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        limit = np.sqrt(6 / (in_features + out_features))
        shape = (in_features, out_features)
        self.weight = Parameter(_starting_weights(
            shape, lambda: generator().uniform(-limit, limit, shape)))
        self.bias = Parameter(np.zeros(out_features, DEFAULT_FLOAT)) if bias else None

    def forward(self, x):
        """x (..., in_features) -> (..., out_features): x @ weight + bias, as one node."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of `num_embeddings` vectors of size `dim`, looked up by integer ids.
    Initialised from N(0, 1), as in PyTorch."""

    def __init__(self, num_embeddings: int, dim: int, std: float = 1.0):
        super().__init__()
        check_sizes("Embedding", num_embeddings=num_embeddings, dim=dim)
        self.num_embeddings, self.dim = num_embeddings, dim
        shape = (num_embeddings, dim)
        self.weight = Parameter(_starting_weights(
            shape, lambda: std * generator().standard_normal(shape)))

    def forward(self, ids):
        """Integer `ids` of any shape -> the looked-up rows, shape (*ids.shape, dim).

            >>> nn.Embedding(10, 4)(mt.tensor([[1, 2, 3]])).shape
            (1, 3, 4)
        """
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


def _check_norm_sizes(where: str, dim, eps, fix: str) -> None:
    check_sizes(where, dim=dim)
    if not (isinstance(eps, (int, float)) and eps > 0):
        # eps <= 0 turns a constant row into sqrt(0) or sqrt(negative): inf or NaN.
        raise op_error(where, f"eps must be a positive number, got {eps!r}", fix=fix)


def _check_last_axis(where: str, x, dim: int) -> None:
    if x.shape[-1] != dim:
        raise op_error(where, f"expected the last axis to have size {dim}, "
                       f"got input of shape {tuple(x.shape)}")


class LayerNorm(Module):
    """Normalise the last axis (biased variance, as the paper and PyTorch), then scale
    by `weight` (ones) and shift by `bias` (zeros)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        _check_norm_sizes("LayerNorm", dim, eps, fix="the usual value is 1e-5")
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, DEFAULT_FLOAT))
        self.bias = Parameter(np.zeros(dim, DEFAULT_FLOAT))

    def forward(self, x):
        """x (..., dim) -> the same shape, each row normalised, scaled and shifted."""
        _check_last_axis("LayerNorm", x, self.dim)
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}"


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (`F.rms_norm`, one node).

    LayerNorm without the mean subtraction and without the bias: only the scale of each
    row is normalised. `eps` defaults to 1e-6, the value Llama configs use (PyTorch's
    `nn.RMSNorm` defaults to the dtype's machine epsilon instead).

    >>> RMSNorm(4)(mt.tensor([[1.0, -1.0, 1.0, -1.0]]))
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        _check_norm_sizes("RMSNorm", dim, eps, fix="Llama uses 1e-6 or 1e-5")
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, DEFAULT_FLOAT))

    def forward(self, x):
        """x (..., dim) -> the same shape, each row divided by its RMS and scaled."""
        _check_last_axis("RMSNorm", x, self.dim)
        return F.rms_norm(x, self.weight, eps=self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps:g}"


class Dropout(Module):
    """Zero elements with probability p while training; identity in eval mode and inside
    `mt.dropout_off()` (which holds for this thread only)."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0 <= p < 1:
            raise op_error("Dropout", f"p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        """x with elements zeroed with probability p and the rest scaled by 1 / (1 - p),
        while training; x itself otherwise."""
        if not (self.training and _mode.dropout) or self.p == 0:
            return x  # nothing to drop: no node in the graph (as PyTorch returns its input)
        return F.dropout(x, p=self.p, training=True)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    """max(x, 0) elementwise, as a module (`F.relu`)."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """GELU, tanh form (see `microtensor.ops.gelu`)."""

    def forward(self, x):
        return F.gelu(x)


class Tanh(Module):
    """tanh elementwise, as a module (`mt.tanh`), so that hooks and monitors see it."""

    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise, as a module (`mt.sigmoid`)."""

    def forward(self, x):
        return x.sigmoid()


class ReLU6(Module):
    """min(max(x, 0), 6) elementwise, as a module (`F.relu6`)."""

    def forward(self, x):
        return F.relu6(x)


class Hardtanh(Module):
    """x clipped to [min_val, max_val], as a module (`F.hardtanh`: the gradient is 0 at
    the bounds)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0):
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, min_val=self.min_val, max_val=self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class Hardsigmoid(Module):
    """relu6(x + 3) / 6, a piecewise-linear sigmoid, as a module (`F.hardsigmoid`)."""

    def forward(self, x):
        return F.hardsigmoid(x)


class Hardswish(Module):
    """x * relu6(x + 3) / 6 (MobileNetV3), as a module (`F.hardswish`)."""

    def forward(self, x):
        return F.hardswish(x)


class SELU(Module):
    """scale * elu(x, alpha) with SELU's fixed constants, as a module (`F.selu`)."""

    def forward(self, x):
        return F.selu(x)


class CELU(Module):
    """max(0, x) + min(0, alpha (exp(x / alpha) - 1)), as a module (`F.celu`)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.celu(x, alpha=self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Mish(Module):
    """x * tanh(softplus(x)), as a module (`F.mish`)."""

    def forward(self, x):
        return F.mish(x)


class Softsign(Module):
    """x / (1 + |x|), as a module (`F.softsign`)."""

    def forward(self, x):
        return F.softsign(x)


class LogSigmoid(Module):
    """log(sigmoid(x)), computed without overflow, as a module (`F.logsigmoid`)."""

    def forward(self, x):
        return F.logsigmoid(x)


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list's are not)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> ModuleList:
        """Add `module` at the end, registering its parameters; returns the list."""
        setattr(self, str(len(self._modules)), module)
        return self

    def __iter__(self):
        """The modules, in order."""
        return iter(self._modules.values())

    def __len__(self):
        """How many modules the list holds."""
        return len(self._modules)

    def __getitem__(self, i):
        """The module at index `i` (a slice gives a plain list of modules)."""
        return list(self._modules.values())[i]


class Sequential(ModuleList):
    """Modules applied in order: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        """Apply each module in turn: the output of one is the input of the next."""
        for module in self:
            x = module(x)
        return x


def _is_safetensors(path) -> bool:
    return os.fspath(path).lower().endswith(SAFETENSORS_EXTENSION)
