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


# ----------------------------------------------------------------- class_axis (issue 30)
# class_axis=1 reads PyTorch's (N, C, d1, ...) layout: the class axis is moved last and
# the same loss taken. PyTorch's answers on these arrays are in test_torch_oracle.py;
# these hold without torch.

def class_first_case(data, spatial_dims):
    """(logits (N, C, d1, ...), class ids (N, d1, ...) with some ignored, weight (C,))."""
    n, classes = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    spatial = data.draw(shapes(min_dims=spatial_dims, max_dims=spatial_dims))
    seed = data.draw(seeds)
    rng = np.random.default_rng(seed)
    logits = normal(seed, (n, classes) + spatial) * 2
    return logits, targets(rng, (n,) + spatial, classes), rng.uniform(0.5, 2.0, classes)


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_class_axis_1_gradients(spatial_dims, reduction, data, smoothing, weighted):
    logits, target, weight = class_first_case(data, spatial_dims)
    weight = weight if weighted else None
    check(lambda x: F.cross_entropy(x, target, weight=weight, label_smoothing=smoothing,
                                    reduction=reduction, class_axis=1), logits)
    # Contiguous: gradcheck perturbs its inputs through a flat view of their copy.
    probs = np.ascontiguousarray(np.moveaxis(np.random.default_rng(0).dirichlet(
        np.ones(logits.shape[1]), target.shape), -1, 1))           # (N, C, d1, ...)
    check(lambda x, q: F.cross_entropy(x, q, weight=weight, label_smoothing=smoothing,
                                       reduction=reduction, class_axis=1), logits, probs)
    check(lambda x: F.nll_loss(x, target, weight=weight, reduction=reduction,
                               class_axis=1), logits)


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), smoothing=st.sampled_from([0.0, 0.1]), weighted=st.booleans())
def test_class_axis_1_equals_the_class_axis_moved_last(spatial_dims, reduction, data,
                                                       smoothing, weighted):
    logits, target, weight = class_first_case(data, spatial_dims)
    options = {"weight": weight if weighted else None, "reduction": reduction}
    probs = np.random.default_rng(1).dirichlet(np.ones(logits.shape[1]), target.shape)
    for loss, given_target, extra in (
            (F.cross_entropy, target, {"label_smoothing": smoothing, "ignore_index": -100}),
            (F.cross_entropy, probs, {"label_smoothing": smoothing}),
            (F.nll_loss, target, {"ignore_index": -100})):
        class_first, class_last = leaf(logits), leaf(np.moveaxis(logits, 1, -1))
        first_target = np.moveaxis(given_target, -1, 1) if given_target is probs \
            else given_target
        ours = loss(class_first, first_target, class_axis=1, **options, **extra)
        moved = loss(class_last, given_target, **options, **extra)
        np.testing.assert_allclose(ours.data, moved.data, rtol=1e-12, atol=1e-14)
        ours.sum().backward()
        moved.sum().backward()
        np.testing.assert_allclose(class_first.grad, np.moveaxis(class_last.grad, -1, 1),
                                   rtol=1e-10, atol=1e-14)


def test_class_axis_is_explicit_where_shapes_fit_both_layouts():
    # (N, C, d1) with C == d1: ids (N, d1) fit both layouts. Nothing is guessed: the
    # default takes the last axis, class_axis=1 the second, and they differ.
    logits = normal(3, (2, 3, 3))
    target = np.array([[0, 1, 2], [2, 2, 0]])
    last = F.cross_entropy(mt.tensor(logits), target, reduction="none")
    second = F.cross_entropy(mt.tensor(logits), target, reduction="none", class_axis=1)
    np.testing.assert_allclose(second.data, F.cross_entropy(
        mt.tensor(np.moveaxis(logits, 1, -1)), target, reduction="none").data)
    assert not np.allclose(last.data, second.data)
    # class_axis=-1 and class_axis=2 name the same axis: no permute, the same node.
    assert F.cross_entropy(mt.tensor(logits), target, class_axis=2).item() == \
        F.cross_entropy(mt.tensor(logits), target).item()


@pytest.mark.parametrize("call, kind, message", [
    (lambda x: F.cross_entropy(x, np.zeros((2, 5), np.int64)), ValueError,
     (r"cross_entropy: logits \(2, 3, 5\) need targets of shape \(2, 3\) .*got \(2, 5\), "
     r"which fits the class axis at 1\. Pass class_axis=1 for PyTorch's \(N, C, \.\.\.\) "
     r"layout")),
    (lambda x: F.nll_loss(x, np.zeros((2, 5), np.int64)), ValueError,
     r"nll_loss: log-probabilities \(2, 3, 5\) need .*Pass class_axis=1"),
    (lambda x: F.cross_entropy(x, np.zeros((2, 3), np.int64), class_axis=1), ValueError,
     (r"cross_entropy: logits \(2, 3, 5\) with class_axis=1 need targets of shape \(2, 5\) "
     r"\(one class id per position\) or \(2, 3, 5\) \(class probabilities\), got \(2, 3\)\. "
     r"The targets fit the class axis last: pass class_axis=-1")),
    (lambda x: F.nll_loss(x, np.zeros((4,), np.int64), class_axis=1), ValueError,
     (r"nll_loss: log-probabilities \(2, 3, 5\) with class_axis=1 need targets of shape "
     r"\(2, 5\) \(one class id per position\), got \(4,\)\. Give one target per position")),
    (lambda x: F.cross_entropy(x, np.zeros((2, 5), np.int64), class_axis=3), IndexError,
     (r"cross_entropy: class_axis 3 is out of range for logits of shape \(2, 3, 5\)\. Use a "
     r"class_axis in \[-3, 2\]: 1 for PyTorch's \(N, C, \.\.\.\) layout")),
    (lambda x: F.nll_loss(x, np.zeros((2, 5), np.int64), class_axis=-4), IndexError,
     r"nll_loss: class_axis -4 is out of range"),
    (lambda x: F.cross_entropy(x, np.zeros((2, 5), np.int64), class_axis=1.0), TypeError,
     r"cross_entropy: class_axis must be an int, got float 1\.0"),
    (lambda x: F.cross_entropy(x, np.zeros((2, 5), np.int64), class_axis=True), TypeError,
     r"cross_entropy: class_axis must be an int, got bool True"),
])
def test_class_axis_errors_say_what_to_pass(call, kind, message):
    with pytest.raises(kind, match=message):
        call(mt.randn(2, 3, 5))


def test_nll_loss_with_no_classes_says_the_class_axis_is_empty():
    # (Found by the fuzzer: the fix read "targets must be in [0, -1]".)
    with pytest.raises(IndexError, match=r"nll_loss: target id 0 is out of range for 0 "
                                         r"classes\. The class axis is empty"):
        F.nll_loss(mt.zeros(2, 0), np.array([0, 0]))
