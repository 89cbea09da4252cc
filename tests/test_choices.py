"""The deliberate differences from PyTorch that remain (docs/reference.md, "Choices worth knowing"),
each pinned down, and the ones that were brought in line with PyTorch."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F


def test_softmax_of_a_0d_tensor_is_refused():
    # PyTorch returns 1 (softmax) and 0 (log_softmax): a 0-d tensor has no axis to
    # normalise over, and the answer would say nothing; it is almost always a missing axis.
    for fn in (F.softmax, F.log_softmax):
        with pytest.raises(IndexError, match=r"(log_)?softmax: axis -1 is out of range for a "
                                             r"tensor with shape \(\)\. This needs at least a 1-D"):
            fn(mt.tensor(2.0))


def test_squeeze_of_an_axis_that_is_not_1_raises_as_in_numpy():
    # PyTorch returns the tensor unchanged; NumPy (whose names we use) raises, which
    # catches a wrong axis instead of silently keeping the shape.
    with pytest.raises(ValueError, match=r"squeeze: axis 0 has size != 1 in shape \(2, 1\)"):
        mt.zeros(2, 1).squeeze(0)
    assert mt.zeros(2, 1).squeeze(1).shape == (2,)


def test_mean_and_var_with_nothing_to_average_raise_instead_of_nan():
    # PyTorch returns NaN; a NaN loss found many steps later is worse than an error here.
    with pytest.raises(ValueError, match=r"mean: mean over an empty axis"):
        mt.zeros(3, 0).mean(axis=1)
    with pytest.raises(ValueError, match=r"var: needs more than 1 element\(s\).*Pass "
                                         r"correction=0"):
        mt.zeros(3, 1).var(axis=1)
    assert mt.zeros(3, 1).var(axis=1, correction=0).shape == (3,)
    # cross_entropy over only ignored positions still gives NaN, as PyTorch: an all-padding
    # batch is legitimate data, not a mistake.
    assert np.isnan(F.cross_entropy(mt.zeros(2, 3), np.array([-100, -100])).item())
    # and so does the mean of a binary cross-entropy over no element (PyTorch: NaN too)
    assert np.isnan(F.binary_cross_entropy(mt.zeros(0), mt.zeros(0)).item())
    assert np.isnan(F.binary_cross_entropy_with_logits(mt.zeros(0), mt.zeros(0)).item())
    assert F.binary_cross_entropy_with_logits(mt.zeros(0), mt.zeros(0),
                                              reduction="sum").item() == 0


def test_fancy_indexing_places_axes_as_numpy_does():
    # Advanced indices separated by a slice put their axis first (NumPy); PyTorch puts it
    # where the first advanced index was. x[0, :, [0, 1]]: NumPy (2, 3), PyTorch (3, 2).
    x = mt.tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    picked = x[0, :, [0, 1]]
    assert picked.shape == (2, 3)
    np.testing.assert_array_equal(picked.data, x.data[0, :, [0, 1]])
    picked.sum().backward()
    assert x.grad.sum() == 6 and x.grad[0, :, :2].all() and not x.grad[1].any()


def test_gelu_defaults_to_the_tanh_form_and_repeat_means_tile():
    x = mt.tensor(np.linspace(-3, 3, 7))
    tanh_form = 0.5 * x.data * (1 + np.tanh(np.sqrt(2 / np.pi) * (x.data + 0.044715 * x.data ** 3)))
    np.testing.assert_allclose(mt.gelu(x).data, tanh_form)
    assert not np.allclose(mt.gelu(x, approximate="none").data, tanh_form)
    row = mt.tensor([1.0, 2.0])
    np.testing.assert_array_equal(row.repeat(2).data, [1, 2, 1, 2])          # PyTorch's repeat
    np.testing.assert_array_equal(row.repeat_interleave(2).data, [1, 1, 2, 2])  # NumPy's repeat


def test_class_axis_is_last_for_nll_loss_too():
    log_probs = F.log_softmax(mt.randn(2, 5, 3), axis=-1)                     # (B, T, C)
    assert F.nll_loss(log_probs, np.zeros((2, 5), np.int64), reduction="none").shape == (2, 5)


def test_now_as_pytorch_python_floats_with_integer_tensors_give_float32():
    ints = mt.tensor(np.array([1, 2, 3], np.int32))
    assert (0.7 ** ints).dtype == np.float32
    assert (ints / 2).dtype == np.float32 and (ints * 0.5).dtype == np.float32
    assert mt.sqrt(mt.arange(3)).dtype == np.float32
    assert (mt.tensor(np.arange(3.0)) * 0.5).dtype == np.float64      # float64 data stays
    # and full takes its dtype from the fill value
    assert mt.full((2, 2), 4).dtype == np.int64 and mt.full((2, 2), 4.0).dtype == np.float32


def test_now_as_pytorch_ties_split_in_maximum_and_minimum():
    a = mt.tensor([0.0], requires_grad=True)
    mt.maximum(a, 0.0).backward()
    assert a.grad[0] == 0.5
