"""PyTorch as a second oracle: forward values and gradients of the fused and tricky ops
agree with torch (float64, CPU). Skipped when torch is not installed."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds, shapes

import microtensor as mt
import microtensor.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def both(array):
    """The same float64 data as a microtensor leaf and a torch leaf."""
    array = np.asarray(array, dtype=np.float64)
    return (mt.tensor(array, requires_grad=True),
            torch.tensor(array, dtype=torch.float64, requires_grad=True))


def agree(mt_fn, torch_fn, *arrays, seed=0):
    """Run both, pull the same random gradient back through each, compare everything."""
    pairs = [both(a) for a in arrays]
    ours = mt_fn(*(p[0] for p in pairs))
    theirs = torch_fn(*(p[1] for p in pairs))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    grad_out = np.random.default_rng(seed).standard_normal(ours.shape)
    ours.backward(grad_out)
    theirs.backward(torch.tensor(grad_out))
    for i, (mine, reference) in enumerate(pairs):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=1e-9, atol=1e-12,
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
