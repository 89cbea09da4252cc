"""The engine's contract, one pitfall other autograd libraries shipped per test:
accumulation over every use, PyTorch's backward-twice semantics, freed graphs, hooks,
edge cases of pow/where, deep graphs, thread-local modes, anomaly detection, the
step-by-step backward, and dtype preservation."""
import gc
import inspect
import os
import threading
import weakref

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor.autograd import backward_steps, topological_order


def f64(data):
    return mt.tensor(np.asarray(data, dtype=np.float64), requires_grad=True)


# ----------------------------------------------------------------- accumulation

def test_non_leaf_used_twice_gets_both_paths():
    a = f64(1.0)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad == 4.0


def test_diamond_graph_accumulates_before_passing_on():
    x = f64([1.0, 2.0])
    h = x * 3.0
    y = (h * h + h.exp()).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 3 * (2 * h.data + np.exp(h.data)))


def test_leaves_accumulate_across_backward_calls_with_retain_graph():
    x = f64([1.0, -2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, [2.0, -4.0])
    y.backward()
    np.testing.assert_allclose(x.grad, [4.0, -8.0])


def test_second_backward_through_freed_graph_raises():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_non_leaf_grad_is_none_unless_retained():
    x = f64([1.0, 2.0])
    h = x * 2.0
    kept = (x * 3.0).retain_grad()
    (h.sum() + kept.sum()).backward()
    assert h.grad is None
    np.testing.assert_array_equal(kept.grad, [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_no_grad_inputs_get_no_gradient():
    x, constant = f64([1.0]), mt.tensor([2.0], dtype=np.float64)
    (x * constant).sum().backward()
    assert constant.grad is None and x.grad == 2.0


# ----------------------------------------------------------------- hooks

def test_hook_replaces_gradient_and_handle_removes_it():
    x = f64([1.0, 2.0])
    handle = x.register_hook(lambda g: g * 10)
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [20.0, 20.0])
    handle.remove()
    x.grad = None
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_hook_on_non_leaf_changes_what_flows_further():
    x = f64([1.0, 2.0])
    h = x * 3.0
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))  # returns None: observe only
    h.register_hook(lambda g: -g)
    h.sum().backward()
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [-3.0, -3.0])


# ----------------------------------------------------------------- pow and where edges

def test_pow_gives_both_gradients():
    x, y = f64(2.0), f64(3.0)
    (x ** y).backward()
    assert x.grad == pytest.approx(3 * 2.0 ** 2)
    assert y.grad == pytest.approx(2.0 ** 3 * np.log(2.0))


def test_pow_negative_base_gives_nan_not_exception():
    x, y = f64(-2.0), f64(2.0)
    with np.errstate(invalid="ignore"):
        (x ** y).backward()
    assert x.grad == pytest.approx(-4.0)
    assert np.isnan(y.grad)


def test_where_unselected_nan_or_inf_gives_finite_gradients():
    a = f64([1.0, 2.0, 3.0])
    b = f64([np.nan, np.inf, -np.inf])
    out = mt.where(np.array([True, True, False]), a, b) * 2.0
    out[:2].sum().backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 0.0])
    np.testing.assert_array_equal(b.grad, [0.0, 0.0, 0.0])


def test_where_guarding_log_of_negative_values_has_finite_gradient():
    x = f64([2.0, -1.0])
    with np.errstate(invalid="ignore"):
        y = mt.where(x.data < 0, x, x.log())  # log(-1) = nan, never selected
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [0.5, 1.0])


