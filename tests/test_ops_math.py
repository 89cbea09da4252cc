"""The elementwise math and activations of issue 30: gradients against central differences
(float64, hypothesis shapes, broadcasting where the op broadcasts) and values against NumPy
or the defining formula. PyTorch's answers are compared in test_torch_oracle.py.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from strategies import (
    away_from,
    broadcastable_pair,
    broadcastable_triple,
    check,
    leaf,
    normal,
    positive,
    seeds,
    shapes,
)

import microtensor as mt
import microtensor.functional as F
from microtensor.autograd import sum_to_shape


def inside(low, high):
    return lambda seed, shape: np.random.default_rng(seed).uniform(low, high, shape)


def off_the_steps(seed, shape):
    """Values whose fractional part is in [0.2, 0.4]: no floor/ceil/round/trunc step is
    within reach of a central difference."""
    rng = np.random.default_rng(seed)
    return rng.integers(-3, 3, shape) + rng.uniform(0.2, 0.4, shape)


# name -> (our function, data maker, the NumPy function it equals)
UNARY = {
    "tan": (mt.tan, inside(-1.2, 1.2), np.tan),
    "asin": (mt.asin, inside(-0.9, 0.9), np.arcsin),
    "acos": (mt.acos, inside(-0.9, 0.9), np.arccos),
    "atan": (mt.atan, normal, np.arctan),
    "sinh": (mt.sinh, normal, np.sinh),
    "cosh": (mt.cosh, normal, np.cosh),
    "asinh": (mt.asinh, normal, np.arcsinh),
    "acosh": (mt.acosh, inside(1.2, 3.0), np.arccosh),
    "atanh": (mt.atanh, inside(-0.9, 0.9), np.arctanh),
    "exp2": (mt.exp2, normal, np.exp2),
    "log2": (mt.log2, positive, np.log2),
    "floor": (mt.floor, off_the_steps, np.floor),
    "ceil": (mt.ceil, off_the_steps, np.ceil),
    "trunc": (mt.trunc, off_the_steps, np.trunc),
    "round": (mt.round, off_the_steps, np.round),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=shapes(), seed=seeds)
def test_unary_gradient_and_value(name, shape, seed):
    ours, make, reference = UNARY[name]
    x = make(seed, shape)
    check(ours, x)
    np.testing.assert_allclose(ours(mt.tensor(x)).data, reference(x), rtol=1e-12, atol=1e-15)
    assert getattr(mt.tensor(x), name)().shape == np.shape(x)      # the method too


def test_unary_derivatives_match_their_formulas():
    # The rules, written out once more: an independent check of each backward.
    x = np.linspace(-0.8, 0.8, 9)
    formulas = {mt.asin: 1 / np.sqrt(1 - x**2), mt.acos: -1 / np.sqrt(1 - x**2),
                mt.atan: 1 / (1 + x**2), mt.atanh: 1 / (1 - x**2), mt.tan: 1 / np.cos(x)**2,
                mt.sinh: np.cosh(x), mt.cosh: np.sinh(x), mt.asinh: 1 / np.sqrt(x**2 + 1),
                mt.exp2: np.exp2(x) * math.log(2)}
    for op, derivative in formulas.items():
        t = leaf(x)
        op(t).sum().backward()
        np.testing.assert_allclose(t.grad, derivative, rtol=1e-12, err_msg=op.__name__)
    t = leaf(x + 2)
    mt.acosh(t).sum().backward()
    np.testing.assert_allclose(t.grad, 1 / np.sqrt((x + 2) ** 2 - 1), rtol=1e-12)


def test_rounding_has_zero_gradient_and_keeps_integers():
    x = leaf([-1.5, -0.5, 0.5, 1.5, 2.5])
    for op in (mt.floor, mt.ceil, mt.trunc, mt.round):
        x.zero_grad()
        op(x).sum().backward()
        assert (x.grad == 0).all() and x.grad.shape == (5,)
    np.testing.assert_array_equal(mt.round(x).data, [-2, -0, 0, 2, 2])      # halves to even
    np.testing.assert_array_equal(mt.round(mt.tensor([1.2345, -2.5]), decimals=2).data,
                                  np.round([1.2345, -2.5], 2).astype(np.float32))
    ints = mt.tensor(np.array([1, -2], np.int32))
    for op in (mt.floor, mt.ceil, mt.trunc, mt.round):
        assert op(ints).dtype == np.int32 and op(ints).tolist() == [1, -2]
    assert mt.floor(mt.tensor([0.5])).dtype == np.float32


def test_out_of_domain_gives_nan_as_numpy():
    with np.errstate(invalid="ignore", divide="ignore"):
        values = [mt.asin(mt.tensor([2.0])), mt.acosh(mt.tensor([0.5])),
                  mt.log2(mt.tensor([-1.0]))]
    assert all(np.isnan(v.item()) for v in values)
    with pytest.raises(FloatingPointError, match=r"asin produced nan in its forward pass"), \
            mt.detect_anomaly(), np.errstate(invalid="ignore"):
        mt.asin(mt.tensor([2.0]))


# ----------------------------------------------------------------- two and three operands

@given(pair=broadcastable_pair(), seed=seeds)
def test_copysign_gradient_and_value(pair, seed):
    a, b = away_from(seed, pair[0]), away_from(seed + 1, pair[1])
    check(mt.copysign, a, b)
    np.testing.assert_array_equal(mt.copysign(mt.tensor(a), mt.tensor(b)).data,
                                  np.copysign(a, b))
    # The magnitude of a, the sign of b: the gradient of a is sign(a) * sign(b), b gets 0.
    x, y = leaf(a), leaf(b)
    mt.copysign(x, y).sum().backward()
    expected = np.broadcast_to(np.sign(a) * np.sign(b), np.broadcast_shapes(*pair))
    np.testing.assert_array_equal(x.grad, sum_to_shape(expected, pair[0]))
    assert (y.grad == 0).all()


def test_copysign_at_zero_and_of_negative_zero():
    a = leaf([0.0, 2.0, 2.0])
    out = mt.copysign(a, np.array([-1.0, -0.0, 0.0]))
    np.testing.assert_array_equal(out.data, [-0.0, -2.0, 2.0])
    out.sum().backward()
    np.testing.assert_array_equal(a.grad, [0, -1, 1])       # 0 at a == 0, as PyTorch


@given(triple=broadcastable_triple(), seed=seeds)
def test_lerp_gradient_and_value(triple, seed):
    start, end, weight = (normal(seed + i, s) for i, s in enumerate(triple))
    check(mt.lerp, start, end, weight)
    np.testing.assert_allclose(mt.lerp(mt.tensor(start), mt.tensor(end), mt.tensor(weight)).data,
                               start + weight * (end - start), rtol=1e-12, atol=1e-12)
    check(lambda s, e: s.lerp(e, 0.3), start, end)               # a number weight


def test_lerp_ends_exactly():
    start, end = mt.tensor([0.1, -3.7]), mt.tensor([1e8, 0.3])
    np.testing.assert_array_equal(mt.lerp(start, end, 1.0).data, end.data)
    np.testing.assert_array_equal(mt.lerp(start, end, 0.0).data, start.data)


@given(pair=broadcastable_pair(), seed=seeds)
def test_isclose_is_numpys(pair, seed):
    a = normal(seed, pair[0])
    b = a + np.random.default_rng(seed).choice([0, 1e-9, 1e-3], np.shape(a))
    b = np.broadcast_to(b, np.broadcast_shapes(np.shape(b), pair[1])).copy()
    np.testing.assert_array_equal(mt.isclose(mt.tensor(a), mt.tensor(b)).data, np.isclose(a, b))
    assert not mt.isclose(leaf(a), b).requires_grad
    nan = mt.tensor([np.nan])
    assert not mt.isclose(nan, nan).item() and mt.isclose(nan, nan, equal_nan=True).item()


@pytest.mark.parametrize("shape_a, shape_b", [((3,), (3,)), ((2, 3), (3, 4)), ((3,), (3, 2)),
                                              ((2, 3), (3,)), ((1,), (1,))])
@given(seed=seeds)
def test_dot_gradient_and_value(shape_a, shape_b, seed):
    a, b = normal(seed, shape_a), normal(seed + 1, shape_b)
    check(mt.dot, a, b)
    np.testing.assert_allclose(mt.tensor(a).dot(mt.tensor(b)).data, np.dot(a, b), rtol=1e-12)


def test_invert_is_logical_not_on_booleans_and_bitwise_on_integers():
    mask = mt.tensor([True, False])
    assert (~mask).tolist() == [False, True] and (~mask).dtype == bool
    assert (~mt.tensor(np.array([0, 5], np.int64))).tolist() == [-1, -6]
    assert (~(mt.arange(3) > 0)).tolist() == [True, False, False]


# ----------------------------------------------------------------- activations

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name -> (our function, data maker, the defining formula)
ACTIVATIONS = {
    "relu6": (F.relu6, lambda s, shape: away_from(s, shape, (0.0, 6.0)) * 4,
              lambda x: np.minimum(np.maximum(x, 0), 6)),
    "hardtanh": (lambda x: F.hardtanh(x, min_val=-0.5, max_val=2.0),
                 lambda s, shape: away_from(s, shape, (-0.5, 2.0)), lambda x: np.clip(x, -0.5, 2)),
    "hardsigmoid": (F.hardsigmoid, lambda s, shape: away_from(s, shape, (-3.0, 3.0)) * 3,
                    lambda x: np.clip(x + 3, 0, 6) / 6),
    "hardswish": (F.hardswish, lambda s, shape: away_from(s, shape, (-3.0, 3.0)) * 3,
                  lambda x: x * np.clip(x + 3, 0, 6) / 6),
    "selu": (F.selu, lambda s, shape: away_from(s, shape) * 2,
             lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1))),
    "celu": (lambda x: F.celu(x, alpha=0.7), lambda s, shape: away_from(s, shape) * 2,
             lambda x: np.maximum(x, 0) + np.minimum(0, 0.7 * (np.exp(x / 0.7) - 1))),
    "mish": (F.mish, lambda s, shape: normal(s, shape) * 3,
             lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    "softsign": (F.softsign, lambda s, shape: normal(s, shape) * 3, lambda x: x / (1 + np.abs(x))),
    "logsigmoid": (F.logsigmoid, lambda s, shape: normal(s, shape) * 3,
                   lambda x: np.log(sigmoid(x))),
    "quick_gelu": (F.quick_gelu, lambda s, shape: normal(s, shape) * 3,
                   lambda x: x * sigmoid(1.702 * x)),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(shape=shapes(), seed=seeds)
def test_activation_gradient_and_value(name, shape, seed):
    ours, make, formula = ACTIVATIONS[name]
    x = make(seed, shape)
    check(ours, x)
    np.testing.assert_allclose(ours(mt.tensor(x)).data, formula(x), rtol=1e-10, atol=1e-12)


def test_piecewise_activations_at_their_corners_as_pytorch():
    # hardtanh and relu6 send no gradient at the bounds (clip sends it); hardswish takes
    # the outer pieces' slopes at -3 and 3.
    x = leaf([-1.0, 1.0, 0.0, 6.0, -3.0, 3.0])
    (F.hardtanh(x[:2]).sum() + F.relu6(x[2:4]).sum() + F.hardswish(x[4:]).sum()).backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 0, 0, 1])


def test_logsigmoid_and_softsign_do_not_overflow():
    big = mt.tensor([-800.0, 800.0], requires_grad=True)
    out = F.logsigmoid(big)
    np.testing.assert_allclose(out.data, [-800, 0])
    out.sum().backward()
    np.testing.assert_allclose(big.grad, [1, 0])
    assert np.isfinite(F.mish(big).data).all() and np.isfinite(F.softsign(big).data).all()


@pytest.mark.parametrize("module, function", [
    ("ReLU6", F.relu6), ("Hardsigmoid", F.hardsigmoid), ("Hardswish", F.hardswish),
    ("SELU", F.selu), ("Mish", F.mish), ("Softsign", F.softsign), ("LogSigmoid", F.logsigmoid),
])
def test_activation_modules_call_their_function(module, function):
    x = mt.tensor(np.linspace(-5, 5, 11))
    np.testing.assert_array_equal(getattr(mt.nn, module)()(x).data, function(x).data)


def test_activation_modules_with_settings():
    x = mt.tensor(np.linspace(-5, 5, 11))
    np.testing.assert_array_equal(mt.nn.Hardtanh(-2.0, 3.0)(x).data, np.clip(x.data, -2, 3))
    np.testing.assert_array_equal(mt.nn.CELU(0.5)(x).data, F.celu(x, 0.5).data)
    assert "alpha=0.5" in repr(mt.nn.CELU(0.5))
