"""The autograd engine: graph nodes, the `primitive` decorator, and the backward pass.

Every differentiable operation is a *primitive*: a NumPy function that returns its output
and a `backward` closure, decorated with its name and derivative rule. The decorator
records a `Node` on the output tensor; `backward_steps` walks those nodes from the loss
back to the leaves, one at a time. `Tensor.backward` is that same walk run to the end, and
`viz` draws and steps through it, so there is exactly one traversal (`topological_order`).

Example:
    >>> import microtensor as mt
    >>> x = mt.tensor([1.0, 2.0], requires_grad=True)
    >>> y = (x * x).sum()
    >>> [step.node.name for step in backward_steps(y) if step.node]
    ['sum', 'mul']
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import describe, op_error
from .tensor import Tensor

# --------------------------------------------------------------------------- modes

class _Mode(threading.local):
    """Every per-thread switch, in one place. Class attributes are the defaults every new
    thread sees. Per thread, because a model shared by threads (one training, one
    generating) must not have its behaviour flipped by the other thread's choice."""

    grad_enabled = True
    anomaly = False
    profile = None  # the `profile` collecting per-op times, or None (the usual case)
    fast = True     # modules run their registered fast forms (see `fast_paths`)
    dropout = True  # Dropout modules drop while training (see `dropout_off`)
    initialize = True  # new modules draw random initial weights (see `nn.skip_init`)
    modules = ()    # the modules whose forward is running, outermost first (Module.__call__)


_mode = _Mode()


def is_grad_enabled() -> bool:
    """Whether ops on this thread record the graph (False inside `mt.no_grad()`)."""
    return _mode.grad_enabled


def is_anomaly_enabled() -> bool:
    """Whether anomaly mode (`mt.detect_anomaly()`) is on for this thread."""
    return _mode.anomaly


class _SetMode:
    """Context manager (and decorator) that sets one thread-local flag and restores it."""

    flag = ""
    value = True

    def __init__(self, value: bool | None = None):
        if value is not None:
            self.value = bool(value)

    def __enter__(self):
        self._previous = getattr(_mode, self.flag)
        setattr(_mode, self.flag, self.value)
        return self

    def __exit__(self, *exc):
        setattr(_mode, self.flag, self._previous)

    def __call__(self, fn):
        """Use the switch as a decorator: `fn` runs with it set, each call."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)(self.value):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_SetMode):
    """Ops inside record no graph (inference, optimizer updates). Thread-local.

    >>> x = mt.ones(2, requires_grad=True)
    >>> with mt.no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    flag, value = "grad_enabled", False


class enable_grad(_SetMode):
    """Turn graph recording back on inside a `no_grad` block. Thread-local."""

    flag, value = "grad_enabled", True


class detect_anomaly(_SetMode):
    """Raise on the first NaN/inf produced in forward or backward, naming the op and the
    line of user code that created it. Slower: every op output is checked. Thread-local.
    "Produced" means new: an op whose inputs (or fill value, as in an attention mask's
    `masked_fill(mask, -inf)`) already hold inf/NaN passes them on without raising.

    >>> with mt.detect_anomaly():
    ...     mt.tensor([-1.0]).log()
    Traceback (most recent call last):
    FloatingPointError: log produced nan in its forward pass (op created at ...
    """

    flag, value = "anomaly", True


class fast_paths(_SetMode):
    """Whether modules run their fast forms (on by default). Thread-local.

    A module's `forward` is the textbook computation. A module type may also register a
    fast form (`microtensor.nn.fast_form`): the same numbers from fewer, fused ops, such
    as attention as one node. Calling a module runs its fast form while this is on, so a
    training loop is fast with no opt-in; `fast_paths(False)` runs every textbook
    `forward` instead. Drawings do not need it: they open each fused node into its
    textbook ops (`textbook_graph`).

    >>> with mt.fast_paths(False):
    ...     mt.is_fast_enabled()
    False
    """

    flag, value = "fast", True