def test_masked_fill_with_minus_inf_then_softmax_has_finite_gradients():
    scores = f64([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    allowed = np.array([[True, True, False], [True, False, False]])
    weights = F.softmax(scores.masked_fill(~allowed, -np.inf), axis=-1)
    (weights * mt.tensor([[1.0, 2.0, 3.0]], dtype=np.float64)).sum().backward()
    assert np.isfinite(scores.grad).all()
    assert (scores.grad[~allowed] == 0).all()


# ----------------------------------------------------------------- in-place

def test_setitem_on_tensor_requiring_grad_raises():
    x = f64([1.0, 2.0])
    with pytest.raises(RuntimeError, match="setitem.*requires grad"):
        x[0] = 5.0
    plain = mt.tensor([1.0, 2.0])
    plain[0] = 5.0
    assert plain.data[0] == 5.0


# ----------------------------------------------------------------- deep graphs

def _chain(n):
    x = f64(1.0)
    y = x
    for _ in range(n):
        y = y * 1.0
    y.backward()
    return x


def test_chain_of_100k_ops_has_no_recursion_error():
    assert _chain(100_000).grad == 1.0


def test_backward_of_a_chain_visits_each_node_once():
    """Linear work, counted rather than timed (tests/bench/bench_chain.py times it): the
    backward pass of an n-op chain takes n + 1 steps (the ops and the leaf), at 10k as
    at 100k."""
    for n in (10_000, 100_000):
        x = f64(1.0)
        y = x
        for _ in range(n):
            y = y * 1.0
        steps = sum(1 for _ in backward_steps(y))
        assert steps == n + 1 and x.grad == 1.0


# ----------------------------------------------------------------- memory

def test_saved_arrays_are_freed_after_backward():
    x = f64(np.random.default_rng(0).standard_normal((4, 8)))
    w, b = f64(np.ones(8)), f64(np.zeros(8))
    y = F.layer_norm(x, w, b)
    refs = [weakref.ref(y.op.saved[name]) for name in ("x_hat", "rstd")]
    y.sum().backward()
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert y.op.saved == {}  # the structure stays for drawing; the arrays are gone


def test_retain_graph_keeps_saved_arrays():
    x = f64(np.random.default_rng(0).standard_normal((4, 8)))
    y = F.layer_norm(x, f64(np.ones(8)))
    refs = [weakref.ref(y.op.saved[name]) for name in ("x_hat", "rstd")]
    y.sum().backward(retain_graph=True)
    gc.collect()
    assert all(ref() is not None for ref in refs)


# ----------------------------------------------------------------- modes

def _in_thread(fn):
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


def test_no_grad_is_thread_local():
    x = f64([1.0])
    inside, other_started = threading.Event(), threading.Event()
    results = {}

    def worker():
        with mt.no_grad():
            inside.set()
            other_started.wait(5)
            results["worker"] = (x * 2.0).requires_grad

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    results["main"] = (x * 2.0).requires_grad  # while the worker is inside no_grad
    other_started.set()
    thread.join()
    assert results == {"worker": False, "main": True}


def test_enable_grad_inside_no_grad_and_decorator_form():
    x = f64([1.0])
    with mt.no_grad():
        assert not (x * 2.0).requires_grad
        with mt.enable_grad():
            assert (x * 2.0).requires_grad
    assert mt.no_grad()(lambda: (x * 2.0).requires_grad)() is False
    assert mt.is_grad_enabled()


def test_detect_anomaly_is_thread_local():
    with mt.detect_anomaly(), np.errstate(invalid="ignore"):
        out = _in_thread(lambda: mt.tensor([-1.0]).log())
        assert np.isnan(out.data[0])  # the other thread is not in anomaly mode
        with pytest.raises(FloatingPointError):
            mt.tensor([-1.0]).log()


def test_detect_anomaly_in_forward_names_op_and_user_line():
    with mt.detect_anomaly(), np.errstate(invalid="ignore"):
        line = inspect.currentframe().f_lineno + 2
        with pytest.raises(FloatingPointError) as info:
            mt.tensor([1.0, -1.0]).log()
    message = str(info.value)
    assert "log produced nan in its forward pass" in message
    assert f"{os.path.basename(__file__)}:{line}" in message


def test_detect_anomaly_in_backward_names_op_and_where_it_was_created():
    x = f64([0.0, 4.0])
    with mt.detect_anomaly(), np.errstate(divide="ignore"):
        line = inspect.currentframe().f_lineno + 1
        y = x.sqrt()
        with pytest.raises(FloatingPointError) as info:
            y.sum().backward()
    message = str(info.value)
    assert "sqrt produced inf in its backward pass" in message
    assert f"{os.path.basename(__file__)}:{line}" in message


def test_without_anomaly_mode_nan_passes_silently():
    with np.errstate(invalid="ignore"):
        assert np.isnan(mt.tensor([-1.0]).log().data[0])


# ----------------------------------------------------------------- step-by-step backward

def _small_graph():
    x = f64([[1.0, -2.0, 0.5]])
    W = f64([[0.1, 0.2], [0.3, -0.4], [0.5, 0.6]])
    h = (x @ W).tanh()
    loss = (h * h + h).sum() + (W * W).mean()
    return loss, (x, W)


def test_backward_steps_order_is_reverse_topological():
    loss, _ = _small_graph()
    steps = list(backward_steps(loss))
    position = {id(step.tensor): i for i, step in enumerate(steps)}
    assert steps[0].tensor is loss
    for step in steps:
        if step.node is None:
            continue
        for inp in step.node.inputs:
            if isinstance(inp, mt.Tensor) and inp.requires_grad:
                assert position[id(inp)] > position[id(step.tensor)], step.node.name
    assert len(position) == len(steps)  # each tensor processed once


def test_backward_steps_to_the_end_equals_tensor_backward():
    loss, (x, W) = _small_graph()
    loss.backward()
    loss2, (x2, W2) = _small_graph()
    records = list(backward_steps(loss2))
    np.testing.assert_array_equal(x.grad, x2.grad)
    np.testing.assert_array_equal(W.grad, W2.grad)
    matmul_step = next(r for r in records if r.node is not None and r.node.name == "matmul")
    assert [g.shape for g in matmul_step.grads_in] == [(1, 3), (3, 2)]



def _residual_block(seed):
    """x -> x + linear(layer_norm(x)) twice: the stream receives two gradients per block."""
    rng = np.random.default_rng(seed)
    x = f64(rng.standard_normal((3, 4)))
    params = [f64(rng.standard_normal(s)) for s in [(4,), (4,), (4, 4), (4,)] * 2]
    h = x * 1.5
    for i in range(2):
        w, b, W, c = params[4 * i:4 * i + 4]
        h = h + F.linear(F.layer_norm(h, w, b), W, c)
    return (h * h).sum(), [x, *params]


def test_backward_sums_in_place_what_new_grads_ops_sent_and_the_stepper_keeps_each_record():
    loss, leaves = _residual_block(0)
    loss.backward()                                    # sums into layer_norm's dx in place
    stepped_loss, stepped_leaves = _residual_block(0)
    steps = list(backward_steps(stepped_loss))         # keeps every array it yields
    for a, b in zip(leaves, stepped_leaves):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12)
    # Each recorded gradient is what its op sent, not a sum made after it.
    for step in steps:
        if step.node is not None and step.node.name == "layer_norm":
            x, w, b = (t.data for t in step.node.inputs)
            mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
            x_hat = (x - mean) / np.sqrt(var + 1e-5)
            g_hat = step.grad_out * w
            sent = (g_hat - g_hat.mean(-1, keepdims=True)
                    - x_hat * (g_hat * x_hat).mean(-1, keepdims=True)) / np.sqrt(var + 1e-5)
            np.testing.assert_allclose(step.grads_in[0], sent, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("promised", [True, False])
def test_only_an_op_that_promises_new_grads_has_them_reused(promised):
    sent = []

    @mt.primitive("double_it", rule="dx = 2 g", new_grads=promised)
    def double_it(x):
        def backward(g):
            sent.append(2 * g)
            return (sent[-1],)
        return 2 * x, backward

    x = f64([1.0, 2.0])
    y = x * 1.0
    (double_it(y) + y).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    # Promised: the engine added y's other gradient into the array the op sent.
    np.testing.assert_array_equal(sent[0], [3.0, 3.0] if promised else [2.0, 2.0])

def test_topological_order_is_iterative_and_complete():
    x = f64(1.0)
    y = x
    for _ in range(5000):
        y = y + x
    order = topological_order(y)
    assert order[0] is y and order[-1] is x and len(order) == 5001


# ----------------------------------------------------------------- dtypes and interop

SCALAR_OPS = {
    "add": lambda x: x + 2.0, "radd": lambda x: 2.0 + x, "sub": lambda x: x - 1,
    "rsub": lambda x: 1.5 - x, "mul": lambda x: x * 3.0, "rmul": lambda x: 0.5 * x,
    "div": lambda x: x / 3.0, "rdiv": lambda x: 1.0 / x, "pow": lambda x: x ** 2.0,
    "rpow": lambda x: 2.0 ** x, "neg": lambda x: -x, "exp": mt.exp, "log": mt.log,
    "sqrt": mt.sqrt, "tanh": mt.tanh, "sigmoid": mt.sigmoid, "relu": mt.relu,
    "gelu": mt.gelu, "abs": mt.abs, "clip": lambda x: x.clip(0.2, 0.9),
    "maximum": lambda x: mt.maximum(x, 0.5), "minimum": lambda x: mt.minimum(x, 0.5),
    "where": lambda x: mt.where(x.data > 0.5, x, 0.0),
    "masked_fill": lambda x: x.masked_fill(x.data > 0.5, -1e9),
    "sum": lambda x: x.sum(axis=0), "mean": lambda x: x.mean(axis=-1),
    "max": lambda x: x.max(), "min": lambda x: x.min(axis=1, keepdims=True),
    "var": lambda x: x.var(axis=1), "reshape": lambda x: x.reshape(-1),
    "permute": lambda x: x.permute(1, 0), "swapaxes": lambda x: x.swapaxes(0, 1),
    "flatten": lambda x: x.flatten(), "unsqueeze": lambda x: x.unsqueeze(0),
    "squeeze": lambda x: x.unsqueeze(1).squeeze(1), "expand": lambda x: x.expand(2, 3, 4),
    "getitem": lambda x: x[[0, 0], 1:], "mask": lambda x: x[x.data > 0.5],
    "concat": lambda x: mt.concat([x, x], axis=-1), "stack": lambda x: mt.stack([x, x]),
    "split": lambda x: x.split(1, axis=1)[0], "matmul": lambda x: x @ x.T,
    "softmax": F.softmax, "log_softmax": F.log_softmax, "layer_norm": F.layer_norm,
    "cross_entropy": lambda x: F.cross_entropy(x, np.array([0, 3, 1])),
    "dropout": lambda x: F.dropout(x, p=0.5),
    "embedding": lambda x: F.embedding(np.array([2, 0, 2]), x),
    "gelu+scale": lambda x: F.gelu(x) * 0.7978845608,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", SCALAR_OPS)
def test_dtype_is_preserved_through_every_op(name, dtype):
    x = mt.tensor(np.random.default_rng(0).uniform(0.1, 1.0, (3, 4)).astype(dtype),
                  requires_grad=True)
    out = SCALAR_OPS[name](x)
    assert out.dtype == dtype, name
    out.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax, F.layer_norm, F.gelu])
def test_integer_inputs_give_the_default_float32_as_pytorch(op):
    ids = np.array([[1, 2, 3], [4, 0, -2]])
    out = op(mt.tensor(ids))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, op(mt.tensor(ids.astype(np.float64))).data, rtol=1e-6)


