"""PyTorch as a second oracle: forward values and gradients of the fused and tricky ops
agree with torch (float64, CPU). Skipped when torch is not installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    broadcastable_pair,
    broadcastable_triple,
    reduction_cases,
    seeds,
    shapes,
)

import microtensor as mt
import microtensor.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def both(array):
    """The same float64 data as a microtensor leaf and a torch leaf."""
    array = np.asarray(array, dtype=np.float64)
    return (mt.tensor(array, requires_grad=True),
            torch.tensor(array, dtype=torch.float64, requires_grad=True))


def agree(mt_fn, torch_fn, *arrays, seed=0, grad_rtol=1e-9):
    """Run both, pull the same random gradient back through each, compare everything."""
    pairs = [both(a) for a in arrays]
    ours = mt_fn(*(p[0] for p in pairs))
    theirs = torch_fn(*(p[1] for p in pairs))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    grad_out = np.random.default_rng(seed).standard_normal(ours.shape)
    ours.backward(grad_out)
    theirs.backward(torch.tensor(grad_out))
    for i, (mine, reference) in enumerate(pairs):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=grad_rtol, atol=1e-12,
                                   err_msg=f"gradient of input {i}")


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape_a, shape_b", [
    ((3,), (3,)), ((3,), (3, 2)), ((4, 3), (3,)), ((4, 3), (3, 2)), ((2, 4, 3), (3, 5)),
    ((4, 3), (2, 3, 5)), ((2, 1, 4, 3), (3, 3, 2)), ((3,), (2, 3, 5)), ((2, 4, 3), (3,)),
])
def test_matmul(shape_a, shape_b):
    agree(lambda a, b: a @ b, lambda a, b: a @ b, normal(1, shape_a), normal(2, shape_b))


@pytest.mark.parametrize("ours, theirs", [(F.softmax, torch.softmax),
                                          (F.log_softmax, torch.log_softmax)])
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_softmax_and_log_softmax(ours, theirs, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    agree(lambda x: ours(x, axis=axis), lambda x: theirs(x, dim=axis),
          normal(seed, shape) * 4, seed=seed)


@given(shape=shapes(min_dims=1), seed=seeds)
def test_layer_norm(shape, seed):
    shape = shape[:-1] + (shape[-1] + 1,)
    d = shape[-1]
    agree(lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5),
          lambda x, w, b: TF.layer_norm(x, (d,), w, b, eps=1e-5),
          normal(seed, shape), normal(seed + 1, (d,)), normal(seed + 2, (d,)), seed=seed)
    agree(lambda x: F.layer_norm(x), lambda x: TF.layer_norm(x, (d,)), normal(seed, shape))


@given(shape=shapes(min_dims=1), n_out=st.integers(1, 4), seed=seeds)
def test_layer_norm_linear(shape, n_out, seed):
    # (Without torch, tests/test_gradients.py holds it to layer_norm then linear.)
    shape = shape[:-1] + (shape[-1] + 1,)
    d = shape[-1]
    agree(lambda x, w, b, W, c: F.layer_norm_linear(x, w, b, W, c),
          lambda x, w, b, W, c: TF.layer_norm(x, (d,), w, b, eps=1e-5) @ W + c,
          normal(seed, shape), normal(seed + 1, (d,)), normal(seed + 2, (d,)),
          normal(seed + 3, (d, n_out)), normal(seed + 4, (n_out,)), seed=seed)

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(n=st.integers(1, 6), classes=st.integers(1, 5), seed=seeds)
def test_cross_entropy_with_ignore_index(reduction, n, classes, seed):
    rng = np.random.default_rng(seed)
    target = np.where(rng.random(n) < 0.3, 0, rng.integers(0, classes, n))
    if reduction == "mean" and not (target != 0).any():
        target[0] = classes - 1 if classes > 1 else 0
    if reduction == "mean" and not (target != 0).any():
        return  # every row ignored: both give NaN, nothing to compare
    agree(lambda x: F.cross_entropy(x, target, ignore_index=0, reduction=reduction),
          lambda x: TF.cross_entropy(x, torch.tensor(target), ignore_index=0,
                                     reduction=reduction),
          normal(seed, (n, classes)) * 3, seed=seed)


def test_cross_entropy_over_a_sequence_matches_flattened_torch():
    logits = normal(0, (2, 5, 7))
    target = np.random.default_rng(1).integers(0, 7, (2, 5))
    target[0, :2] = -100  # PyTorch's default ignore_index
    agree(lambda x: F.cross_entropy(x, target),
          lambda x: TF.cross_entropy(x.reshape(-1, 7), torch.tensor(target.reshape(-1))),
          logits)


@given(shape=shapes(), seed=seeds)
def test_gelu_tanh(shape, seed):
    agree(F.gelu, lambda x: TF.gelu(x, approximate="tanh"), normal(seed, shape) * 3, seed=seed)


@given(ids_shape=shapes(min_dims=1, max_dims=3), vocab=st.integers(1, 6), seed=seeds)
def test_embedding(ids_shape, vocab, seed):
    ids = np.random.default_rng(seed).integers(0, vocab, ids_shape)
    agree(lambda W: F.embedding(ids, W), lambda W: TF.embedding(torch.tensor(ids), W),
          normal(seed, (vocab, 4)), seed=seed)


@given(shape=shapes(min_dims=1), correction=st.sampled_from([0, 1, 2]), keepdims=st.booleans(),
       seed=seeds, data=st.data())
def test_var_with_correction(shape, correction, keepdims, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    shape = tuple(n + correction if i == axis % len(shape) else n for i, n in enumerate(shape))
    agree(lambda x: x.var(axis=axis, keepdims=keepdims, correction=correction),
          lambda x: torch.var(x, dim=axis, keepdim=keepdims, correction=correction),
          normal(seed, shape), seed=seed)


# ---------------------------------------------------------------------- the wider op set
# Each new op against torch: values and the gradient of a random projection.

def test_repeated_index_forms_and_ties_agree_with_torch():
    x = normal(0, (3, 2))
    agree(lambda x: x[(0, 0), :], lambda x: x[[0, 0], :], x)
    agree(lambda x: x[[[0, 0], [2, 0]]], lambda x: x[torch.tensor([[0, 0], [2, 0]])], x)
    a, b = np.array([3.0, 1.0, 2.0]), np.array([3.0, 2.0, 2.0])
    agree(mt.maximum, torch.maximum, a, b)
    agree(mt.minimum, torch.minimum, a, b)


REDUCTIONS = {
    "std": (lambda x, a, k: x.std(axis=a, keepdims=k),
            lambda x, a, k: torch.std(x, dim=a, keepdim=k)),
    "logsumexp": (lambda x, a, k: x.logsumexp(axis=a, keepdims=k),
                  lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k)),
    "prod": (lambda x, a, k: x.prod(axis=a, keepdims=k),
             lambda x, a, k: torch.prod(x, dim=a, keepdim=k)),
    "cumsum": (lambda x, a, k: x.cumsum(axis=a), lambda x, a, k: torch.cumsum(x, dim=a)),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(shape=shapes(min_dims=1), keepdims=st.booleans(), seed=seeds, data=st.data())
def test_reductions(name, shape, keepdims, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    if name == "std":
        shape = tuple(n + 1 if i == axis % len(shape) else n for i, n in enumerate(shape))
    ours, theirs = REDUCTIONS[name]
    agree(lambda x: ours(x, axis, keepdims), lambda x: theirs(x, axis, keepdims),
          normal(seed, shape), seed=seed)


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_integer_and_boolean_reductions(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = normal(seed, shape)
    t = torch.tensor(x)
    for ours, theirs in ((mt.argmax, torch.argmax), (mt.argmin, torch.argmin)):
        np.testing.assert_array_equal(ours(mt.tensor(x), axis=axis).data,
                                      theirs(t, dim=axis).numpy())
        np.testing.assert_array_equal(ours(mt.tensor(x)).data, theirs(t).numpy())
    for ours, theirs in ((mt.any, torch.any), (mt.all, torch.all)):
        np.testing.assert_array_equal(ours(mt.tensor(x) > 0, axis=axis).data,
                                      theirs(t > 0, dim=axis).numpy())
    special = np.where(x > 1, np.inf, np.where(x < -1, np.nan, x))
    for name in ("isnan", "isinf", "isfinite"):
        np.testing.assert_array_equal(getattr(mt, name)(mt.tensor(special)).data,
                                      getattr(torch, name)(torch.tensor(special)).numpy())


@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_shape_ops(shape, seed, data):
    x = normal(seed, shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    pad = tuple(data.draw(st.lists(st.integers(0, 2), min_size=2, max_size=2 * len(shape)).filter(
        lambda p: len(p) % 2 == 0)))
    agree(lambda x: mt.pad(x, pad, value=0.5), lambda x: TF.pad(x, pad, value=0.5), x, seed=seed)
    agree(lambda x: x.flip(axis), lambda x: torch.flip(x, (axis,)), x, seed=seed)
    shift = data.draw(st.integers(-3, 3))
    agree(lambda x: x.roll(shift, axis), lambda x: torch.roll(x, shift, axis), x, seed=seed)
    reps = tuple(data.draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=4)))
    agree(lambda x: x.repeat(*reps), lambda x: x.repeat(*reps), x, seed=seed)
    agree(lambda x: mt.tile(x, reps), lambda x: torch.tile(x, reps), x, seed=seed)
    counts = data.draw(st.lists(st.integers(0, 3), min_size=shape[axis], max_size=shape[axis]))
    agree(lambda x: x.repeat_interleave(np.array(counts), axis),
          lambda x: torch.repeat_interleave(x, torch.tensor(counts), dim=axis), x, seed=seed)
    agree(lambda x: x.repeat_interleave(2), lambda x: torch.repeat_interleave(x, 2), x)
    chunks = data.draw(st.integers(1, 4))
    agree(lambda x: mt.concat([p * (i + 1) for i, p in enumerate(x.chunk(chunks, axis))], axis),
          lambda x: torch.cat([p * (i + 1) for i, p in enumerate(x.chunk(chunks, axis))], axis),
          x, seed=seed)
    agree(lambda x: x.unflatten(axis, (1, -1)), lambda x: x.unflatten(axis, (1, -1)), x)
    if len(shape) >= 2:
        diagonal = data.draw(st.integers(-2, 2))
        agree(lambda x: x.tril(diagonal), lambda x: torch.tril(x, diagonal), x, seed=seed)
        agree(lambda x: x.triu(diagonal), lambda x: torch.triu(x, diagonal), x, seed=seed)


@pytest.mark.parametrize("subscripts, operand_shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 2, 4)]),
    ("i,j->ij", [(2,), (3,)]), ("ij->i", [(2, 3)]), ("...ij,...jk->...ik", [(2, 2, 3), (2, 3, 2)]),
    ("bi,bj->b", [(3, 2), (3, 4)]), ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
])
def test_einsum(subscripts, operand_shapes):
    agree(lambda *xs: mt.einsum(subscripts, *xs), lambda *xs: torch.einsum(subscripts, *xs),
          *[normal(i, s) for i, s in enumerate(operand_shapes)])


@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_indexing_and_selection(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.37
    index = np.random.default_rng(seed).integers(0, shape[axis], tuple(
        n if i != axis % len(shape) else 3 for i, n in enumerate(shape)))
    agree(lambda x: mt.gather(x, axis, index),
          lambda x: torch.gather(x, axis, torch.tensor(index)), x, seed=seed)
    agree(lambda x, src: x.scatter_add(axis, index, src),
          lambda x, src: x.scatter_add(axis, torch.tensor(index), src),
          x, normal(seed, index.shape), seed=seed)
    mask = np.random.default_rng(seed + 1).random(shape[-1:]) < 0.5   # broadcast
    agree(lambda x: mt.masked_select(x, mask),
          lambda x: torch.masked_select(x, torch.tensor(mask)), x, seed=seed)
    descending = data.draw(st.booleans())
    agree(lambda x: x.sort(axis, descending)[0],
          lambda x: torch.sort(x, dim=axis, descending=descending)[0], x, seed=seed)
    np.testing.assert_array_equal(mt.argsort(mt.tensor(x), axis=axis, descending=descending).data,
                                  torch.argsort(torch.tensor(x), dim=axis,
                                                descending=descending).numpy())
    k, largest = data.draw(st.integers(0, shape[axis])), data.draw(st.booleans())
    agree(lambda x: x.topk(k, axis, largest)[0],
          lambda x: torch.topk(x, k, dim=axis, largest=largest)[0], x, seed=seed)
    np.testing.assert_array_equal(mt.topk(mt.tensor(x), k, axis, largest)[1].data,
                                  torch.topk(torch.tensor(x), k, dim=axis, largest=largest)[1])
    ids = np.random.default_rng(seed).integers(0, 5, shape)
    np.testing.assert_array_equal(F.one_hot(ids, 5).data, TF.one_hot(torch.tensor(ids), 5))


ACTIVATIONS = [
    (F.silu, TF.silu), (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    (lambda x: F.elu(x, alpha=0.7), lambda x: TF.elu(x, alpha=0.7)),
    (F.softplus, TF.softplus),
    (lambda x: F.softplus(x, beta=2.0, threshold=3.0),
     lambda x: TF.softplus(x, beta=2.0, threshold=3.0)),
    (mt.erf, torch.erf), (lambda x: F.gelu(x, approximate="none"), TF.gelu),
    (mt.rsqrt, torch.rsqrt), (mt.sign, torch.sign), (mt.sin, torch.sin), (mt.cos, torch.cos),
    (mt.square, torch.square),
]


@pytest.mark.parametrize("ours, theirs", ACTIVATIONS)
@given(shape=shapes(), seed=seeds)
def test_activations(ours, theirs, shape, seed):
    x = normal(seed, shape) * 3
    if ours is mt.rsqrt:
        x = np.abs(x) + 0.1
    agree(ours, theirs, x, seed=seed)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(shape=shapes(), seed=seeds)
def test_binary_cross_entropy(reduction, shape, seed):
    rng = np.random.default_rng(seed)
    agree(lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction),
          lambda p, t: TF.binary_cross_entropy(p, t, reduction=reduction),
          rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape), seed=seed)
    agree(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
          lambda x, t: TF.binary_cross_entropy_with_logits(x, t, reduction=reduction),
          normal(seed, shape) * 4, rng.uniform(0, 1, shape), seed=seed)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(n=st.integers(1, 6), classes=st.integers(1, 5), seed=seeds,
       smoothing=st.sampled_from([0.0, 0.1, 0.3]))
def test_nll_loss_and_cross_entropy_options(reduction, n, classes, smoothing, seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    target[0] = -100 if n > 1 else target[0]
    log_probs = np.log(rng.dirichlet(np.ones(classes), n))
    agree(lambda x: F.nll_loss(x, target, reduction=reduction),
          lambda x: TF.nll_loss(x, torch.tensor(target), reduction=reduction), log_probs,
          seed=seed)
    logits = normal(seed, (n, classes)) * 2
    agree(lambda x: F.cross_entropy(x, target, label_smoothing=smoothing, reduction=reduction),
          lambda x: TF.cross_entropy(x, torch.tensor(target), label_smoothing=smoothing,
                                     reduction=reduction), logits, seed=seed)
    probs = rng.dirichlet(np.ones(classes), n)
    agree(lambda x, q: F.cross_entropy(x, q, label_smoothing=smoothing, reduction=reduction),
          lambda x, q: TF.cross_entropy(x, q, label_smoothing=smoothing, reduction=reduction),
          logits, probs, seed=seed)


def test_creation():
    for ours, theirs in ((mt.full((2, 2), 4), torch.full((2, 2), 4)),
                         (mt.full((2,), True), torch.full((2,), True)),
                         (mt.linspace(-1, 2, 7), torch.linspace(-1, 2, 7)),
                         (mt.full_like(mt.zeros(3), 2.5), torch.full_like(torch.zeros(3), 2.5))):
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)
    assert mt.empty(2, 3).shape == tuple(torch.empty(2, 3).shape)


@given(seed=seeds, tq=st.integers(1, 4), tk=st.integers(1, 4))
def test_attention_with_a_float_mask(seed, tq, tk):
    from transformer import scaled_dot_product_attention as sdpa
    rng = np.random.default_rng(seed)
    bias = np.where(rng.random((tq, tk)) < 0.2, -np.inf, rng.standard_normal((tq, tk)))
    bias[:, 0] = 0.0                                  # every row keeps a key (torch: no NaN)
    agree(lambda q, k, v: sdpa(q, k, v, mask=bias)[0],
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(bias)),
          normal(seed, (2, tq, 3)), normal(seed + 1, (2, tk, 3)), normal(seed + 2, (2, tk, 2)),
          seed=seed)


# ---------------------------------------------------------------------- issue 30's ops
# Without torch, tests/test_ops_math.py, test_ops_structure.py, test_ops_losses.py and
# test_ops_fixes.py hold the same ops to NumPy, loops and exact arithmetic.

def inside(low, high, seed, shape):
    return np.random.default_rng(seed).uniform(low, high, shape)


POINTWISE = [
    (mt.tan, torch.tan, (-1.2, 1.2)), (mt.asin, torch.asin, (-0.9, 0.9)),
    (mt.acos, torch.acos, (-0.9, 0.9)), (mt.atan, torch.atan, (-3, 3)),
    (mt.sinh, torch.sinh, (-3, 3)), (mt.cosh, torch.cosh, (-3, 3)),
    (mt.asinh, torch.asinh, (-3, 3)), (mt.acosh, torch.acosh, (1.1, 4)),
    (mt.atanh, torch.atanh, (-0.9, 0.9)), (mt.exp2, torch.exp2, (-3, 3)),
    (mt.log2, torch.log2, (0.1, 4)), (mt.floor, torch.floor, (-3, 3)),
    (mt.ceil, torch.ceil, (-3, 3)), (mt.trunc, torch.trunc, (-3, 3)),
    (mt.round, torch.round, (-3, 3)),
    (F.relu6, TF.relu6, (-2, 8)), (lambda x: F.hardtanh(x, -0.5, 2.0),
                                   lambda x: TF.hardtanh(x, -0.5, 2.0), (-3, 3)),
    (F.hardsigmoid, TF.hardsigmoid, (-5, 5)), (F.hardswish, TF.hardswish, (-5, 5)),
    (F.selu, TF.selu, (-3, 3)), (lambda x: F.celu(x, 0.5), lambda x: TF.celu(x, 0.5), (-3, 3)),
    (F.mish, TF.mish, (-5, 5)), (F.softsign, TF.softsign, (-5, 5)),
    (F.logsigmoid, TF.logsigmoid, (-30, 30)),
    (F.quick_gelu, lambda x: x * torch.sigmoid(1.702 * x), (-5, 5)),   # torch has none
]


@pytest.mark.parametrize("ours, theirs, bounds", POINTWISE)
@given(shape=shapes(), seed=seeds)
def test_pointwise_and_activations(ours, theirs, bounds, shape, seed):
    # PyTorch's hardsigmoid backward multiplies by 1/6 rounded to float32, even in float64.
    agree(ours, theirs, inside(*bounds, seed, shape), seed=seed,
          grad_rtol=1e-7 if ours is F.hardsigmoid else 1e-9)


def test_rounding_and_piecewise_corners_agree_with_torch():
    agree(mt.round, torch.round, np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]))
    corners = np.array([-3.0, 3.0, 0.0, 6.0, -1.0, 1.0])
    for ours, theirs in ((F.hardswish, TF.hardswish), (F.hardsigmoid, TF.hardsigmoid),
                         (F.relu6, TF.relu6), (F.hardtanh, TF.hardtanh)):
        agree(ours, theirs, corners, grad_rtol=1e-7)      # hardsigmoid's float32 1/6
    agree(lambda x: mt.round(x, decimals=2), lambda x: torch.round(x, decimals=2),
          np.array([1.2345, -0.015, 2.675]))


@given(seed=seeds, data=st.data())
def test_two_and_three_operand_math(seed, data):
    shape = data.draw(shapes(max_dims=3))
    a, b, w = normal(seed, shape), normal(seed + 1, shape[-1:]), normal(seed + 2, shape)
    agree(mt.copysign, torch.copysign, a, b, seed=seed)
    agree(mt.lerp, torch.lerp, a, b, w, seed=seed)
    agree(lambda s, e: mt.lerp(s, e, 0.3), lambda s, e: torch.lerp(s, e, 0.3), a, b, seed=seed)
    close = a + np.random.default_rng(seed).choice([0, 1e-9, 1e-3], np.shape(a))
    np.testing.assert_array_equal(mt.isclose(mt.tensor(a), mt.tensor(close)).data,
                                  torch.isclose(torch.tensor(a), torch.tensor(close)).numpy())
    n = data.draw(st.integers(1, 4))
    agree(mt.dot, torch.dot, normal(seed, (n,)), normal(seed + 1, (n,)), seed=seed)
    mask = np.random.default_rng(seed).random(shape) < 0.5
    np.testing.assert_array_equal((~mt.tensor(mask)).data, (~torch.tensor(mask)).numpy())


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_running_ops(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = normal(seed, shape)
    x = np.where(np.random.default_rng(seed).random(shape) < 0.2, 0.0, x)   # zeros: cumprod
    agree(lambda x: x.cumprod(axis), lambda x: torch.cumprod(x, axis), x, seed=seed)
    agree(lambda x: x.logcumsumexp(axis), lambda x: torch.logcumsumexp(x, axis), x * 3,
          seed=seed)
    ties = np.round(x * 2) / 2                                  # ties: the later index wins
    for name in ("cummax", "cummin"):
        agree(lambda x, name=name: getattr(x, name)(axis)[0],
              lambda x, name=name: getattr(torch, name)(x, axis)[0], ties, seed=seed)
        np.testing.assert_array_equal(getattr(mt, name)(mt.tensor(ties), axis)[1].data,
                                      getattr(torch, name)(torch.tensor(ties), axis)[1].numpy())


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@given(shape=shapes(min_dims=1, max_dims=3), include_self=st.booleans(), seed=seeds,
       data=st.data())
def test_scatter_and_scatter_reduce(reduce, shape, include_self, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    index_shape = tuple(n if i != axis % len(shape) else 4 for i, n in enumerate(shape))
    index = rng.integers(0, shape[axis], index_shape)
    # Values on a coarse grid, so amax/amin meet ties (shared evenly, as in torch) and
    # prod meets zeros. Without include_self, x sits off src's grid: where x's own value
    # ties with a result it did not take part in, PyTorch still counts it among the ties
    # (and then drops its share); we share among the values that took part (documented).
    x, src = np.round(normal(seed, shape) * 2) / 2, np.round(normal(seed + 1, index_shape) * 2) / 2
    if not include_self:
        x = x + 0.25
    agree(lambda x, s: x.scatter_reduce(axis, index, s, reduce, include_self),
          lambda x, s: x.scatter_reduce(axis, torch.tensor(index), s, reduce,
                                        include_self=include_self), x, src, seed=seed)
    unique = np.argsort(rng.random(shape), axis=axis)            # no position written twice
    agree(lambda x, s: x.scatter(axis, unique, s),
          lambda x, s: x.scatter(axis, torch.tensor(unique), s), x, normal(seed, shape),
          seed=seed)
    agree(lambda x: mt.scatter(x, axis, unique, 1.5),
          lambda x: torch.scatter(x, axis, torch.tensor(unique), 1.5), x, seed=seed)


@given(shape=shapes(min_dims=2, max_dims=3), offset=st.integers(-2, 2), seed=seeds,
       data=st.data())
def test_diagonals_windows_and_grids(shape, offset, seed, data):
    x = normal(seed, shape)
    agree(lambda x: x.diagonal(offset, -1, 0), lambda x: torch.diagonal(x, offset, -1, 0), x)
    agree(lambda m: m.diag(offset), lambda m: torch.diag(m, offset), x[(0,) * (x.ndim - 2)])
    agree(lambda v: mt.diag(v, offset), lambda v: torch.diag(v, offset), x.reshape(-1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    size, step = data.draw(st.integers(0, shape[axis])), data.draw(st.integers(1, 3))
    agree(lambda x: x.unfold(axis, size, step), lambda x: x.unfold(axis, size, step), x,
          seed=seed)
    indexing = data.draw(st.sampled_from(["ij", "xy"]))
    agree(lambda a, b: mt.concat([g.reshape(-1) for g in mt.meshgrid(a, b, indexing=indexing)]),
          lambda a, b: torch.cat([g.reshape(-1) for g in torch.meshgrid(a, b,
                                                                         indexing=indexing)]),
          normal(seed, shape[:1]), normal(seed + 1, shape[1:2]), seed=seed)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@given(seed=seeds, data=st.data())
def test_pad_modes(mode, seed, data):
    # PyTorch pads the last 1-3 axes of a batch in these modes: (N, C, W), (N, C, H, W).
    shape = (2, 2) + tuple(data.draw(st.lists(st.integers(2, 4), min_size=1, max_size=2)))
    pad = []
    for size in reversed(shape[2:]):
        before = data.draw(st.integers(-1, size - 2))
        # (PyTorch refuses an empty result in these modes; we return it.)
        pad += [before, data.draw(st.integers(-1 if before - 1 > -size else 0, size - 2))]
    agree(lambda x: mt.pad(x, pad, mode=mode, value=0.5),
          lambda x: TF.pad(x, pad, mode=mode, value=0.5 if mode == "constant" else None),
          normal(seed, shape), seed=seed)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(n=st.integers(1, 5), classes=st.integers(1, 4), seed=seeds,
       smoothing=st.sampled_from([0.0, 0.2]))
def test_class_weights_and_pos_weight(reduction, n, classes, smoothing, seed):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 2.0, classes)
    target = rng.integers(0, classes, n)
    target[0] = -100 if n > 1 else target[0]
    agree(lambda x: F.nll_loss(x, target, weight=weight, reduction=reduction),
          lambda x: TF.nll_loss(x, torch.tensor(target), weight=torch.tensor(weight),
                                reduction=reduction),
          np.log(rng.dirichlet(np.ones(classes), n)), seed=seed)
    logits = normal(seed, (n, classes)) * 2
    agree(lambda x: F.cross_entropy(x, target, weight=weight, label_smoothing=smoothing,
                                    reduction=reduction),
          lambda x: TF.cross_entropy(x, torch.tensor(target), weight=torch.tensor(weight),
                                     label_smoothing=smoothing, reduction=reduction),
          logits, seed=seed)
    agree(lambda x, q: F.cross_entropy(x, q, weight=weight, label_smoothing=smoothing,
                                       reduction=reduction),
          lambda x, q: TF.cross_entropy(x, q, weight=torch.tensor(weight),
                                        label_smoothing=smoothing, reduction=reduction),
          logits, rng.dirichlet(np.ones(classes), n), seed=seed)
    # weight and pos_weight as constants: torch gives them no gradient (we do, and
    # test_ops_losses.py checks ours by central differences).
    scale, positive = rng.uniform(0.5, 2, (n, classes)), rng.uniform(0.5, 3, (classes,))
    agree(lambda x, t: F.binary_cross_entropy_with_logits(x, t, scale, positive,
                                                          reduction=reduction),
          lambda x, t: TF.binary_cross_entropy_with_logits(
              x, t, torch.tensor(scale), reduction=reduction, pos_weight=torch.tensor(positive)),
          logits * 2, rng.uniform(0, 1, (n, classes)), seed=seed)


@given(start=st.floats(-60, 60), stop=st.floats(-60, 60), num=st.integers(0, 40))
def test_integer_linspace(start, stop, num):
    # Where the exact value is an integer, PyTorch's float rounding can land one below it
    # (-11.999... truncates to -11); ours is the exact value. Elsewhere the two agree.
    ours = mt.linspace(start, stop, num, dtype=np.int64).data
    theirs = torch.linspace(start, stop, num, dtype=torch.int64).numpy()
    first, last = int(start), int(stop)
    exact = first + (last - first) * np.arange(num) / max(num - 1, 1)
    clear = np.abs(exact - np.round(exact)) > 1e-6
    np.testing.assert_array_equal(ours[clear], theirs[clear])
    with pytest.raises(TypeError):
        mt.linspace(0, 1, 3, dtype=bool)
    with pytest.raises(NotImplementedError):
        torch.linspace(0, 1, 3, dtype=torch.bool)


@pytest.mark.parametrize("tensor_dtype, zero_d_dtype", [
    ("int32", "float32"), ("int32", "float64"), ("float32", "float64"), ("int32", "int64"),
    ("uint8", "int8"), ("bool", "float32"), ("float16", "float64"), ("int64", "float16")])
def test_0d_promotion(tensor_dtype, zero_d_dtype):
    a, b = np.array([0, 1, 1], dtype=tensor_dtype), np.array(1, dtype=zero_d_dtype)
    for ours, theirs in ((mt.maximum, torch.maximum), (mt.add, torch.add), (mt.mul, torch.mul)):
        expected = theirs(torch.tensor(a), torch.tensor(b)).numpy().dtype
        assert ours(mt.tensor(a), mt.tensor(b)).dtype == expected


def test_sum_prod_dtype_and_signed_isinf():
    x = np.array([[1e8, 1.0, -1e8], [2.0, 3.0, 4.0]], np.float32)
    for axis in (None, 0, 1):
        theirs = torch.sum(torch.tensor(x), dim=axis, dtype=torch.float64) if axis is not None \
            else torch.sum(torch.tensor(x), dtype=torch.float64)
        ours = mt.tensor(x).sum(axis=axis, dtype=np.float64)
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours.data, theirs.numpy())
    ints = np.arange(1, 7).reshape(2, 3)
    np.testing.assert_array_equal(mt.prod(mt.tensor(ints), axis=1, dtype=np.float32).data,
                                  torch.prod(torch.tensor(ints), 1, dtype=torch.float32).numpy())
    special = torch.tensor([1.0, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(mt.isinf(mt.tensor(special.numpy()), detect_negative=False).data,
                                  torch.isposinf(special).numpy())
    np.testing.assert_array_equal(mt.isinf(mt.tensor(special.numpy()), detect_positive=False).data,
                                  torch.isneginf(special).numpy())


def class_first(class_last):
    """(N, d1, ..., C) -> (N, C, d1, ...), contiguous (torch's nll_loss2d backward needs it)."""
    return np.ascontiguousarray(np.moveaxis(class_last, -1, 1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(n=st.integers(1, 3), classes=st.integers(1, 4), spatial=shapes(min_dims=1, max_dims=2),
       seed=seeds, smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_class_axis_1_is_pytorchs_layout(reduction, n, classes, spatial, seed, smoothing,
                                         weighted):
    # The same (N, C, d1, ...) arrays into both: ours with class_axis=1, PyTorch's as is.
    # (Without torch, test_ops_losses.py holds class_axis=1 to the class axis moved last.)
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, (n,) + spatial)
    target[(0,) * target.ndim] = -100                  # one ignored position
    if reduction == "mean" and not (target != -100).any():
        return  # every position ignored: both give NaN, nothing to compare
    weight = rng.uniform(0.5, 2.0, classes) if weighted else None
    torch_weight = None if weight is None else torch.tensor(weight)
    logits = normal(seed, (n, classes) + spatial) * 2
    agree(lambda x: F.cross_entropy(x, target, weight=weight, label_smoothing=smoothing,
                                    reduction=reduction, class_axis=1),
          lambda x: TF.cross_entropy(x, torch.tensor(target), weight=torch_weight,
                                     label_smoothing=smoothing, reduction=reduction),
          logits, seed=seed)
    agree(lambda x: F.nll_loss(x, target, weight=weight, reduction=reduction, class_axis=1),
          lambda x: TF.nll_loss(x, torch.tensor(target), weight=torch_weight,
                                reduction=reduction),
          class_first(np.log(rng.dirichlet(np.ones(classes), target.shape))), seed=seed)
    probs = class_first(rng.dirichlet(np.ones(classes), target.shape))
    agree(lambda x, q: F.cross_entropy(x, q, weight=weight, label_smoothing=smoothing,
                                       reduction=reduction, class_axis=1),
          lambda x, q: TF.cross_entropy(x, q, weight=torch_weight, label_smoothing=smoothing,
                                        reduction=reduction), logits, probs, seed=seed)


# ---------------------------------------------------------------------- the core set
# The ops every model is made of, against torch over drawn (broadcast) shapes. Data keeps
# clear of each op's kinks and ties: a failure is a different value or gradient.

def away(seed, shape, gap=0.3):
    """Normal data with no value within `gap` of 0 (relu, abs, division)."""
    x = normal(seed, shape)
    return np.where(np.abs(x) < gap, np.where(x < 0, -gap, gap) * 2, x)


def positive(seed, shape):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


def integers(seed, shape):
    return np.random.default_rng(seed).integers(-3, 3, shape).astype(float)


def half_integers(seed, shape):
    return integers(seed, shape) + 0.5      # never equal to an integer: no tie


CORE_BINARY = {  # name -> (ours, theirs, data for a, data for b)
    "add": (lambda a, b: a + b, lambda a, b: a + b, normal, normal),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, normal, normal),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, normal, normal),
    "div": (lambda a, b: a / b, lambda a, b: a / b, normal, away),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, positive, normal),
    "maximum": (mt.maximum, torch.maximum, integers, half_integers),
    "minimum": (mt.minimum, torch.minimum, integers, half_integers),
}