class dropout_off(_SetMode):
    """No dropout in this thread's forward passes, whatever the modules' `training`.

    `model.eval()` flips `training` on modules that every thread shares: generating from
    a model that another thread trains would turn that thread's dropout off. Generation
    runs inside `dropout_off()` instead and leaves `training` alone.

    >>> layer = mt.nn.Dropout(0.5)
    >>> with mt.dropout_off():
    ...     bool((layer(mt.ones(4)).data == 1).all())
    True
    """

    flag, value = "dropout", False


def is_fast_enabled() -> bool:
    """Whether modules run their registered fast forms on this thread (`fast_paths`)."""
    return _mode.fast


def is_dropout_enabled() -> bool:
    """Whether Dropout modules drop while training on this thread (`dropout_off`)."""
    return _mode.dropout


# --------------------------------------------------------------------------- nodes


class Node:
    """How a tensor was made: the op's `name`, its `inputs` (Tensors, arrays or numbers,
    in call order), its derivative `rule` as text, and the `backward` closure.

    `saved` shows what the backward closure keeps alive (the arrays the rule needs).
    After a backward pass without `retain_graph=True`, `backward` is dropped, which frees
    those arrays; the structure (name, inputs, rule) stays so the graph can still be drawn.
    """

    __slots__ = ("backward", "config", "created_at", "inputs", "modules", "name", "new_grads",
                 "reference", "rule")

    def __init__(self, name, rule, inputs, backward, config, created_at=None,
                 new_grads=False, reference=None, modules=()):
        self.name = name
        self.rule = rule
        self.inputs = inputs
        self.backward = backward
        self.config = config  # the op's non-tensor arguments, e.g. {"axis": -1}
        self.created_at = created_at  # "file:line in function" (anomaly mode only)
        self.new_grads = new_grads  # see `primitive`
        self.reference = reference  # a fused op's textbook form (see `primitive`)
        # The modules whose forward made this op, outermost first: a drawing groups ops by
        # the module that ran them, and draws the loss, made outside them all, outside.
        self.modules = modules

    @property
    def saved(self) -> dict:
        """The values the backward closure captured, by name ({} once freed)."""
        if self.backward is None or self.backward.__closure__ is None:
            return {}
        names = self.backward.__code__.co_freevars
        return {n: c.cell_contents for n, c in zip(names, self.backward.__closure__)}

    def __repr__(self):
        return f"<Node {self.name}>"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frame() -> str:
    """The innermost stack frame outside this package, as 'file:line in function'.
    (Compared by the package's own directory, so a checkout that happens to be named
    `microtensor` still counts as user code.)"""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _unwrap(x):
    if isinstance(x, Tensor):
        return x.data
    if x is None or isinstance(x, (int, float, bool, np.ndarray, np.generic)):
        return x  # Python numbers stay weakly typed, so float32 * 2.0 stays float32
    return np.asarray(x)


def primitive(name: str, rule: str, *, new_grads: bool = False,
              reference: Callable | None = None) -> Callable:
    """Turn a NumPy function `forward(*inputs, **config) -> (out, backward)` into an op.

    The positional parameters of `forward` are its inputs (Tensors, arrays or numbers;
    gradients flow to the Tensors that require grad); keyword-only parameters are its
    configuration (axis, eps, ...). Extra positional arguments fill the configuration in
    order, so `mt.sum(x, 1)` means `mt.sum(x, axis=1)`.

    `backward(grad_out)` returns one gradient (or None) per input. The decorator sums each
    back to its input's shape where the forward broadcast it, and casts it to the input's
    dtype. It may write its result over `grad_out` when NumPy lets it (`out=
    kernels.reusable(grad_out, ...)`): `backward()` hands an op a writeable grad_out only
    when nothing else holds it, and a read-only one everywhere else (the stepper, a tensor
    with a hook, a gradient one op sent to two inputs).

    `new_grads=True` promises that every array `backward` returns was made by that call
    and is held nowhere else (not a shared grad_out passed through, not a saved array, not
    one array for two inputs). `backward()` may then add a tensor's other gradients into
    it in place, instead of allocating their sum: the residual stream of a Transformer
    receives two gradients per block.

    `reference` marks a fused op: several textbook steps done as one node. It is that
    textbook form, written with other ops: `reference(*inputs, **config)` returns the
    same output as a graph of those ops. Drawings and the stepper open a fused node into
    it (`textbook_graph`), and a test holds the two equal, forward and backward.
    """

    def decorate(forward):
        return _make_op(forward, name, rule, new_grads, reference)

    return decorate