def test_ndarray_plus_tensor_is_a_tensor():
    t = mt.tensor([1.0, 2.0], requires_grad=True)
    for result in (np.ones(2, np.float32) + t, np.ones(2, np.float32) * t,
                   np.ones((2, 2), np.float32) @ t):
        assert isinstance(result, mt.Tensor) and result.requires_grad


def test_np_asarray_of_a_tensor_is_its_data():
    t = mt.tensor([[1.0, 2.0]])
    array = np.asarray(t)
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    np.testing.assert_array_equal(array, [[1.0, 2.0]])
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert array is t.data and np.array(t) is not t.data  # asarray shares, array copies


def test_requires_grad_on_int_tensor_raises_type_error():
    with pytest.raises(TypeError, match="requires_grad"):
        mt.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError):
        mt.arange(3).requires_grad_()


def test_comparisons_give_bool_tensors_without_graph_and_eq_none_is_identity():
    x = f64([1.0, 2.0])
    assert (x > 1.5).dtype == bool and not (x > 1.5).requires_grad
    assert (x == None) is False
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x == f64([1.0, 2.0]))


def test_shape_ops_on_0d_tensors():
    s = f64(3.0)
    assert s.flatten().shape == (1,)
    assert s.unsqueeze(0).shape == (1,) and s.unsqueeze(-1).shape == (1,)
    assert s.squeeze().shape == () and s.squeeze(0).shape == ()
    s.flatten().unsqueeze(0).squeeze().sum().backward()
    assert s.grad == 1.0