@pytest.mark.parametrize("name", CORE_BINARY)
@given(pair=broadcastable_pair(), seed=seeds)
def test_core_binary_ops(name, pair, seed):
    ours, theirs, make_a, make_b = CORE_BINARY[name]
    agree(ours, theirs, make_a(seed, pair[0]), make_b(seed + 1, pair[1]), seed=seed)


CORE_UNARY = {  # name -> (ours, theirs, data)
    "neg": (lambda x: -x, lambda x: -x, normal),
    "exp": (mt.exp, torch.exp, normal),
    "log": (mt.log, torch.log, positive),
    "sqrt": (mt.sqrt, torch.sqrt, positive),
    "tanh": (mt.tanh, torch.tanh, normal),
    "sigmoid": (mt.sigmoid, torch.sigmoid, normal),
    "relu": (mt.relu, torch.relu, away),
    "abs": (mt.abs, torch.abs, away),
    "clip": (lambda x: x.clip(-0.25, 0.75), lambda x: x.clamp(-0.25, 0.75), half_integers),
    "astype": (lambda x: x.astype(np.float32).astype(np.float64),
               lambda x: x.float().double(), normal),
}


@pytest.mark.parametrize("name", CORE_UNARY)
@given(shape=shapes(), seed=seeds)
def test_core_unary_ops(name, shape, seed):
    ours, theirs, make = CORE_UNARY[name]
    agree(ours, theirs, make(seed, shape), seed=seed)