def _op_parameters(forward: Callable) -> tuple:
    """The inputs, the configuration's names and whether `forward` takes `*inputs`."""
    params = list(inspect.signature(forward).parameters.values())
    inputs = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    config_names = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return inputs, config_names, variadic


def _make_op(forward, name, rule, new_grads, reference) -> Callable:
    """The op `primitive` makes of `forward`, with its rule and reference attached."""
    inputs, config_names, variadic = _op_parameters(forward)
    n_inputs = len(inputs)
    input_names = {p.name for p in inputs}

    @functools.wraps(forward)
    def op(*args, **config):
        # The hot path of every op: unwrap -> forward -> wrap -> record, kept thin.
        if (len(args) > n_inputs and not variadic) or (
                config and not input_names.isdisjoint(config)):
            args = _bind(name, args, config, inputs, config_names, variadic)
        arrays = [a.data if isinstance(a, Tensor) else _unwrap(a) for a in args]
        profiling = _mode.profile  # one attribute read when off: the cost of the feature
        if profiling is not None:
            started = time.perf_counter()
        try:
            out, backward = forward(*arrays, **config)
        except (ValueError, IndexError, TypeError) as error:
            if getattr(error, "microtensor", False):
                raise  # already worded by the op itself
            raise _reworded(name, error, arrays) from error
        if out.dtype == np.float64 and not _any_float_array(arrays):
            # Floats made from integer tensors and Python numbers (0.7 ** ints,
            # ints / 2) are the default float32, as Python floats are.
            out = np.asarray(out, dtype=np.float32)
        if profiling is not None:
            profiling.record(name, "forward", time.perf_counter() - started, out.nbytes)
        result = Tensor._wrap(out)
        anomaly = _mode.anomaly
        if anomaly:
            _check_produced(name, result, arrays, config)
        if _mode.grad_enabled and result.data.dtype.kind == "f":
            for a in args:   # record the node if any input Tensor requires grad
                if isinstance(a, Tensor) and a._requires_grad:
                    result._requires_grad = True
                    result.op = Node(name, rule, args, backward, config,
                                     _user_frame() if anomaly else None, new_grads,
                                     reference, _mode.modules)
                    break
        return result

    op.rule = rule
    op.forward = forward
    op.reference = reference
    # help(), the docs site and the API reference show the rule with the op's own words.
    document_op(op, forward.__doc__ or f"The {name} op.")
    return op


def document_op(op: Callable, text: str) -> None:
    """Set an op's docstring to `text` followed by its derivative rule (ops made in a
    loop, such as the comparisons, describe themselves after `primitive` has run)."""
    op.__doc__ = inspect.cleandoc(text) + f"\n\nDerivative rule: {op.rule}"


def _bind(name, args, config, inputs, config_names, variadic) -> tuple:
    """Sort a call's arguments into inputs and configuration, in place in `config`.
    Extra positional arguments fill the configuration in order (`mt.sum(x, 1)`); inputs
    passed by keyword (`embedding(ids, weight=W)`) join the inputs, so the node records
    them and the forward sees arrays, never Tensors."""
    args = list(args)
    n_inputs = len(inputs)
    if len(args) > n_inputs and not variadic:
        extra = args[n_inputs:]
        if len(extra) > len(config_names):
            raise TypeError(f"{name}: takes {n_inputs + len(config_names)} "
                            f"arguments, got {len(args)}")
        config.update(zip(config_names, extra))
        args = args[:n_inputs]
    for p in inputs[len(args):]:
        if p.name in config:
            args.append(config.pop(p.name))
        elif p.default is not p.empty:
            args.append(p.default)
        else:
            raise TypeError(f"{name}: missing input '{p.name}'")
    return tuple(args)