def test_split_with_negative_axis_matches_positive_axis():
    x = mt.randn(2, 5)
    negative, positive = x.split(2, axis=-1), x.split(2, axis=1)
    assert [p.shape for p in negative] == [(2, 2), (2, 2), (2, 1)]
    for a, b in zip(negative, positive):
        np.testing.assert_array_equal(a.data, b.data)


def test_basic_slice_is_a_copy():
    x = mt.tensor([1.0, 2.0, 3.0])
    head = x[:2]
    x[0] = 10.0
    assert head.data[0] == 1.0


def test_pow_at_zero_follows_pytorch():
    x, y = f64([0.0, 0.0, 2.0]), f64([0.0, 2.0, 0.0])
    (x ** y).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])  # d(a^0)/da = 0, even at a = 0
    np.testing.assert_array_equal(y.grad, [0.0, 0.0, np.log(2.0)])


def test_inputs_passed_by_keyword_are_recorded():
    W = f64(np.ones((4, 2)))
    out = F.embedding(np.array([1, 1, 3]), weight=W)
    assert out.op.inputs[1] is W
    out.sum().backward()
    np.testing.assert_array_equal(W.grad[:, 0], [0.0, 2.0, 0.0, 1.0])
    x, bias = f64(np.arange(6.0).reshape(2, 3)), f64(np.zeros(3))
    F.layer_norm(x, bias=bias).sum().backward()
    np.testing.assert_array_equal(bias.grad, [2.0, 2.0, 2.0])


