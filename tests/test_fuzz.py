"""Fuzzing the engine with random small graphs of primitives.

Hypothesis draws a few float64 leaves with broadcastable shapes, then a program: ops picked
from a table of unary, binary, reduction and shape primitives, each wired to random earlier
tensors, with random configuration (axes, shapes, indices, targets), some of it invalid on
purpose. Every op either works or raises one of our documented errors: a ValueError,
TypeError, IndexError or RuntimeError built by `op_error` (so `error.microtensor` is True)
whose message starts with the function's name, never a bare NumPy error.

1. Guarded programs keep every op where it is smooth (log/sqrt of values > 0.1, no value
   near a relu/abs/clip kink, no ties for max/min/maximum, bounded exp), so the program's
   gradients must pass `mt.gradcheck`.
2. Unguarded programs (zeros, negatives, huge values allowed) may make NaN or inf. Then
   `mt.detect_anomaly()` must raise FloatingPointError naming one of the program's ops, and
   it must raise exactly when the same program without anomaly mode leaves a NaN or inf in
   some forward value or gradient.
"""
import os
import re

import numpy as np
from fuzz_more_ops import MORE_OPS, MORE_PRIMITIVES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import microtensor as mt

DOCUMENTED = (ValueError, TypeError, IndexError, RuntimeError)
MESSAGE_START = re.compile(r"^[A-Za-z_][\w.]*: \S")
ANOMALY = re.compile(r"^(\w+) produced (nan|inf) in its (forward|backward) pass \(op created "
                     r"at .+\)")
# FUZZ_EXAMPLES=5000 fuzzes longer (the default keeps the suite fast).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def assert_documented(error: BaseException, op: str) -> None:
    """The error is ours: a documented type, built by op_error, worded 'name: ...'."""
    assert isinstance(error, DOCUMENTED), f"{op}: {type(error).__name__}: {error}"
    assert getattr(error, "microtensor", False), \
        f"{op} raised an error not worded by op_error: {type(error).__name__}: {error}"
    assert MESSAGE_START.match(str(error)), f"{op}: message does not name a function: {error}"


# ---------------------------------------------------------------------- the op table
# Each maker gets (draw, operands, guarded) and returns a function of the operand tensors
# with every random choice baked in (so gradcheck can replay it), or None when the op is
# not smooth at these values (guarded programs only).

def axis_choice(draw, ndim, allow_none=True, wild=True):
    """A valid axis (often), or one out of range (sometimes, to test the error)."""
    options = list(range(-ndim, ndim)) or [0]
    if wild:
        options += [ndim, -ndim - 1, ndim + 2]
    if allow_none:
        options.append(None)
    return draw(st.sampled_from(options))


def min_gap_in_groups(x: np.ndarray, axis) -> float:
    """Smallest distance between two values that one max/min reduction compares."""
    if x.size < 2:
        return np.inf
    axes = tuple(range(x.ndim)) if axis is None else (
        (axis,) if isinstance(axis, int) else tuple(axis))
    axes = tuple(a % x.ndim for a in axes) if x.ndim else ()
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    groups = moved.reshape(moved.shape[:x.ndim - len(axes)] + (-1,))
    if groups.shape[-1] < 2:
        return np.inf
    return float(np.diff(np.sort(groups, axis=-1), axis=-1).min())


def unary(name, fn, domain=None):
    def make(draw, xs, guarded):
        (x,) = xs
        if guarded and domain is not None and x.size and not domain(x.data):
            return None
        return fn
    return name, 1, make


def far_from_zero(x, gap=0.02):
    return np.abs(x).min() > gap


UNARY = [
    unary("neg", lambda x: -x),
    unary("exp", mt.exp, lambda x: x.max() < 3),
    unary("log", mt.log, lambda x: x.min() > 0.1),
    unary("sqrt", mt.sqrt, lambda x: x.min() > 0.1),
    unary("tanh", mt.tanh),
    unary("sigmoid", mt.sigmoid),
    unary("relu", mt.relu, far_from_zero),
    unary("gelu", mt.gelu),
    unary("abs", mt.abs, far_from_zero),
    unary("square", lambda x: x ** 2.0),
    unary("reciprocal", lambda x: x ** -1.0, lambda x: far_from_zero(x, 0.2)),
]


def make_clip(draw, xs, guarded):
    (x,) = xs
    low, high = sorted(draw(st.lists(st.sampled_from([-1.5, -0.3, 0.2, 0.9, 2.0]),
                                     min_size=2, max_size=2, unique=True)))
    if guarded and x.size and min(np.abs(x.data - low).min(), np.abs(x.data - high).min()) < 0.02:
        return None
    return lambda x: x.clip(low, high)


