"""Class weights and pos_weight in the losses (issue 30): gradients against central
differences (float64, hypothesis shapes) and values against the defining sums. PyTorch's
answers are compared in test_torch_oracle.py.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import check, leaf, normal, seeds, shapes

import microtensor as mt
import microtensor.functional as F


def targets(rng, lead, classes, ignored=True):
    target = rng.integers(0, classes, lead)
    if ignored:
        target = np.where(rng.random(lead) < 0.2, -100, target)
    if not (target != -100).any():
        target = np.zeros(lead, np.int64)             # "mean" needs a counted position
    return target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(lead=shapes(max_dims=2), classes=st.integers(1, 4), seed=seeds)
def test_nll_loss_with_class_weights(reduction, lead, classes, seed):
    rng = np.random.default_rng(seed)
    target, weight = targets(rng, lead, classes), rng.uniform(0.5, 2.0, classes)
    log_probs = normal(seed, lead + (classes,))
    check(lambda x: F.nll_loss(x, target, weight=weight, reduction=reduction), log_probs)
    counted = target != -100
    safe = np.where(counted, target, 0)
    factors = weight[safe] * counted
    losses = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0] * factors
    expected = {"none": losses, "sum": losses.sum(), "mean": losses.sum() / factors.sum()}
    np.testing.assert_allclose(F.nll_loss(mt.tensor(log_probs), target, weight=weight,
                                          reduction=reduction).data,
                               expected[reduction], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(rows=st.integers(1, 4), classes=st.integers(1, 4), seed=seeds,
       smoothing=st.sampled_from([0.0, 0.1, 0.4]))
def test_cross_entropy_with_class_weights(reduction, rows, classes, smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = normal(seed, (rows, classes)) * 2
    target, weight = targets(rng, (rows,), classes), rng.uniform(0.5, 2.0, classes)
    check(lambda x: F.cross_entropy(x, target, weight=weight, label_smoothing=smoothing,
                                    reduction=reduction), logits)
    probs = rng.dirichlet(np.ones(classes), rows)
    check(lambda x, q: F.cross_entropy(x, q, weight=weight, label_smoothing=smoothing,
                                       reduction=reduction), logits, probs)
    # All-ones weights are no weights at all (the fused path), values and gradients.
    for given_target in (target, probs):
        weighted, plain = leaf(logits), leaf(logits)
        one = F.cross_entropy(weighted, given_target, weight=np.ones(classes),
                              label_smoothing=smoothing, reduction=reduction)
        other = F.cross_entropy(plain, given_target, label_smoothing=smoothing,
                                reduction=reduction)
        np.testing.assert_allclose(one.data, other.data, rtol=1e-12)
        one.sum().backward()
        other.sum().backward()
        np.testing.assert_allclose(weighted.grad, plain.grad, rtol=1e-10, atol=1e-14)


def test_cross_entropy_weight_by_hand():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))    # rows of log-probs
    weight = np.array([1.0, 2.0, 3.0])
    loss = F.cross_entropy(mt.tensor(logits), np.array([0, 2]), weight=weight)
    expected = (-1.0 * np.log(0.5) - 3.0 * np.log(0.6)) / (1.0 + 3.0)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(shape=shapes(min_dims=1), seed=seeds)
def test_binary_cross_entropy_with_logits_pos_weight_and_weight(reduction, shape, seed):
    rng = np.random.default_rng(seed)
    logits, target = normal(seed, shape) * 3, rng.uniform(0, 1, shape)
    pos_weight = rng.uniform(0.5, 3.0, shape[-1:])             # one per class (last axis)
    weight = rng.uniform(0.5, 2.0, shape)
    check(lambda x, t, w, p: F.binary_cross_entropy_with_logits(
        x, t, weight=w, pos_weight=p, reduction=reduction), logits, target, weight, pos_weight)
    log_sigmoid = -np.logaddexp(0, -logits)
    losses = -weight * (pos_weight * target * log_sigmoid
                        + (1 - target) * np.log1p(-np.exp(log_sigmoid)))
    expected = {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(mt.tensor(logits), target, weight, pos_weight,
                                           reduction=reduction).data,
        expected, rtol=1e-9, atol=1e-12)


def test_pos_weight_one_is_no_pos_weight_and_stays_stable():
    logits = leaf([1000.0, -1000.0, 0.5])
    target = np.array([0.0, 1.0, 0.3])
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=np.ones(3))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(logits.grad).all()
    plain = F.binary_cross_entropy_with_logits(mt.tensor(logits.data), target)
    np.testing.assert_allclose(loss.item(), plain.item(), rtol=1e-12)
