"""Bad input to the core gets a clear error: it names the function, shows the shapes,
dtypes or values involved and, where useful, the fix. Never a raw NumPy traceback."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F


def test_matmul_mismatched_shapes_names_both():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) do not match"):
        mt.randn(2, 3) @ mt.randn(4, 5)
    with pytest.raises(ValueError, match=r"matmul: .*\(3,\).*\(4,\)"):
        mt.randn(3) @ mt.randn(4)


def test_matmul_batch_axes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"matmul: .*batch axes \(2,\) and \(3,\)"):
        mt.randn(2, 3, 4) @ mt.randn(3, 4, 5)


def test_matmul_of_a_0d_operand():
    with pytest.raises(ValueError, match=r"matmul: operands must have at least 1 dim.*Use \*"):
        mt.tensor(2.0) @ mt.randn(2)


@pytest.mark.parametrize("op, combine", [
    ("add", lambda a, b: a + b), ("mul", lambda a, b: a * b), ("sub", lambda a, b: a - b),
    ("div", lambda a, b: a / b), ("maximum", mt.maximum),
])
def test_broadcast_mismatch_names_op_and_shapes(op, combine):
    with pytest.raises(ValueError, match=rf"{op}: shapes float32 \(2, 3\) and float32 \(4,\) "
                                         r"cannot be broadcast together"):
        combine(mt.randn(2, 3), mt.randn(4))


def test_backward_on_non_scalar_without_grad():
    y = mt.randn(2, 3, requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"backward: .*one element, got shape \(2, 3\).*"
                                           r"\.sum\(\)"):
        y.backward()


def test_backward_with_grad_of_wrong_shape():
    y = mt.randn(2, 3, requires_grad=True) * 2.0
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\) but the tensor "
                                         r"has shape \(2, 3\)"):
        y.backward(np.ones(3))


def test_backward_on_tensor_without_graph():
    with pytest.raises(RuntimeError, match="backward: this tensor does not require grad"):
        mt.randn(3).sum().backward()


def test_second_backward_through_freed_graph():
    y = (mt.randn(3, requires_grad=True).exp()).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"second time.*'sum'.*retain_graph=True"):
        y.backward()


def test_requires_grad_on_int_tensor():
    with pytest.raises(TypeError, match=r"requires_grad: only floating-point tensors .* "
                                        r"got dtype int64.*dtype=np.float32"):
        mt.tensor([1, 2], requires_grad=True)


def test_reshape_to_wrong_size():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) "
                                         r"\(6 elements\) into \(4, 2\)"):
        mt.randn(2, 3).reshape(4, 2)


AXIS_OUT_OF_RANGE = {
    "sum": lambda x: x.sum(axis=2),
    "mean": lambda x: x.mean(axis=(0, -3)),
    "max": lambda x: x.max(axis=5),
    "min": lambda x: x.min(axis=-3),
    "var": lambda x: x.var(axis=2),
    "softmax": lambda x: x.softmax(axis=2),
    "log_softmax": lambda x: x.log_softmax(axis=-3),
    "swapaxes": lambda x: x.swapaxes(0, 2),
    "permute": lambda x: x.permute(0, 2),
    "squeeze": lambda x: x.squeeze(3),
    "unsqueeze": lambda x: x.unsqueeze(4),
    "flatten": lambda x: x.flatten(0, 3),
    "split": lambda x: x.split(1, axis=-3),
    "concat": lambda x: mt.concat([x, x], axis=2),
    "stack": lambda x: mt.stack([x, x], axis=4),
}


@pytest.mark.parametrize("name", AXIS_OUT_OF_RANGE)
def test_axis_out_of_range(name):
    with pytest.raises(IndexError, match=rf"^{name}: axis -?\d is out of range for a tensor "
                                         r"with (shape|2 dim)"):
        AXIS_OUT_OF_RANGE[name](mt.randn(2, 3))


def test_permute_needs_a_permutation():
    with pytest.raises(ValueError, match=r"permute: axes \(0, 0\) are not a permutation"):
        mt.randn(2, 3).permute(0, 0)


def test_squeeze_of_an_axis_not_of_size_one():
    with pytest.raises(ValueError, match=r"squeeze: axis 1 has size != 1 in shape \(2, 3\)"):
        mt.randn(2, 3).squeeze(1)


def test_split_sizes_that_do_not_add_up():
    with pytest.raises(ValueError, match=r"split: sizes \[1, 1\] do not add up to 3"):
        mt.randn(2, 3).split([1, 1], axis=1)
    with pytest.raises(ValueError, match="split: the piece size must be positive"):
        mt.randn(2, 3).split(0)


def test_concat_and_stack_shape_mismatch():
    with pytest.raises(ValueError, match=r"concat: shapes \[\(2, 3\), \(2, 4\)\] must match "
                                         r"except along axis 0"):
        mt.concat([mt.randn(2, 3), mt.randn(2, 4)])
    with pytest.raises(ValueError, match=r"stack: all tensors must have the same shape"):
        mt.stack([mt.randn(2, 3), mt.randn(3, 2)])


def test_getitem_index_out_of_bounds():
    with pytest.raises(IndexError, match=r"getitem: index 5 is out of bounds.*float32 \(3,\)"):
        mt.randn(3)[5]


def test_cross_entropy_target_out_of_range():
    with pytest.raises(IndexError, match=r"cross_entropy: target id 3 is out of range for 3 "
                                         r"classes.*\[0, 2\].*ignore_index \(-100\)"):
        F.cross_entropy(mt.randn(2, 3), np.array([0, 3]))
    with pytest.raises(IndexError, match="target id -2 is out of range"):
        F.cross_entropy(mt.randn(2, 3), np.array([-2, 1]))


def test_cross_entropy_target_wrong_dtype():
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be integer class ids, "
                                        r"got float32 \(2,\).*astype"):
        F.cross_entropy(mt.randn(2, 3), mt.tensor([0.0, 1.0]))


def test_cross_entropy_target_wrong_shape():
    with pytest.raises(ValueError, match=r"cross_entropy: logits \(2, 3\) need targets of "
                                         r"shape \(2,\).*got \(2, 1\)"):
        F.cross_entropy(mt.randn(2, 3), np.array([[0], [1]]))
    with pytest.raises(ValueError, match="cross_entropy: logits must have a class axis"):
        F.cross_entropy(mt.tensor(1.0), 0)


def test_cross_entropy_unknown_reduction():
    with pytest.raises(ValueError, match="cross_entropy: reduction must be 'mean', 'sum' or "
                                         "'none', got 'avg'"):
        F.cross_entropy(mt.randn(2, 3), np.array([0, 1]), reduction="avg")


def test_embedding_id_out_of_range():
    with pytest.raises(IndexError, match=r"embedding: id 7 is out of range for a table of 5 "
                                         r"rows.*\[0, 4\]"):
        F.embedding(np.array([1, 7]), mt.randn(5, 2))


def test_embedding_ids_not_integers():
    with pytest.raises(TypeError, match=r"embedding: ids must be integers, got float32"):
        F.embedding(mt.tensor([0.0, 1.0]), mt.randn(5, 2))


@pytest.mark.parametrize("call", [
    lambda x, mask: mt.where(mask, x, 0.0),
    lambda x, mask: x.masked_fill(mask, 0.0),
])
def test_mask_not_boolean(call):
    with pytest.raises(TypeError, match=r"(where|masked_fill): the condition/mask must be a "
                                        r"boolean tensor or array, got float32 \(2, 3\)"):
        call(mt.randn(2, 3), mt.ones(2, 3))


def test_layer_norm_weight_of_wrong_shape():
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(4,\) .*must have "
                                         r"shape \(3,\)"):
        F.layer_norm(mt.randn(2, 3), mt.ones(4))


def test_var_with_too_few_elements():
    with pytest.raises(ValueError, match=r"var: needs more than 1 element.*correction=0"):
        mt.randn(1, 3).var(axis=0)


def test_dropout_probability_out_of_range():
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\), got 1.0"):
        F.dropout(mt.randn(3), p=1.0)


def test_clip_without_bounds():
    with pytest.raises(ValueError, match="clip: give at least one of min and max"):
        mt.randn(3).clip()


def test_tensor_from_non_numeric_data():
    for data in (["a", "b"], [[1.0, 2.0], [3.0]]):
        with pytest.raises(TypeError, match="tensor: cannot make a tensor from list data"):
            mt.tensor(data)


def test_truth_value_of_a_multi_element_tensor():
    with pytest.raises(ValueError, match=r"bool: the truth value of a tensor of shape \(3,\) "
                                         r"is ambiguous"):
        bool(mt.randn(3))


def test_item_of_a_multi_element_tensor():
    with pytest.raises(ValueError, match=r"item: only a one-element tensor .* shape \(2,\)"):
        mt.randn(2).item()


def test_iterating_a_0d_tensor():
    with pytest.raises(TypeError, match="iter: cannot iterate over a 0-d tensor"):
        list(mt.tensor(1.0))


def test_hook_on_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match="register_hook: this tensor does not require grad"):
        mt.randn(3).register_hook(lambda g: g)


def test_op_called_with_too_many_arguments():
    with pytest.raises(TypeError, match=r"softmax: takes 2 arguments, got 3"):
        mt.softmax(mt.randn(3), -1, 5)


def test_gradcheck_reports_the_worst_element():
    def wrong_square(x):
        # Worth 0.5 x^2 (derivative x), but detach hides one term: backward says 1.5 x.
        return x * x - (x.detach() * x) * 0.5
    x = mt.tensor([1.0, 3.0], dtype=np.float64, requires_grad=True)
    with pytest.raises(mt.GradcheckError, match=r"gradcheck: gradient of input 0 \(shape "
                                                r"\(2,\)\) is wrong at index \(1,\)"):
        mt.gradcheck(wrong_square, [x])


@pytest.mark.parametrize("layout", ["transposed", "every other column"])
def test_gradcheck_checks_a_non_contiguous_input(layout):
    """A transposed or strided input keeps its strides in gradcheck's float64 copy; each
    element is nudged where it is, so a wrong backward is caught there too (nudging a
    flattened copy of it once left the input as it was and every difference 0)."""
    def wrong_square(x):
        return x * x - (x.detach() * x) * 0.5
    base = np.random.default_rng(0).standard_normal((3, 8))
    data = base.T if layout == "transposed" else base[:, ::2]
    x = mt.from_numpy(data).requires_grad_()
    assert not x.data.flags["C_CONTIGUOUS"]
    with pytest.raises(mt.GradcheckError, match=r"gradient of input 0 .* is wrong"):
        mt.gradcheck(wrong_square, [x])
    assert mt.gradcheck(lambda x: (x * x).sum(axis=0), [x])


def test_expand_to_an_incompatible_shape():
    for shape in [(4, 4), (3,), (-1, 3, 1)]:
        with pytest.raises(ValueError, match=r"expand: cannot expand a tensor of shape \(3, 1\) "
                                             r"to .*Only axes of size 1 can grow"):
            mt.randn(3, 1).expand(*shape)


def test_operand_of_an_unsupported_type():
    with pytest.raises(TypeError, match=r"add: .*\(inputs: float32 \(3,\), None\)"):
        mt.randn(3) + None
    with pytest.raises(TypeError, match=r"mul: .*\(inputs: float32 \(3,\), <U1 \(\)\)"):
        mt.randn(3) * "a"


def test_linear_with_a_transposed_weight_says_our_weight_is_in_by_out():
    with pytest.raises(ValueError, match=r"linear: input \(2, 3\) and weight \(5, 3\).*"
                                         r"transpose of PyTorch"):
        F.linear(mt.randn(2, 3), mt.randn(5, 3))
    with pytest.raises(ValueError, match=r"linear: bias has shape \(3,\), expected \(5,\)"):
        F.linear(mt.randn(2, 3), mt.randn(3, 5), mt.randn(3))