def _check_produced(name, result, arrays, config) -> None:
    """Anomaly mode: raise on a NaN/inf this op *produced*. An intentional -inf given to
    it (an attention mask's fill value) or carried in from its inputs is not news; a NaN
    made from those infs is."""
    carried = _nonfinite_kinds(arrays) | _nonfinite_kinds(config.values())
    _check_finite(name, "forward", result.data, _user_frame, carried)


def _any_float_array(arrays) -> bool:
    return any(isinstance(a, (np.ndarray, np.generic)) and a.dtype.kind in "fc"
               for a in arrays)


def _reworded(name, error, arrays):
    """A NumPy error raised inside an op, reworded to name the op and its input shapes."""
    shapes = [describe(a) for a in arrays]
    if "broadcast" in str(error):
        return op_error(name, f"shapes {' and '.join(shapes)} cannot be broadcast together",
                        ValueError, "sizes must match or be 1, aligned from the last axis; "
                        "reshape or unsqueeze one operand")
    # NumPy's own subclasses (AxisError, UFuncTypeError) take other constructor arguments.
    kind = next(k for k in (IndexError, ValueError, TypeError) if isinstance(error, k))
    return op_error(name, f"{error} (inputs: {', '.join(shapes)})", kind)


def _nonfinite_kinds(values) -> set:
    """Which of "nan" and "inf" occur among `values` (arrays and numbers)."""
    kinds = set()
    for value in values:
        if isinstance(value, (float, np.floating)) or (
                isinstance(value, np.ndarray) and value.dtype.kind == "f"):
            if np.isnan(value).any():
                kinds.add("nan")
            if np.isinf(value).any():
                kinds.add("inf")
    return kinds


def _check_finite(name, phase, array, where, carried=frozenset()):
    """Raise FloatingPointError if `array` holds a NaN (or inf) that is not in `carried`.
    `where` is the op's creation site, or a function that finds it (only called on
    failure: walking the stack is slow)."""
    if not (isinstance(array, np.ndarray) and array.dtype.kind == "f") or np.isfinite(array).all():
        return
    bad = "nan" if np.isnan(array).any() else "inf"
    if bad in carried or (bad == "inf" and "nan" in carried):
        return
    where = where() if callable(where) else where
    where = where or ("an unknown line: turn detect_anomaly() on before the forward "
                      "pass to record it")
    raise FloatingPointError(
        f"{name} produced {bad} in its {phase} pass (op created at {where}). "
        f"Look at the inputs of this op; detect_anomaly() stopped at the first one.")


def sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Undo broadcasting: sum `grad` over the axes the forward pass stretched.

    A (3, 1) operand broadcast against (2, 3, 4) was used 2 * 4 times per element, so its
    gradient is the sum over the leading axis and over the stretched axis of size 1.
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(shape, grad.shape[lead:])):
        # A bug in an op's backward, not in user code: say so plainly.
        raise RuntimeError(f"internal: a gradient of shape {grad.shape} cannot belong to an "
                           f"input of shape {shape}")
    stretched = tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    summed = grad.sum(axis=tuple(range(lead)) + stretched, keepdims=True)
    return summed.reshape(shape)


# --------------------------------------------------------------------------- traversal