COMPARISONS = {"equal": torch.eq, "not_equal": torch.ne, "less": torch.lt,
               "less_equal": torch.le, "greater": torch.gt, "greater_equal": torch.ge}


@pytest.mark.parametrize("name", COMPARISONS)
@given(pair=broadcastable_pair(), seed=seeds)
def test_comparisons(name, pair, seed):
    a, b = integers(seed, pair[0]), integers(seed + 1, pair[1])    # equal values too
    np.testing.assert_array_equal(getattr(mt.ops, name)(mt.tensor(a), mt.tensor(b)).data,
                                  COMPARISONS[name](torch.tensor(a), torch.tensor(b)).numpy())


@given(triple=broadcastable_triple(), seed=seeds)
def test_where_and_masked_fill(triple, seed):
    mask = np.random.default_rng(seed).random(triple[0]) < 0.5
    agree(lambda a, b: mt.where(mask, a, b), lambda a, b: torch.where(torch.tensor(mask), a, b),
          normal(seed, triple[1]), normal(seed + 1, triple[2]), seed=seed)
    target = np.broadcast_shapes(triple[0], triple[1])
    if target == triple[1]:                     # masked_fill keeps x's shape, as torch's does
        agree(lambda x: x.masked_fill(mask, -2.5),
              lambda x: x.masked_fill(torch.tensor(mask), -2.5), normal(seed, triple[1]))


