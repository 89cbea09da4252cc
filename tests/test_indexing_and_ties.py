"""Indexing in every form NumPy accepts, and ties in maximum/minimum.

The gradient of `x[index]` is the number of times each element was picked. That count is
computed here independently, by applying the same index to an array of element ids and
counting, so every index form (tuples, nested lists, NumPy integer scalars, boolean
arrays, slices, None, Ellipsis, Tensors) is checked against NumPy's own reading of it.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import normal, seeds

import microtensor as mt


def picks(shape, index):
    """How many times x[index] uses each element of an x of `shape` (NumPy's reading)."""
    ids = np.arange(int(np.prod(shape))).reshape(shape)
    chosen = ids[index]
    return np.bincount(np.ravel(chosen), minlength=ids.size).reshape(shape).astype(float)


def grad_of_sum(shape, index):
    x = mt.tensor(np.ones(shape), requires_grad=True)
    x[index].sum().backward()
    return x.grad


def test_repeated_rows_given_as_a_tuple_count_twice():
    # x[(0, 0), :] is x[[0, 0], :]: row 0 is used twice (PyTorch and NumPy agree).
    np.testing.assert_array_equal(grad_of_sum((3, 2), ((0, 0), slice(None))),
                                  [[2, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(grad_of_sum((3, 2), ([0, 0], slice(None))),
                                  [[2, 2], [0, 0], [0, 0]])


INDEX_FORMS = {
    "tuple in a tuple": lambda n: ((0, n - 1, 0), slice(None)),
    "nested lists": lambda n: [[0, 0], [n - 1, 0]],
    "list of lists in a tuple": lambda n: ([[0, 0], [1 % n, 0]], Ellipsis),
    "numpy integer scalar": lambda n: (np.int64(n - 1), slice(None)),
    "numpy integer scalars in a list": lambda n: [np.int64(0), np.int32(0)],
    "integer array with None": lambda n: (None, np.array([0, 0, n - 1]), Ellipsis),
    "two arrays": lambda n: (np.array([0, 0]), np.array([1, 1])),
    "array then slice then None": lambda n: (np.array([[0], [0]]), slice(0, 2), None),
    "boolean array": lambda n: np.arange(n) % 2 == 0,
    "boolean list with a slice": lambda n: ([True] + [False] * (n - 1), slice(1, None)),
    "Tensor with repeats": lambda n: mt.tensor([0, 0, 0]),
    "Tensors in a tuple": lambda n: (mt.tensor([0, n - 1]), mt.tensor([1, 1])),
    "tuple with Ellipsis": lambda n: (Ellipsis, (1, 1)),
    "plain integers": lambda n: (0, 1),
}


@pytest.mark.parametrize("form", INDEX_FORMS)
@given(rows=st.integers(2, 4), seed=seeds)
def test_every_index_form_counts_each_use(form, rows, seed):
    shape = (rows, 3, 2)
    index = INDEX_FORMS[form](rows)
    numpy_index = tuple(i.data if isinstance(i, mt.Tensor) else i for i in index) \
        if isinstance(index, tuple) else (index.data if isinstance(index, mt.Tensor) else index)
    expected = picks(shape, numpy_index if not isinstance(numpy_index, list)
                     else np.asarray(numpy_index))
    np.testing.assert_array_equal(grad_of_sum(shape, index), expected)
    x = mt.tensor(normal(seed, shape), requires_grad=True)
    assert mt.gradcheck(lambda x: x[index], [x])


@pytest.mark.parametrize("index", [
    [[0, 1], 1],                       # a list inside a list of another length
    ([[0, 1], [1]], slice(None)),      # ragged inside a tuple
    [[0], [1, 0]],
])
def test_a_ragged_index_list_gets_our_error(index):
    x = mt.tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(IndexError, match=r"^getitem: .*ragged.*same length") as info:
        x[index]
    assert getattr(info.value, "microtensor", False)


@pytest.mark.parametrize("op, rule_at_tie", [(mt.maximum, 0.5), (mt.minimum, 0.5)])
def test_binary_max_min_split_ties_evenly(op, rule_at_tie):
    # As PyTorch does, and as our max/min reductions do: half to each operand.
    a = mt.tensor([3.0, 1.0, 5.0], requires_grad=True)
    b = mt.tensor([3.0, 2.0, 4.0], requires_grad=True)
    op(a, b).sum().backward()
    winner_a = [rule_at_tie, 0.0, 1.0] if op is mt.maximum else [rule_at_tie, 1.0, 0.0]
    np.testing.assert_array_equal(a.grad, winner_a)
    np.testing.assert_array_equal(b.grad, 1 - np.array(winner_a))


def test_maximum_with_a_number_and_relu_at_zero():
    a = mt.tensor([3.0, 0.0, -1.0], requires_grad=True)
    mt.maximum(a, 3.0).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 0.0, 0.0])
    a.grad = None
    mt.maximum(a, 0.0).sum().backward()      # maximum(x, 0) as a ReLU: 0.5 at 0
    np.testing.assert_array_equal(a.grad, [1.0, 0.5, 0.0])
    b = mt.tensor([[2.0, 2.0]], requires_grad=True)   # broadcast: shares still sum to g
    c = mt.tensor([[2.0], [1.0]], requires_grad=True)
    mt.minimum(b, c).sum().backward()
    np.testing.assert_array_equal(b.grad, [[0.5, 0.5]])
    np.testing.assert_array_equal(c.grad, [[1.0], [2.0]])