def make_softmax(kind):
    def make(draw, xs, guarded):
        axis = axis_choice(draw, xs[0].ndim, allow_none=False)
        return (lambda x: x.softmax(axis=axis)) if kind == "softmax" else \
            (lambda x: x.log_softmax(axis=axis))
    return make


def make_layer_norm(draw, xs, guarded):
    (x,) = xs
    if guarded and x.ndim and (x.shape[-1] < 2 or x.data.std(axis=-1).min() < 0.2):
        return None
    with_affine = draw(st.booleans())
    size = x.shape[-1] if x.ndim else 1
    weight = mt.tensor(np.linspace(0.5, 1.5, size)) if with_affine else None
    bias = mt.tensor(np.linspace(-0.2, 0.2, size)) if with_affine else None
    return lambda x: mt.layer_norm(x, weight, bias)


def make_pow_const(draw, xs, guarded):
    (x,) = xs
    exponent = draw(st.sampled_from([2.0, 3.0, 0.5, -1.0, 1.5]))
    if guarded and x.size and exponent in (0.5, -1.0, 1.5) and x.data.min() < 0.2:
        return None
    return lambda x: x ** exponent


def binary(name, fn, ok=None):
    def make(draw, xs, guarded):
        a, b = xs
        if guarded and ok is not None:
            try:
                a_data, b_data = np.broadcast_arrays(a.data, b.data)
            except ValueError:
                return fn  # not broadcastable: the op itself must say so
            if a_data.size and not ok(a_data, b_data):
                return None
        return fn
    return name, 2, make


BINARY = [
    binary("add", lambda a, b: a + b),
    binary("sub", lambda a, b: a - b),
    binary("mul", lambda a, b: a * b),
    binary("div", lambda a, b: a / b, lambda a, b: np.abs(b).min() > 0.2),
    binary("pow", lambda a, b: a ** b,
           lambda a, b: a.min() > 0.2 and np.abs(b).max() < 3 and a.max() < 5),
    binary("maximum", mt.maximum, lambda a, b: np.abs(a - b).min() > 0.02),
    binary("minimum", mt.minimum, lambda a, b: np.abs(a - b).min() > 0.02),
    binary("matmul", lambda a, b: a @ b),
]


def make_where(draw, xs, guarded):
    a, b = xs
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        shape = a.shape
    seed = draw(st.integers(0, 2**16))
    cond = np.random.default_rng(seed).random(shape) < 0.5
    return lambda a, b: mt.where(cond, a, b)


def make_embedding(draw, xs, guarded):
    """The operand is the table; ids are drawn for its first axis (sometimes out of range)."""
    (weight,) = xs
    rows = max(weight.shape[0], 1) if weight.ndim else 1   # an empty table: id 0
    seed = draw(st.integers(0, 2**16))
    ids = np.random.default_rng(seed).integers(0, rows + (draw(st.integers(0, 9)) == 0),
                                               draw(st.sampled_from([(2,), (2, 3), ()])))
    return lambda weight: mt.embedding(ids, weight)


def make_masked_fill(draw, xs, guarded):
    seed = draw(st.integers(0, 2**16))
    mask = np.random.default_rng(seed).random(xs[0].shape) < 0.5
    value = draw(st.sampled_from([0.0, -1.0, 2.5]))
    return lambda x: x.masked_fill(mask, value)


def make_matmul_self(draw, xs, guarded):
    """x @ x^T: always a valid product, so matmul's backward is exercised often."""
    (x,) = xs
    return (lambda x: x @ x.swapaxes(-1, -2)) if x.ndim >= 2 else (lambda x: x @ x)


def make_linear(draw, xs, guarded):
    """x @ W + b in one node, W from the pool (often the wrong shape) and b constant."""
    weight = xs[1]
    out_features = weight.shape[-1] if weight.ndim else 1
    bias_shape = draw(st.sampled_from([None, (out_features,), (out_features + 1,)]))
    bias = None if bias_shape is None else mt.tensor(np.linspace(-1, 1, bias_shape[0]))
    return lambda x, weight: mt.functional.linear(x, weight, bias)


def make_linear_const(draw, xs, guarded):
    """x @ W + b with constant W (in_features from x, so it usually fits)."""
    (x,) = xs
    features = x.shape[-1] if x.ndim else 1
    weight = mt.tensor(np.random.default_rng(draw(st.integers(0, 2**16))).uniform(
        -1, 1, (features, draw(st.integers(1, 3)))), requires_grad=draw(st.booleans()))
    return lambda x: mt.functional.linear(x, weight)