def topological_order(root: Tensor, *, every_input: bool = False) -> list[Tensor]:
    """Tensors of the graph behind `root`, root first, each before all of its inputs.

    The one traversal shared by `backward`, `backward_steps`, `viz.draw` and the stepper.
    Iterative depth-first search, so a chain of 100,000 ops needs no recursion. By default
    only tensors that require grad are visited (what backward needs); `every_input=True`
    also visits constant tensors (what a drawing shows).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, inputs_done = stack.pop()
        if inputs_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor.op is not None:
            for inp in tensor.op.inputs:
                if (isinstance(inp, Tensor) and id(inp) not in visited
                        and (every_input or inp.requires_grad)):
                    stack.append((inp, False))
    order.reverse()
    return order


def textbook_graph(root: Tensor) -> Tensor:
    """The graph behind `root` with every fused node opened into its textbook form.

    A fused op (one made with `primitive(reference=...)`, such as attention as one node)
    is replaced by its reference run on the same inputs, so a drawing or a step-through
    shows matmul, scale, mask, softmax, matmul where the fast path ran one node. Leaves
    (parameters, inputs) are the same tensors; an op after an opened node is a copy of
    its node on the new inputs, with the same values and the same backward. The reference
    gives the fused node's numbers up to rounding, and its backward, given the gradient
    the fused node received, the fused node's input gradients (tests hold both). Returns
    `root` itself when nothing is fused.

    >>> x = mt.randn(2, 3, 4, requires_grad=True)
    >>> from transformer.fast import fused_attention
    >>> out = fused_attention(x, x, x, scale=0.5)
    >>> [t.op.name for t in topological_order(textbook_graph(out.sum())) if t.op]
    ['sum', 'matmul', 'softmax', 'mul', 'matmul', 'swapaxes']
    """
    if not isinstance(root, Tensor):
        raise op_error("textbook_graph", f"expected the Tensor whose graph to open, got "
                       f"{type(root).__name__}", TypeError, "pass e.g. textbook_graph(loss)")
    opened = {}    # id(tensor) -> its tensor in the textbook graph
    for tensor in reversed(topological_order(root, every_input=True)):
        node = tensor.op
        if node is None:
            continue
        inputs = [opened.get(id(inp), inp) if isinstance(inp, Tensor) else inp
                  for inp in node.inputs]
        if node.reference is not None:
            outer = _mode.modules
            _mode.modules = node.modules    # the textbook ops belong where the fused op ran
            try:
                with enable_grad():
                    new = node.reference(*inputs, **node.config)
            finally:
                _mode.modules = outer
        elif any(new is not old for new, old in zip(inputs, node.inputs)):
            new = Tensor._wrap(tensor.data)
            new._requires_grad = True
            new.op = Node(node.name, node.rule, tuple(inputs), node.backward, node.config,
                          node.created_at, modules=node.modules)
        else:
            continue
        if tensor.name is not None and node.reference is None:
            new.name = tensor.name
        opened[id(tensor)] = new
    return opened.get(id(root), root)


@dataclass
class BackwardStep:
    """One step of the backward pass.

    `tensor` received its complete gradient `grad_out`. For an op's output, `node` is the
    op and `grads_in` holds what it sent to each of `node.inputs` (None where nothing was
    sent). For a leaf, `node` is None and `grad_out` was accumulated into `tensor.grad`.
    """

    index: int
    tensor: Tensor
    node: Node | None
    grad_out: np.ndarray
    grads_in: tuple


def backward_steps(root: Tensor, grad=None, retain_graph: bool = False, *,
                   sum_in_place: bool = False) -> Iterator[BackwardStep]:
    """Run the backward pass from `root` one node at a time, yielding a `BackwardStep` each.

    Gradients arriving at a tensor from several uses are summed before it is processed
    (the topological order guarantees all uses come first). Each intermediate gradient is
    dropped once passed on; each node's saved arrays are freed after its step unless
    `retain_graph=True`. With `sum_in_place` (what `backward` asks, since it keeps no
    step), a later gradient is added into one that an op marked `new_grads` sent, so an
    earlier step's `grads_in` may then hold that sum; and an op's backward receives
    `grad_out` writeable only when nothing else holds it (it was made new for this
    tensor, and no hook saw it), so that it may write its result there instead of into
    a new array. Every other `grad_out` arrives read-only.
    """
    pending = {id(root): _seed_gradient(root, grad)}  # gradients summed so far, by tensor id
    # ids of tensors whose pending gradient nothing else holds (kept only for backward():
    # the stepper shows each step's grad_out, which an op must not then overwrite)
    owned = set() if sum_in_place else None
    anomaly = is_anomaly_enabled()
    profiling = _mode.profile
    for index, tensor in enumerate(topological_order(root)):
        grad_out = pending.pop(id(tensor), None)
        if grad_out is None:
            continue  # no path from root carries a gradient here
        yours = owned is not None and id(tensor) in owned and not tensor._hooks
        for hook in tensor._hooks:
            replaced = hook(grad_out)
            if replaced is not None:
                grad_out = np.asarray(_unwrap(replaced))
        node = tensor.op
        if node is None or tensor._retains_grad:
            tensor._accumulate_grad(grad_out)
        if node is None:
            yield BackwardStep(index, tensor, None, grad_out, ())
            continue
        if not yours:
            grad_out = _read_only(grad_out)
        grads_in = _call_backward(node, grad_out, profiling)
        if not retain_graph:
            node.backward = None  # frees what the closure saved
        in_place = sum_in_place and node.new_grads
        grads_in = tuple(_deliver(node, pending, inp, g, anomaly, in_place, owned)
                         for inp, g in zip(node.inputs, grads_in))
        yield BackwardStep(index, tensor, node, grad_out, grads_in)


def _call_backward(node, grad_out, profiling) -> tuple:
    """`node.backward(grad_out)`, timed into `profiling` when a profile is on."""
    if node.backward is None:
        raise RuntimeError(
            f"backward: trying to backward through the graph a second time: the arrays "
            f"saved by '{node.name}' were freed after the first backward. Pass "
            f"retain_graph=True to the first backward() if you need to call it twice.")
    if profiling is None:
        return node.backward(grad_out)
    started = time.perf_counter()
    grads_in = node.backward(grad_out)
    profiling.record(node.name, "backward", time.perf_counter() - started,
                     sum(g.nbytes for g in grads_in if isinstance(g, np.ndarray)))
    return grads_in


def _seed_gradient(root, grad) -> np.ndarray:
    """The gradient the backward pass starts from at `root`: `grad`, or 1 for a scalar."""
    if not isinstance(root, Tensor):
        raise TypeError(f"backward: expected a Tensor, got {type(root).__name__}")
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad and has no graph. "
                           "Create the inputs with requires_grad=True (or call "
                           ".requires_grad_()) and make sure you are not inside no_grad().")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward: grad can be created implicitly only for a tensor "
                               f"with one element, got shape {root.shape}. Reduce it first "
                               f"(e.g. .sum() or .mean()) or pass grad= of that shape.")
        return np.ones_like(root.data)
    grad = np.asarray(_unwrap(grad), dtype=root.dtype)
    if grad.shape != root.shape:
        raise op_error("backward", f"grad has shape {grad.shape} but the tensor has "
                       f"shape {root.shape}; they must match")
    return grad


def _deliver(node, pending, inp, grad, anomaly, in_place=False, owned=None):
    """Shape one input gradient and add it to what that input has received so far (into
    `grad` itself when `in_place`: the op made it new, and nothing else holds it). In
    `owned`, when given, go the inputs whose sum so far is such an array, or a new sum."""
    if grad is None or not (isinstance(inp, Tensor) and inp._requires_grad):
        return None
    grad = np.asarray(grad)
    if grad.shape != inp.data.shape:
        grad = sum_to_shape(grad, inp.data.shape)
    if grad.dtype != inp.data.dtype:
        grad = grad.astype(inp.data.dtype)
    if anomaly:
        _check_finite(node.name, "backward", grad, node.created_at)
    earlier = pending.get(id(inp))
    if earlier is None:
        pending[id(inp)], sole = grad, in_place
    elif in_place and grad.flags.writeable:
        pending[id(inp)], sole = np.add(grad, earlier, out=grad), True
    else:
        pending[id(inp)], sole = earlier + grad, True     # a new sum
    if owned is not None:
        if sole:
            owned.add(id(inp))
        else:
            owned.discard(id(inp))
    return grad


def _read_only(array: np.ndarray) -> np.ndarray:
    """A view of `array` that refuses writes: what a backward gets when the gradient it
    is handed is held elsewhere too."""
    view = array.view()
    view.flags.writeable = False
    return view


def backward(root: Tensor, grad=None, retain_graph: bool = False) -> None:
    """The whole backward pass: `backward_steps` run to the end."""
    for _ in backward_steps(root, grad, retain_graph, sum_in_place=True):
        pass