CORE_REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}


@pytest.mark.parametrize("name", CORE_REDUCTIONS)
@given(case=reduction_cases(min_dims=1), seed=seeds)
def test_core_reductions(name, case, seed):
    shape, axis, keepdims = case
    dims = tuple(range(len(shape))) if axis is None else axis
    x = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.37
    agree(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims),
          lambda x: CORE_REDUCTIONS[name](x, dim=dims, keepdim=keepdims), x, seed=seed)


@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_core_shape_ops(shape, seed, data):
    x, ndim = normal(seed, shape), len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    other = data.draw(st.integers(-ndim, ndim - 1))
    order = data.draw(st.permutations(range(ndim)))
    size = int(np.prod(shape))
    agree(lambda x: x.reshape(size, 1), lambda x: x.reshape(size, 1), x, seed=seed)
    agree(lambda x: x.view(-1), lambda x: x.view(-1), x, seed=seed)
    agree(lambda x: x.transpose(axis, other), lambda x: x.transpose(axis, other), x, seed=seed)
    agree(lambda x: x.swapaxes(axis, other), lambda x: x.swapaxes(axis, other), x, seed=seed)
    agree(lambda x: x.T, lambda x: x.permute(*reversed(range(ndim))), x, seed=seed)
    agree(lambda x: x.permute(*order), lambda x: x.permute(*order), x, seed=seed)
    start, end = sorted((axis % ndim, other % ndim))
    agree(lambda x: x.flatten(start, end), lambda x: x.flatten(start, end), x, seed=seed)
    agree(lambda x: x.unsqueeze(axis).squeeze(axis), lambda x: x.unsqueeze(axis).squeeze(axis),
          x, seed=seed)
    agree(lambda x: x.unsqueeze(-1).expand(*shape, 2), lambda x: x.unsqueeze(-1).expand(*shape, 2),
          x, seed=seed)
    agree(lambda a, b: mt.concat([a, b * 2], axis=axis), lambda a, b: torch.cat([a, b * 2], axis),
          x, normal(seed + 1, shape), seed=seed)
    agree(lambda a, b: mt.stack([a, b], axis=axis), lambda a, b: torch.stack([a, b], axis),
          x, normal(seed + 1, shape), seed=seed)
    sections = data.draw(st.integers(1, shape[axis]))
    agree(lambda x: mt.concat([p * (i + 1) for i, p in enumerate(x.split(sections, axis))], axis),
          lambda x: torch.cat([p * (i + 1) for i, p in enumerate(x.split(sections, axis))], axis),
          x, seed=seed)


@given(lead=shapes(max_dims=3), n_in=st.integers(1, 4), n_out=st.integers(1, 4), seed=seeds)
def test_linear_and_rms_norm(lead, n_in, n_out, seed):
    # Our weight is (in, out), as the paper writes x W; torch's is its transpose.
    agree(F.linear, lambda x, W, b: TF.linear(x, W.T, b), normal(seed, lead + (n_in,)),
          normal(seed + 1, (n_in, n_out)), normal(seed + 2, (n_out,)), seed=seed)
    agree(lambda x, w: F.rms_norm(x, w, eps=1e-6),
          lambda x, w: TF.rms_norm(x, (n_in,), w, eps=1e-6),
          normal(seed, lead + (n_in,)), normal(seed + 1, (n_in,)), seed=seed)