def make_reduce(name):
    def make(draw, xs, guarded):
        (x,) = xs
        axis = axis_choice(draw, x.ndim)
        if draw(st.booleans()) and x.ndim >= 2 and axis is not None:
            axis = (axis, (axis + 1) % x.ndim) if -x.ndim <= axis < x.ndim else (axis, 0)
        keepdims = draw(st.booleans())
        if guarded and name in ("max", "min"):
            try:
                if min_gap_in_groups(x.data, axis) < 0.02:
                    return None
            except (ValueError, np.exceptions.AxisError):
                pass  # an invalid axis: the op must report it
        if name == "var":
            correction = draw(st.sampled_from([0, 1]))
            return lambda x: x.var(axis=axis, keepdims=keepdims, correction=correction)
        return lambda x: getattr(x, name)(axis=axis, keepdims=keepdims)
    return make


def make_cross_entropy(draw, xs, guarded):
    (logits,) = xs
    classes = logits.shape[-1] if logits.ndim else 1
    seed = draw(st.integers(0, 2**16))
    high = max(classes, 1) + (draw(st.integers(0, 9)) == 0)  # sometimes out of range
    target = np.random.default_rng(seed).integers(0, high, logits.shape[:-1])
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if guarded and reduction == "mean" and not logits.size:
        return None     # the mean of no losses is NaN, as in PyTorch: no clean program
    return lambda x: mt.cross_entropy(x, target, reduction=reduction)


def make_reshape(draw, xs, guarded):
    (x,) = xs
    size = x.size
    choices = [(size,), (-1,), (1, size), (size, 1), (-1, 1), (size + 1,), (2, -1)]
    shape = draw(st.sampled_from(choices))
    return lambda x: x.reshape(shape)


def make_permute(draw, xs, guarded):
    (x,) = xs
    if draw(st.integers(0, 4)) == 0:
        axes = tuple(draw(st.lists(st.integers(-3, 3), max_size=4)))  # often invalid
    else:
        axes = tuple(draw(st.permutations(range(x.ndim))))
    return lambda x: x.permute(*axes) if axes else x.permute(())


def make_swapaxes(draw, xs, guarded):
    n = xs[0].ndim
    a, b = axis_choice(draw, n, False), axis_choice(draw, n, False)
    return lambda x: x.swapaxes(a, b)


def make_flatten(draw, xs, guarded):
    n = xs[0].ndim
    start, end = axis_choice(draw, n, False), axis_choice(draw, n, False)
    return lambda x: x.flatten(start, end)


def make_unsqueeze(draw, xs, guarded):
    axis = axis_choice(draw, xs[0].ndim + 1, False)
    return lambda x: x.unsqueeze(axis)


def make_squeeze(draw, xs, guarded):
    axis = axis_choice(draw, xs[0].ndim)
    return lambda x: x.squeeze(axis)


def make_expand(draw, xs, guarded):
    (x,) = xs
    grown = tuple(2 if n == 1 else n for n in x.shape)
    shape = draw(st.sampled_from([(2, *grown), grown, (-1,) * x.ndim,
                                  tuple(n + 1 for n in x.shape) or (3,)]))
    return lambda x: x.expand(*shape) if shape else x.expand(())


def make_getitem(draw, xs, guarded):
    (x,) = xs
    n = x.shape[0] if x.ndim else 0
    kind = draw(st.sampled_from(["int", "slice", "array", "mask", "bad"]))
    if kind == "int":
        index = draw(st.integers(-max(n, 1), max(n - 1, 0)))
    elif kind == "slice":
        index = slice(draw(st.integers(0, 2)), draw(st.integers(0, 3)))
    elif kind == "array":
        index = np.array(draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=1,
                                       max_size=4)))  # repeats must accumulate
    elif kind == "mask":
        seed = draw(st.integers(0, 2**16))
        index = np.random.default_rng(seed).random(x.shape) < 0.5
    else:
        index = draw(st.sampled_from([n + 2, (0,) * (x.ndim + 1), 1.5]))
    return lambda x: x[index]


def make_concat(draw, xs, guarded):
    axis = axis_choice(draw, xs[0].ndim, False)
    return lambda a, b: mt.concat([a, b], axis=axis)


def make_stack(draw, xs, guarded):
    axis = axis_choice(draw, xs[0].ndim + 1, False)
    return lambda a, b: mt.stack([a, b], axis=axis)


