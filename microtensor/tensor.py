"""The Tensor: a NumPy array, an optional gradient, and the node that made it.

Operators and methods here are thin: each calls the primitive of the same name in
`microtensor.ops`, where the forward math sits next to its derivative.

    >>> import microtensor as mt
    >>> W = mt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, name="W")
    >>> loss = (mt.tensor([1.0, 1.0]) @ W).sum()
    >>> loss.backward()
    >>> W.grad
    array([[1., 1.],
           [1., 1.]], dtype=float32)
"""
from __future__ import annotations

import inspect
import textwrap

import numpy as np

from .errors import op_error

DEFAULT_FLOAT = np.float32


def _as_array(data, dtype=None) -> np.ndarray:
    """Python data becomes float32 (floats), int64 (ints) or bool; NumPy data keeps its
    dtype, so float64 arrays stay float64."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        return np.array(data)
    try:
        array = np.array(data)
    except ValueError:  # ragged nested lists
        array = np.array(None, dtype=object)
    if array.dtype.kind == "f":
        array = array.astype(DEFAULT_FLOAT)
    elif array.dtype.kind not in "biuc":
        raise op_error("tensor", f"cannot make a tensor from {type(data).__name__} data "
                       f"of mixed, ragged or non-numeric types", TypeError,
                       "pass numbers, nested lists of numbers or a NumPy array")
    return array


class Tensor:
    """An n-dimensional array that can record how it was computed.

    Attributes: `data` (np.ndarray), `grad` (np.ndarray or None; filled by backward for
    leaves that require grad, and for non-leaves after `retain_grad()`), `requires_grad`,
    `name` (shown in graphs), `op` (the Node that made it; None for a leaf). Make one
    with `mt.tensor(data, requires_grad=..., dtype=..., name=...)`.

    Most methods and operators call the op of the same name in `microtensor.ops`
    (`t + u` calls `add`), and share its docstring and derivative rule (see the end of
    this file). In a rule, `g` is the gradient arriving at the op's output.
    """

    __slots__ = (
        "__weakref__",
        "_grad_storage",
        "_hooks",
        "_requires_grad",
        "_retains_grad",
        "data",
        "grad",
        "name",
        "op",
    )
    # Make NumPy hand `ndarray + Tensor` to Tensor.__radd__ instead of looping itself.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        self._start(_as_array(data, dtype), name)
        self.requires_grad = requires_grad  # validated: only float tensors may require grad

    @classmethod
    def _wrap(cls, array) -> Tensor:
        """Wrap an op's output without copying or validating (internal, hot path)."""
        tensor = cls.__new__(cls)
        tensor._start(array if isinstance(array, np.ndarray) else np.asarray(array), None)
        return tensor

    def _start(self, array: np.ndarray, name: str | None) -> None:
        self.data = array
        self.grad = None
        self._grad_storage = None
        self._requires_grad = False
        self.name = name
        self.op = None
        self._hooks = []
        self._retains_grad = False

    # ------------------------------------------------------------------ attributes
    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor: `backward` fills the `.grad` of a leaf that
        requires grad. Only float tensors can; one computed by an op cannot be switched off
        (use `detach()`)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool):
        if value and self.data.dtype.kind not in "fc":
            raise op_error("requires_grad", f"only floating-point tensors can require "
                           f"gradients, got dtype {self.data.dtype}", TypeError,
                           "create it with a float dtype, e.g. mt.tensor(data, "
                           "dtype=np.float32, requires_grad=True)")
        if not value and self.op is not None:
            raise op_error("requires_grad", "cannot turn off requires_grad on a tensor "
                           "computed by an op", RuntimeError, "use .detach() instead")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set `requires_grad` in place and return this tensor."""
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self) -> tuple:
        """The size of each axis, as a tuple: (2, 3) for a 2-by-3 matrix."""
        return self.data.shape

    @property
    def ndim(self) -> int:
        """The number of axes (0 for a single number)."""
        return self.data.ndim

    @property
    def dtype(self):
        """The NumPy dtype of the data (float32 for Python floats)."""
        return self.data.dtype

    @property
    def size(self) -> int:
        """The number of elements (PyTorch's `numel()`; PyTorch's `size()` is `shape` here)."""
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for a tensor no op made (a parameter, an input): backward keeps `.grad` on
        leaves."""
        return self.op is None

    def __len__(self):
        """`len(t)`: the size of the first axis."""
        return len(self.data)

    def __iter__(self):
        """`for row in t`: the tensors t[0], t[1], ... along the first axis (in the graph)."""
        if self.ndim == 0:
            raise op_error("iter", "cannot iterate over a 0-d tensor", TypeError,
                           "use .item() to get its value")
        return (self[i] for i in range(len(self.data)))

    def __bool__(self):
        """`if t:` and `bool(t)`: the truth of a one-element tensor; any other shape raises,
        as in NumPy and PyTorch."""
        # As in NumPy and PyTorch: only a one-element tensor has a truth value. Without
        # this every tensor would be truthy, and `if a == b:` would silently pass.
        if self.data.size != 1:
            raise op_error("bool", f"the truth value of a tensor of shape {self.shape} is "
                           f"ambiguous", ValueError, "reduce it first, e.g. "
                           "bool((a == b).data.all()), or compare identity with `is`")
        return bool(self.data)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array: the same memory, not a copy."""
        return self.data

    def item(self):
        """The value of a one-element tensor, as a Python number."""
        if self.data.size != 1:
            raise op_error("item", f"only a one-element tensor can be converted to a "
                           f"Python number, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        """The data as (nested) Python lists of numbers."""
        return self.data.tolist()

    def __array__(self, dtype=None, copy=None):
        """`np.asarray(t)` is `t.data` itself (no copy) unless a dtype or copy is asked for."""
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            if copy is False:
                raise ValueError(f"cannot convert a {self.data.dtype} tensor to {dtype} "
                                 f"without a copy (copy=False)")
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def detach(self) -> Tensor:
        """The same data, cut from the graph (shares memory)."""
        return Tensor._wrap(self.data)

    def astype(self, dtype) -> Tensor:
        """A copy cast to `dtype`, in the graph (`mt.ops.astype`; PyTorch's `.to(dtype)`)."""
        return ops.astype(self, dtype=dtype)

    def float(self) -> Tensor:
        """A float32 copy, in the graph: `astype(np.float32)`."""
        return self.astype(np.float32)

    def double(self) -> Tensor:
        """A float64 copy, in the graph: `astype(np.float64)` (what gradcheck wants)."""
        return self.astype(np.float64)

    def __repr__(self):
        body = np.array2string(self.data, precision=4, separator=", ", threshold=50,
                               prefix="tensor(")
        extras = []
        if self.data.dtype != DEFAULT_FLOAT:
            extras.append(f"dtype={self.data.dtype}")
        if self.name:
            extras.append(f"name={self.name!r}")
        if self.op is not None:
            extras.append(f"op={self.op.name}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Compute gradients of this tensor with respect to every leaf that requires grad.

        Leaves *accumulate* into `.grad` (call `zero_grad()` between steps, as in
        PyTorch). Non-leaves keep no gradient unless `retain_grad()` was called. The
        graph's saved arrays are freed afterwards unless `retain_graph=True`.
        """
        autograd.backward(self, grad, retain_graph)

    def retain_grad(self) -> Tensor:
        """Keep `.grad` on this non-leaf tensor after backward."""
        self._retains_grad = True
        return self

    def register_hook(self, fn):
        """Call `fn(grad)` when this tensor's gradient is complete during backward;
        if it returns an array, that replaces the gradient. Returns a handle with
        `.remove()`."""
        if not self.requires_grad:
            raise op_error("register_hook", "this tensor does not require grad, so no "
                           "gradient will ever reach the hook", RuntimeError,
                           "call .requires_grad_() on it (or on the inputs it is made from)")
        self._hooks.append(fn)
        hooks = self._hooks

        class Handle:
            def remove(self):
                if fn in hooks:
                    hooks.remove(fn)
        return Handle()

    def _accumulate_grad(self, grad: np.ndarray) -> None:
        # A copy, not the engine's array: one array may be sent to several inputs
        # (add sends the same gradient to both), and users update .grad in place.
        if self.grad is not None:
            self.grad += grad
        elif self._grad_storage is not None and self._grad_storage.shape == grad.shape:
            # An optimizer gave this parameter a slot in its flat gradient buffer
            # (optim/flat.py): the copy lands there, where the optimizer's step reads all
            # gradients at once, and no new array is allocated per backward. As with
            # PyTorch's zero_grad(set_to_none=False), a .grad array kept from before the
            # last zero_grad() is that same memory: copy it to keep it.
            np.copyto(self._grad_storage, grad, casting="unsafe")
            self.grad = self._grad_storage
        else:
            self.grad = np.array(grad, dtype=self.data.dtype)

    def zero_grad(self) -> None:
        """Drop this tensor's gradient (`.grad = None`): the next backward starts it afresh."""
        self.grad = None

    # ------------------------------------------------------------------ operators
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return ops.neg(self)
    def __abs__(self): return ops.abs(self)
    def __invert__(self): return ops.bitwise_not(self)
    def __getitem__(self, index): return ops.getitem(self, index=_index_data(index))

    # comparisons give boolean tensors and carry no gradient
    def __lt__(self, other): return ops.less(self, other)
    def __le__(self, other): return ops.less_equal(self, other)
    def __gt__(self, other): return ops.greater(self, other)
    def __ge__(self, other): return ops.greater_equal(self, other)
    # `t == None` is False (identity), not an elementwise comparison with None.
    def __eq__(self, other): return NotImplemented if other is None else ops.equal(self, other)
    def __ne__(self, other):
        return NotImplemented if other is None else ops.not_equal(self, other)
    __hash__ = object.__hash__  # tensors are used as dict keys by identity

    def __setitem__(self, index, value):
        """`t[index] = value`: write into the data in place. Refused where the tensor
        requires grad, since the graph would not see the write: build a new tensor
        (`mt.where`, `masked_fill`) instead."""
        if self.requires_grad:
            raise op_error("setitem", "in-place assignment into a tensor that requires "
                           "grad would silently break its gradient", RuntimeError,
                           "build a new tensor (e.g. mt.where or masked_fill), or assign "
                           "to .data inside mt.no_grad() if you mean to edit values")
        self.data[_index_data(index, "setitem")] = value.data if isinstance(value, Tensor) else value

    # ------------------------------------------------------------------ methods
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def gelu(self, approximate="tanh"): return ops.gelu(self, approximate=approximate)
    def silu(self): return ops.silu(self)
    def erf(self): return ops.erf(self)
    def rsqrt(self): return ops.rsqrt(self)
    def sign(self): return ops.sign(self)
    def sin(self): return ops.sin(self)
    def cos(self): return ops.cos(self)
    def square(self): return ops.square(self)
    def isnan(self): return ops.isnan(self)
    def isinf(self, detect_positive=True, detect_negative=True):
        return ops.isinf(self, detect_positive=detect_positive, detect_negative=detect_negative)
    def isfinite(self): return ops.isfinite(self)
    def tan(self): return ops.tan(self)
    def asin(self): return ops.asin(self)
    def acos(self): return ops.acos(self)
    def atan(self): return ops.atan(self)
    def sinh(self): return ops.sinh(self)
    def cosh(self): return ops.cosh(self)
    def asinh(self): return ops.asinh(self)
    def acosh(self): return ops.acosh(self)
    def atanh(self): return ops.atanh(self)
    def exp2(self): return ops.exp2(self)
    def log2(self): return ops.log2(self)
    def floor(self): return ops.floor(self)
    def ceil(self): return ops.ceil(self)
    def trunc(self): return ops.trunc(self)
    def round(self, decimals=0): return ops.round(self, decimals=decimals)
    def copysign(self, other): return ops.copysign(self, other)
    def lerp(self, end, weight): return ops.lerp(self, end, weight)
    def dot(self, other): return ops.dot(self, other)
    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return ops.isclose(self, other, rtol=rtol, atol=atol, equal_nan=equal_nan)
    def abs(self): return ops.abs(self)
    def neg(self): return ops.neg(self)
    def clip(self, min=None, max=None): return ops.clip(self, min=min, max=max)
    def maximum(self, other): return ops.maximum(self, other)
    def minimum(self, other): return ops.minimum(self, other)
    def masked_fill(self, mask, value): return ops.masked_fill(self, mask, value=value)

    def sum(self, axis=None, keepdims=False, dtype=None):
        return ops.sum(self, axis=axis, keepdims=keepdims, dtype=dtype)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis=axis, keepdims=keepdims)
    def min(self, axis=None, keepdims=False): return ops.min(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, correction=1):
        return ops.var(self, axis=axis, keepdims=keepdims, correction=correction)

    def std(self, axis=None, keepdims=False, correction=1):
        return ops.std(self, axis=axis, keepdims=keepdims, correction=correction)

    def prod(self, axis=None, keepdims=False, dtype=None):
        return ops.prod(self, axis=axis, keepdims=keepdims, dtype=dtype)
    def logsumexp(self, axis=None, keepdims=False):
        return ops.logsumexp(self, axis=axis, keepdims=keepdims)
    def argmax(self, axis=None, keepdims=False):
        return ops.argmax(self, axis=axis, keepdims=keepdims)
    def argmin(self, axis=None, keepdims=False):
        return ops.argmin(self, axis=axis, keepdims=keepdims)
    def any(self, axis=None, keepdims=False): return ops.any(self, axis=axis, keepdims=keepdims)
    def all(self, axis=None, keepdims=False): return ops.all(self, axis=axis, keepdims=keepdims)
    def cumsum(self, axis=None): return ops.cumsum(self, axis=axis)
    def cumprod(self, axis=None): return ops.cumprod(self, axis=axis)
    def logcumsumexp(self, axis): return ops.logcumsumexp(self, axis=axis)
    def cummax(self, axis): return ops.cummax(self, axis)
    def cummin(self, axis): return ops.cummin(self, axis)

    def softmax(self, axis=-1): return ops.softmax(self, axis=axis)
    def log_softmax(self, axis=-1): return ops.log_softmax(self, axis=axis)

    def reshape(self, *shape): return ops.reshape(self, shape=_shape_arg(shape))
    def view(self, *shape):
        """PyTorch's other name for `reshape`: the same elements in a new shape (the
        graph and any error say `reshape`)."""
        return self.reshape(*shape)
    def transpose(self, *axes):
        """`t.transpose(0, 1)` swaps two axes (PyTorch); `t.transpose()` reverses all (NumPy)."""
        if len(axes) == 2:
            return ops.swapaxes(self, axis1=axes[0], axis2=axes[1])
        return ops.permute(self, axes=_shape_arg(axes) or None)
    def permute(self, *axes): return ops.permute(self, axes=_shape_arg(axes))
    def swapaxes(self, axis1, axis2): return ops.swapaxes(self, axis1=axis1, axis2=axis2)

    @property
    def T(self):
        """The axes in reverse order: a matrix's transpose (as NumPy's `.T`)."""
        return ops.permute(self, axes=None)

    def flatten(self, start_axis=0, end_axis=-1):
        return ops.flatten(self, start_axis=start_axis, end_axis=end_axis)
    def unsqueeze(self, axis): return ops.unsqueeze(self, axis=axis)
    def squeeze(self, axis=None): return ops.squeeze(self, axis=axis)
    def expand(self, *shape): return ops.expand(self, shape=_shape_arg(shape))
    def split(self, sections, axis=0): return ops.split(self, sections, axis=axis)
    def chunk(self, chunks, axis=0): return ops.chunk(self, chunks, axis=axis)
    def unflatten(self, axis, sizes): return ops.unflatten(self, axis, sizes)
    def flip(self, axis): return ops.flip(self, axis=axis)
    def roll(self, shifts, axis=None): return ops.roll(self, shifts=shifts, axis=axis)
    def tril(self, diagonal=0): return ops.tril(self, diagonal=diagonal)
    def triu(self, diagonal=0): return ops.triu(self, diagonal=diagonal)
    def tile(self, *reps): return ops.tile(self, reps=_shape_arg(reps))

    def repeat(self, *reps):
        """PyTorch's `repeat`: copies side by side, the same as `tile` (NumPy's `repeat`,
        which repeats each element in place, is `repeat_interleave` here). As in PyTorch,
        every axis needs a count: fewer counts raise, where `tile` would pad them with 1s
        in front and tile the last axes."""
        reps = _shape_arg(reps)
        if len(reps) < self.ndim:
            raise op_error("repeat", f"{len(reps)} repeat count(s) {reps} for a tensor "
                           f"with {self.ndim} axes (shape {self.shape})",
                           fix="give one count per axis (1 keeps an axis), or use tile "
                           "for NumPy's rule")
        return ops.tile(self, reps=reps)

    def repeat_interleave(self, repeats, axis=None):
        return ops.repeat_interleave(self, repeats=repeats, axis=axis)
    def gather(self, axis, index): return ops.gather(self, axis, index)
    def scatter_add(self, axis, index, src): return ops.scatter_add(self, axis, index, src)
    def scatter(self, axis, index, src): return ops.scatter(self, axis, index, src)
    def scatter_reduce(self, axis, index, src, reduce, include_self=True):
        return ops.scatter_reduce(self, axis, index, src, reduce, include_self)
    def diag(self, diagonal=0): return ops.diag(self, diagonal=diagonal)
    def diagonal(self, offset=0, axis1=0, axis2=1):
        return ops.diagonal(self, offset=offset, axis1=axis1, axis2=axis2)
    def unfold(self, axis, size, step):
        """Sliding windows along `axis` as a new last axis (PyTorch's Tensor.unfold)."""
        return ops.unfold(self, axis=axis, size=size, step=step)
    def masked_select(self, mask): return ops.masked_select(self, mask)
    def sort(self, axis=-1, descending=False): return ops.sort(self, axis, descending)
    def argsort(self, axis=-1, descending=False):
        return ops.argsort(self, axis=axis, descending=descending)
    def topk(self, k, axis=-1, largest=True): return ops.topk(self, k, axis, largest)


def _shape_arg(shape):
    """Accept both t.reshape(2, 3) and t.reshape((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _index_data(index, where="getitem"):
    """The index as NumPy reads it, with every array part an ndarray: Tensors give their
    data, and lists or tuples *inside* a tuple become arrays (x[(0, 0), :] is x[[0, 0], :]),
    so that getitem sees each integer array and adds the gradient of repeated picks."""
    if isinstance(index, tuple):
        return tuple(_index_part(part, index, where) for part in index)
    return _index_part(index, index, where)


def _index_part(part, whole, where):
    if isinstance(part, Tensor):
        return part.data
    if not isinstance(part, (list, tuple)):
        return part
    try:
        return np.asarray([p.data if isinstance(p, Tensor) else p for p in part])
    except ValueError:  # NumPy's "inhomogeneous shape" for ragged nested lists
        raise op_error(where, f"the index {whole!r} holds a ragged list {part!r}: "
                       f"its items are lists of different lengths, or lists mixed with "
                       f"numbers", IndexError, "give every item the same length; to index "
                       "several axes, pass a tuple: x[[0, 1], 1] rather than x[[[0, 1], "
                       "1]]") from None


# ---------------------------------------------------------------------- random state
# (the creation functions are in creation.py)
_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the one global generator used by randn, rand, dropout and initialisers."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The global random generator (seeded by `manual_seed`)."""
    return _rng


from . import autograd, ops

# ---------------------------------------------------------------------- method docs
# A method that calls one op says so, with the op's derivative rule; one without a
# docstring of its own takes the op's first paragraph too. help(mt.Tensor) then says what
# help(mt.exp) says, and there is one text to keep right. The op a method calls is read
# from its code (`ops.exp` in `t.exp`); the operators show their syntax.
_OPERATORS = {
    "__add__": "t + other", "__radd__": "other + t", "__sub__": "t - other",
    "__rsub__": "other - t", "__mul__": "t * other", "__rmul__": "other * t",
    "__truediv__": "t / other", "__rtruediv__": "other / t", "__pow__": "t ** other",
    "__rpow__": "other ** t", "__matmul__": "t @ other", "__rmatmul__": "other @ t",
    "__neg__": "-t", "__abs__": "abs(t)", "__invert__": "~t", "__getitem__": "t[index]",
    "__lt__": "t < other", "__le__": "t <= other", "__gt__": "t > other",
    "__ge__": "t >= other", "__eq__": "t == other", "__ne__": "t != other",
}


def _paragraphs(*paragraphs: str) -> str:
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 88, break_long_words=False,
                                     break_on_hyphens=False) for p in paragraphs)


