"""Errors both worlds catch: a refused value or shape is a ValueError (NumPy's habit) and a
RuntimeError (PyTorch's), a refused index an IndexError and a RuntimeError, so code
written for either library catches ours. The oracle test checks that PyTorch itself
raises a RuntimeError (or the class we also are) for the same refusals."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F

# The refusals an op suite written for PyTorch expects as RuntimeError, each written once
# for a module `m` that is microtensor or torch.
REFUSALS = {
    "matmul": lambda m: m.zeros((2, 3)) @ m.zeros((4, 5)),
    "permute": lambda m: m.zeros((2, 3)).permute(0, 0),
    "reshape": lambda m: m.zeros((2, 3)).reshape(4, 2),
    "clip": lambda m: m.zeros(3).clip(),
    "flip": lambda m: m.zeros((2, 3)).flip((0, 0)),
    "gather": lambda m: m.zeros((2, 3)).gather(1, m.tensor([[0], [5]])),
    "einsum": lambda m: m.einsum("ij,jk->ik", m.zeros((2, 3)), m.zeros((4, 5))),
}
INDEX_REFUSALS = {"gather"}   # an index out of range: IndexError in NumPy's world


@pytest.mark.parametrize("name", REFUSALS)
def test_each_refusal_is_caught_as_pytorch_code_and_as_numpy_code_catch_it(name):
    with pytest.raises(RuntimeError) as as_pytorch:
        REFUSALS[name](mt)
    numpy_kind = IndexError if name in INDEX_REFUSALS else ValueError
    with pytest.raises(numpy_kind) as as_numpy:
        REFUSALS[name](mt)
    expected = mt.InvalidIndex if name in INDEX_REFUSALS else mt.InvalidValue
    assert type(as_pytorch.value) is type(as_numpy.value) is expected
    assert str(as_pytorch.value).startswith(f"{name}: ")     # our wording, unchanged


@pytest.mark.parametrize("name", REFUSALS)
def test_pytorch_raises_a_class_ours_also_is(name):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception) as theirs:
        REFUSALS[name](torch)
    with pytest.raises(Exception) as ours:
        REFUSALS[name](mt)
    assert isinstance(ours.value, type(theirs.value)), (type(theirs.value), type(ours.value))


def test_a_reworded_numpy_error_and_a_bad_axis_are_both_worlds_classes_too():
    # An error NumPy raises inside an op is reworded by `primitive` into the same classes.
    with pytest.raises(RuntimeError, match=r"^add: shapes float32 \(2, 3\) and float32 "
                                           r"\(4,\) cannot be broadcast"):
        mt.zeros((2, 3)) + mt.zeros(4)
    with pytest.raises(IndexError) as bad_axis:
        mt.zeros((2, 3)).sum(axis=5)
    assert isinstance(bad_axis.value, RuntimeError)
    with pytest.raises(ValueError) as loss:
        F.cross_entropy(mt.zeros((4, 5)), np.array([0, 1, 2]))
    assert isinstance(loss.value, RuntimeError)


def test_a_wrong_type_stays_a_type_error_only():
    with pytest.raises(TypeError) as wrong_type:
        mt.nn.fast_form(mt.nn.Linear(2, 2))          # the class was meant, not an instance
    assert not isinstance(wrong_type.value, RuntimeError)