def make_split(draw, xs, guarded):
    (x,) = xs
    axis = axis_choice(draw, x.ndim, False)
    size = draw(st.sampled_from([1, 2, 0]))
    piece = draw(st.integers(0, 5))

    def fn(x):
        pieces = x.split(size, axis=axis)
        return pieces[piece % len(pieces)] if pieces else x
    return fn


OPS = dict(
    [(name, (arity, make)) for name, arity, make in UNARY + BINARY] + [
        ("clip", (1, make_clip)),
        ("softmax", (1, make_softmax("softmax"))),
        ("log_softmax", (1, make_softmax("log_softmax"))),
        ("layer_norm", (1, make_layer_norm)),
        ("pow_const", (1, make_pow_const)),
        ("where", (2, make_where)),
        ("masked_fill", (1, make_masked_fill)),
        ("embedding", (1, make_embedding)),
        ("matmul_self", (1, make_matmul_self)),
        ("linear", (2, make_linear)),
        ("linear_const", (1, make_linear_const)),
        ("sum", (1, make_reduce("sum"))),
        ("mean", (1, make_reduce("mean"))),
        ("max", (1, make_reduce("max"))),
        ("min", (1, make_reduce("min"))),
        ("var", (1, make_reduce("var"))),
        ("cross_entropy", (1, make_cross_entropy)),
        ("reshape", (1, make_reshape)),
        ("permute", (1, make_permute)),
        ("swapaxes", (1, make_swapaxes)),
        ("flatten", (1, make_flatten)),
        ("unsqueeze", (1, make_unsqueeze)),
        ("squeeze", (1, make_squeeze)),
        ("expand", (1, make_expand)),
        ("getitem", (1, make_getitem)),
        ("concat", (2, make_concat)),
        ("stack", (2, make_stack)),
        ("split", (1, make_split)),
    ] + list(MORE_OPS.items()))   # the wider op set: reductions, shape, indexing, losses ...
OP_NAMES = sorted(OPS)


# ---------------------------------------------------------------------- programs
class Program:
    """Ops recorded with their operands (indices into the pool of tensors so far)."""

    def __init__(self):
        self.steps = []      # (name, fn, operand indices)
        self.refused = []    # (name, error) for ops that raised a documented error

    def run(self, inputs, keep_all=False):
        pool = list(inputs)
        for _, fn, where in self.steps:
            pool.append(fn(*[pool[i] for i in where]))
        return pool if keep_all else pool[-1]


def record(data, inputs, guarded: bool, n_ops: int) -> Program:
    program, pool = Program(), list(inputs)
    for _ in range(n_ops):
        name = data.draw(st.sampled_from(OP_NAMES), label="op")
        arity, make = OPS[name]
        # Favour recent tensors, so programs grow deep as well as wide.
        last = len(pool) - 1
        where = [max(i, last - i) for i in
                 (data.draw(st.integers(0, last), label="operand") for _ in range(arity))]
        operands = [pool[i] for i in where]
        try:
            fn = make(data.draw, operands, guarded)
        except ValueError:
            # A guard's own check (a min, a std) cannot judge an empty tensor: in a guarded
            # program that op is skipped; anywhere else the error is the fuzzer's own bug.
            if not guarded or all(o.size for o in operands):
                raise
            continue
        if fn is None:
            continue  # not smooth here: skip in a guarded program
        try:
            with np.errstate(all="ignore"):
                out = fn(*operands)
        except Exception as error:  # noqa: BLE001 - checking what kind it is
            assert_documented(error, name)
            program.refused.append((name, error))
            continue
        assert isinstance(out, mt.Tensor), f"{name} returned {type(out).__name__}"
        assert out.dtype == np.float64, f"{name} turned float64 into {out.dtype}"
        pool.append(out)
        program.steps.append((name, fn, where))
    return program


@st.composite
def leaves(draw, low=-2.0, high=2.0, special=()):
    """1-3 float64 leaves with mutually broadcastable shapes (0-d and size-1 axes too)."""
    count = draw(st.integers(1, 3))
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=count, max_dims=3,
                                                    max_side=3)).input_shapes
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes:
        array = rng.uniform(low, high, shape)
        if special:
            pick = rng.random(shape) < 0.3
            array = np.where(pick, rng.choice(special, shape), array)
        arrays.append(array)
    return arrays


# The primitives the table's entries are made of: an anomaly names one of these.
PRIMITIVES = {
    "add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu",
    "gelu", "abs", "clip", "maximum", "minimum", "where", "masked_fill", "matmul", "sum",
    "mean", "max", "min", "var", "linear", "softmax", "log_softmax", "layer_norm",
    "cross_entropy", "embedding", "reshape", "permute", "swapaxes", "expand", "getitem", "concat",
    "stack"} | MORE_PRIMITIVES