def _document_methods() -> None:
    """Write each op-calling method's docstring (see above). Run by the package's
    __init__ once the ops are imported (they import this module first)."""
    for name, method in vars(Tensor).items():
        names = getattr(getattr(method, "__code__", None), "co_names", ())
        called = [n for n in names if n in ops.__all__]
        if "ops" not in names or len(called) != 1 or "calls `mt.ops." in (method.__doc__ or ""):
            continue
        op = getattr(ops, called[0])
        signature = inspect.signature(method).replace(
            return_annotation=inspect.Signature.empty)
        call = _OPERATORS.get(name) or f"t.{name}({str(signature)[1:-1]})".replace(
            "(self, ", "(").replace("(self)", "()")
        rule = getattr(op, "rule", None)
        calls = f"`{call}` calls `mt.ops.{called[0]}`" + (
            f"; its derivative rule: `{rule}`" if rule else
            ", which is made of other ops: its gradient is theirs.")
        if method.__doc__ is not None:
            method.__doc__ = inspect.cleandoc(method.__doc__) + "\n\n" + _paragraphs(calls)
            continue
        summary = (op.__doc__ or "").split(">>>")[0].strip().split("\n\n")[0]
        if summary.endswith(":"):               # it introduced the op's example
            summary = summary[:-1] + "."
        method.__doc__ = _paragraphs(summary, calls)