def test_detect_anomaly_allows_an_intentional_minus_inf_mask_but_not_a_nan_row():
    scores = f64([[1.0, 2.0], [3.0, 4.0]])
    with mt.detect_anomaly():
        weights = F.softmax(scores.masked_fill(np.array([[False, True]] * 2), -np.inf))
        weights.sum().backward()
        assert np.isfinite(scores.grad).all()
        everything_masked = scores.masked_fill(np.ones((2, 2), bool), -np.inf)
        with pytest.raises(FloatingPointError, match="softmax produced nan"), \
                np.errstate(invalid="ignore"):
            F.softmax(everything_masked)


def test_custom_primitive_gets_broadcast_reduction_and_dtype_cast():
    @mt.primitive("scaled_add", rule="da = g ;  db = 2 g")
    def scaled_add(a, b, *, scale=2.0):
        def backward(g):
            return g.astype(np.float64), scale * g  # wrong dtype, broadcast shape
        return a + scale * b, backward

    a = mt.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    b = mt.tensor(np.ones((3,), np.float32), requires_grad=True)
    out = scaled_add(a, b)
    assert out.op.name == "scaled_add" and out.op.config == {}
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.shape == (3,)
    np.testing.assert_array_equal(b.grad, [4.0, 4.0, 4.0])
    assert scaled_add(a, b, 3.0).op.config == {"scale": 3.0}  # extra positional -> config


def test_backward_returning_a_wrong_shape_is_caught():
    @mt.primitive("broken", rule="dx = g")
    def broken(x):
        return x * 2, lambda g: (g.T,)

    x = f64(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"internal: a gradient of shape \(3, 2\) cannot "
                                           r"belong to an input of shape \(2, 3\)"):
        broken(x).sum().backward()


def _gelu_after_linear(hook=None):
    """y = gelu(x); loss = sum(y @ W): gelu's grad_out comes from linear, a new_grads op."""
    rng = np.random.default_rng(0)
    x, W = f64(rng.standard_normal((3, 4))), f64(rng.standard_normal((4, 2)))
    y = F.gelu(x)
    if hook is not None:
        y.register_hook(hook)
    return F.linear(y, W).sum(), x, y, W


def test_a_backward_may_write_over_grad_out_only_when_nothing_else_holds_it():
    seen = []

    @mt.primitive("watch_grad_out", rule="dx = g")
    def watch_grad_out(x):
        def backward(g):
            seen.append(g.flags.writeable)
            return (g.copy(),)
        return x.copy(), backward

    x, W = f64(np.ones((2, 3))), f64(np.ones((3, 3)))
    F.linear(watch_grad_out(x), W).sum().backward()          # linear made it new
    watch_grad_out(x).sum().backward()                       # sum's backward broadcasts
    h = watch_grad_out(x)
    (F.linear(h, W) + F.linear(h, W)).sum().backward()      # a new sum of two new arrays
    y = watch_grad_out(x)
    y.register_hook(lambda g: None)
    F.linear(y, W).sum().backward()                          # a hook saw it
    list(backward_steps(F.linear(watch_grad_out(x), W).sum()))   # the stepper keeps it
    assert seen == [True, False, True, False, False]


def test_gelu_writes_its_gradient_over_grad_out_and_the_numbers_hold():
    loss, x, _, W = _gelu_after_linear()
    loss.backward()
    expected_dy = np.ones((3, 2)) @ W.data.T
    expected_dy.flags.writeable = False     # (a writeable grad_out is the op's to reuse)
    _, gelu_backward = mt.ops.gelu_tanh.forward(x.data)
    np.testing.assert_allclose(x.grad, gelu_backward(expected_dy)[0], rtol=1e-12)
    # A hook that keeps the gradient it saw keeps the right numbers.
    kept = []
    loss, *_ = _gelu_after_linear(hook=kept.append)
    loss.backward()
    np.testing.assert_allclose(kept[0], expected_dy, rtol=1e-12)
    # The stepper's record of gelu's grad_out is what gelu received, after its step too.
    loss, *_ = _gelu_after_linear()
    steps = [s for s in backward_steps(loss) if s.node is not None and s.node.name == "gelu"]
    np.testing.assert_allclose(steps[0].grad_out, expected_dy, rtol=1e-12)