@FUZZ
@given(arrays=leaves(), data=st.data())
def test_random_programs_have_correct_gradients_or_documented_errors(arrays, data):
    inputs = [mt.tensor(a, requires_grad=True) for a in arrays]
    program = record(data, inputs, guarded=True, n_ops=data.draw(st.integers(3, 10)))
    out = program.run(inputs)
    if not out.requires_grad:
        return
    assert np.isfinite(out.data).all(), "a guarded program made a NaN or inf"
    try:
        mt.gradcheck(lambda *xs: program.run(xs), inputs)
    except mt.GradcheckError as error:
        names = [name for name, _, _ in program.steps]
        raise AssertionError(f"program {names}: {error}") from None


@FUZZ
@given(arrays=leaves(low=-3.0, high=3.0, special=(0.0, -1.0, 1e-300, 700.0)), data=st.data())
def test_nan_and_inf_never_pass_silently_under_detect_anomaly(arrays, data):
    inputs = [mt.tensor(a, requires_grad=True) for a in arrays]
    program = record(data, inputs, guarded=False, n_ops=data.draw(st.integers(3, 10)))

    # Without anomaly mode: does a NaN or inf appear in any value or gradient?
    with np.errstate(all="ignore"):
        pool = program.run([x.detach().requires_grad_() for x in inputs], keep_all=True)
        for tensor in pool:
            if tensor.requires_grad and not tensor.is_leaf:
                tensor.retain_grad()
        if pool[-1].requires_grad:
            pool[-1].backward(np.ones(pool[-1].shape))
    silent = any(not np.isfinite(t.data).all() or (t.grad is not None
                                                   and not np.isfinite(t.grad).all())
                 for t in pool)

    # With anomaly mode: the same program must stop at the first op that made one.
    raised = None
    try:
        with mt.detect_anomaly(), np.errstate(all="ignore"):
            out = program.run([x.detach().requires_grad_() for x in inputs])
            if out.requires_grad:
                out.backward(np.ones(out.shape))
    except FloatingPointError as error:
        raised = error
    if raised is not None:
        match = ANOMALY.match(str(raised))
        assert match, f"anomaly message does not name an op: {raised}"
        assert match.group(1) in PRIMITIVES, raised
    assert silent == (raised is not None), (
        f"program {[name for name, _, _ in program.steps]}: "
        + ("a NaN/inf appeared without anomaly mode, yet detect_anomaly() said nothing"
           if silent else f"detect_anomaly() raised, yet no NaN/inf appears: {raised}"))



# ---------------------------------------------------------------------- damaged checkpoints
CHECKPOINT = {"model": {"layers.0.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                        "layers.0.bias": np.zeros(4, np.float64)},
              "optimizer": {"state": {"0": {"step": 7, "exp_avg": np.ones(3)}}, "lr": 1e-3},
              "names": ["a", "b c"], "step": 100, "note": None}


def same_tree(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_tree, a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b and type(a) is type(b)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")), deadline=None)
@given(damage=st.lists(st.tuples(st.sampled_from(["flip", "cut", "zero", "insert"]),
                                 st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                       min_size=1, max_size=3))
def test_a_damaged_checkpoint_loads_intact_or_is_refused_clearly(tmp_path_factory, damage):
    """Flipped, zeroed, inserted or cut bytes anywhere in a checkpoint: `mt.load` gives back
    exactly what was saved (the damage hit bytes nothing reads) or raises CheckpointError
    naming the file, never a bare NumPy/zipfile/JSON error, a MemoryError or a wrong value."""
    path = tmp_path_factory.mktemp("damaged") / "ckpt.npz"
    mt.save(CHECKPOINT, path)
    data = bytearray(path.read_bytes())
    for kind, where, value in damage:
        at = int(where * len(data))
        if kind == "flip":
            data[at] ^= value
        elif kind == "zero":
            data[at:at + value] = bytes(len(data[at:at + value]))
        elif kind == "insert":
            data[at:at] = bytes([value]) * value
        else:
            del data[at:]
        if not data:
            break
    path.write_bytes(bytes(data))
    try:
        loaded = mt.load(path)
    except mt.CheckpointError as error:
        assert getattr(error, "microtensor", False)
        assert str(error).startswith(f"load: '{path}'"), error
        return
    assert same_tree(CHECKPOINT, loaded), "damage changed the loaded values silently"
