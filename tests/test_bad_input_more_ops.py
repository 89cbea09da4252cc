"""Bad input to each op beyond the core set: one worded error (built by op_error) that
names the op, shows the shapes or values, and says the fix where there is one; never a
bare NumPy error.
"""
import re

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F

x23 = mt.randn(2, 3)
ids = np.array([0, 2])

CASES = [
    # reductions
    (lambda: x23.std(axis=2), IndexError, r"var: axis 2 is out of range for a tensor with 2 "),
    (lambda: mt.logsumexp(mt.zeros(2, 0), axis=1), ValueError,
     r"logsumexp: logsumexp over an empty axis .* \(2, 0\)\. Check for an empty sequence"),
    (lambda: x23.prod(axis=(0, 5)), IndexError, r"prod: axis 5 is out of range"),
    (lambda: x23.cumsum(axis=-3), IndexError, r"cumsum: axis -3 is out of range"),
    (lambda: x23.argmax(axis=(0, 1)), TypeError,
     r"argmax: axis must be None or one int, got \(0, 1\)\. .*reshape them into one"),
    (lambda: mt.argmin(mt.zeros(0)), ValueError, r"argmin: argmin of an empty tensor"),
    (lambda: mt.any(x23, axis=3), IndexError, r"any: axis 3 is out of range"),
    # shape
    (lambda: mt.pad(x23, (1,)), ValueError,
     (r"pad: pad \(1,\) must be integers in \(before, after\) pairs.*shape "
     r"\(2, 3\)\. E\.g\. \(1, 1\)")),
    (lambda: mt.pad(x23, (1, 1, 1, 1, 1, 1)), ValueError, r"pad: pad \(1, 1, 1, 1, 1, 1\)"),
    (lambda: mt.pad(x23, (1.5, 1)), ValueError, r"pad: pad \(1\.5, 1\) must be integers"),
    (lambda: mt.pad(x23, (-2, -2)), ValueError,
     r"pad: pad \(-2, -2\) crops more than the shape \(2, 3\) holds\. Negative sizes crop"),
    (lambda: mt.pad(x23, (1, 1), mode="wrap"), ValueError,
     r"pad: mode must be one of \('constant', 'reflect', 'replicate', 'circular'\), got 'wrap'"),
    (lambda: mt.pad(x23, (3, 0), mode="reflect"), ValueError,
     (r"pad: reflect padding \(3, 0\) is too wide for axis 1 of size 3 \(shape \(2, 3\)\)\. "
      r"Reflect pads must be smaller than the axis")),
    (lambda: mt.pad(x23, (4, 0), mode="circular"), ValueError,
     r"pad: circular padding \(4, 0\) is too wide .*can be at most the axis size"),
    (lambda: mt.pad(mt.zeros(2, 0), (1, 0), mode="replicate"), ValueError,
     r"pad: replicate padding \(1, 0\) is too wide for axis 1 of size 0.*non-empty axis"),
    (lambda: x23.repeat(2), ValueError,
     r"repeat: 1 repeat count\(s\) \(2,\) for a tensor with 2 axes \(shape \(2, 3\)\)"),
    (lambda: x23.unfold(1, 4, 1), ValueError,
     (r"unfold: a window of 4 does not fit in axis 1 of size 3 \(shape \(2, 3\)\)\. Use a "
      r"size of at most 3")),
    (lambda: x23.unfold(1, 2, 0), ValueError, r"unfold: step must be an integer >= 1, got 0"),
    (lambda: x23.unfold(2, 1, 1), IndexError, r"unfold: axis 2 is out of range"),
    (lambda: mt.zeros(()).unfold(0, 1, 1), ValueError, r"unfold: got a 0-d tensor"),
    (lambda: mt.diag(mt.zeros(2, 2, 2)), ValueError,
     r"diag: needs a vector or a matrix, got shape \(2, 2, 2\)\. For a batch of matrices"),
    (lambda: mt.diag(x23, diagonal=0.5), TypeError, r"diag: the diagonal offset must be an int"),
    (lambda: mt.diagonal(mt.zeros(3)), ValueError,
     r"diagonal: needs at least 2 axes, got shape \(3,\)\. For a vector, diag"),
    (lambda: x23.diagonal(0, 1, -1), ValueError,
     r"diagonal: axis1 and axis2 are both axis 1 \(shape \(2, 3\)\)\. Name two different"),
    (lambda: x23.diagonal(0, 0, 3), IndexError, r"diagonal: axis 3 is out of range"),
    (lambda: mt.meshgrid(x23, x23), ValueError,
     r"meshgrid: needs one or more 0-d or 1-D tensors, got shapes \[\(2, 3\), \(2, 3\)\]"),
    (lambda: mt.meshgrid(mt.zeros(2), indexing="ji"), ValueError,
     r"meshgrid: indexing must be 'ij' or 'xy', got 'ji'"),
    (lambda: mt.tril(mt.zeros(3)), ValueError, r"tril: needs at least 2 axes .* shape \(3,\)"),
    (lambda: x23.flip((0, 0)), ValueError, r"flip: axes \(0, 0\) name an axis twice"),
    (lambda: x23.flip(2), IndexError, r"flip: axis 2 is out of range"),
    (lambda: x23.roll((1, 2), axis=0), ValueError,
     r"roll: shifts \(1, 2\) and axis 0 must have the same length"),
    (lambda: x23.roll((1, 2)), ValueError, r"roll: several shifts \(1, 2\) need an axis"),
    (lambda: mt.tile(x23, (2, -1)), ValueError, r"tile: reps must be non-negative integers"),
    (lambda: x23.repeat_interleave(np.array([1, 2, 3]), axis=0), ValueError,
     r"repeat_interleave: 3 repeat counts for an axis of size 2 \(shape \(2, 3\)\)"),
    (lambda: x23.repeat_interleave(-1), ValueError, r"repeat_interleave: repeats must be"),
    (lambda: x23.chunk(0), ValueError, r"chunk: chunks must be a positive integer, got 0"),
    (lambda: x23.unflatten(1, (2, 2)), ValueError,
     (r"unflatten: sizes \(2, 2\) do not split axis 1 of size 3 \(shape \(2, 3\)\)\. Their "
     r"product")),
    (lambda: mt.einsum("ij,jk->ik", x23, x23), ValueError,
     (r"einsum: letter 'j' has size 3 in operand 0 but 2 in operand 1 \(subscripts "
     r"'ij,jk->ik', operand shapes \[\(2, 3\), \(2, 3\)\]\)\. A letter names one axis")),
    (lambda: mt.einsum("ij->i", x23, x23), ValueError,
     r"einsum: 1 operand subscript\(s\) for 2 operand\(s\)"),
    (lambda: mt.einsum("ijk->i", x23), ValueError,
     r"einsum: subscripts 'ijk' do not fit an operand with 2 axes"),
    (lambda: mt.einsum("ii->i", mt.zeros(2, 2)), ValueError,
     r"einsum: a letter repeated within one operand .*Take the diagonal"),
    (lambda: mt.einsum("ij->k", x23), ValueError, r"einsum: the output 'k' must name"),
    (lambda: mt.einsum(x23, x23), TypeError, (r"einsum: the first argument must be the "
                                             r"subscripts string")),
    # running ops
    (lambda: x23.cumprod(axis=5), IndexError, r"cumprod: axis 5 is out of range"),
    (lambda: x23.cumprod(axis=(0, 1)), TypeError, r"cumprod: axis must be None or one int"),
    (lambda: mt.logcumsumexp(x23, axis=None), TypeError,
     r"logcumsumexp: needs an axis \(an int\)\. Pass axis=-1"),
    (lambda: mt.cummax(x23, 2), IndexError, r"cummax: axis 2 is out of range for a tensor"),
    (lambda: mt.cummin(x23, None), TypeError, r"cummin: needs an axis \(an int\)"),
    # indexing and selection
    (lambda: mt.gather(x23, 1, np.array([[0], [3]])), IndexError,
     r"gather: index 3 is out of range for axis 1 of size 3\. Indices must be in \[0, 2\]"),
    (lambda: mt.gather(x23, 1, np.array([0, 1])), ValueError,
     r"gather: index \(2,\) must have as many axes as the input \(2, 3\)\. Unsqueeze"),
    (lambda: mt.gather(x23, 1, np.zeros((3, 1), int)), ValueError,
     r"gather: index \(3, 1\) is larger than the input \(2, 3\) along axis 0"),
    (lambda: mt.gather(x23, 1, np.zeros((2, 1))), TypeError,
     r"gather: index must hold integers, got float64 \(2, 1\)"),
    (lambda: mt.scatter_add(x23, 1, np.zeros((2, 2), int), mt.ones(2, 1)), ValueError,
     r"scatter_add: src \(2, 1\) must have the rank of index \(2, 2\)"),
    (lambda: mt.scatter_add(mt.zeros(3, dtype=np.float16), 0, np.array([0]), mt.ones(1)),
     TypeError, (r"scatter_add: src float32 \(1,\) must have the dtype of the tensor it is "
                 r"written into, float16 \(3,\)\. Cast it first")),
    (lambda: mt.scatter(x23, 1, np.zeros((2, 1), int), mt.ones(2, 1, dtype=np.float64)),
     TypeError, r"scatter: src float64 \(2, 1\) must have the dtype of the tensor"),
    (lambda: mt.scatter(x23, 1, np.array([[3], [0]]), 1.0), IndexError,
     r"scatter: index 3 is out of range for axis 1 of size 3"),
    (lambda: mt.scatter_reduce(x23, 1, np.zeros((2, 1), int), mt.ones(2, 1), "max"), ValueError,
     (r"scatter_reduce: reduce must be one of \('sum', 'prod', 'mean', 'amax', 'amin'\), got "
      r"'max'")),
    (lambda: mt.scatter_reduce(x23, 1, np.zeros((2, 2), int), mt.ones(2, 1), "sum"), ValueError,
     r"scatter_reduce: src \(2, 1\) must have the rank of index \(2, 2\)"),
    (lambda: mt.masked_select(x23, np.array([1, 0, 1])), TypeError,
     r"masked_select: mask must be boolean, got int64 \(3,\)"),
    (lambda: mt.masked_select(x23, np.array([True, False])), ValueError,
     r"masked_select: shapes .* cannot be broadcast"),
    (lambda: F.one_hot(np.array([0, 4]), 3), IndexError,
     r"one_hot: id 4 is out of range for 3 classes\. Ids must be in \[0, 2\]"),
    (lambda: F.one_hot(np.array([0.0])), TypeError, r"one_hot: ids must be integers"),
    (lambda: F.one_hot(np.array([], int)), ValueError,
     r"one_hot: cannot infer num_classes from no ids\. Pass num_classes"),
    (lambda: mt.sort(mt.tensor(1.0)), ValueError, r"sort: got a 0-d tensor.*x\.reshape\(1\)"),
    (lambda: x23.argsort(axis=4), IndexError, r"argsort: axis 4 is out of range"),
    (lambda: x23.topk(4), ValueError,
     r"topk: k must be an integer in \[0, 3\] \(the size of axis 1 in shape \(2, 3\)\), got 4"),
    # activations and math
    (lambda: F.leaky_relu(x23, negative_slope="a"), TypeError,
     r"leaky_relu: negative_slope must be a finite number"),
    (lambda: F.elu(x23, alpha=float("nan")), ValueError, r"elu: alpha must be a finite number"),
    (lambda: F.softplus(x23, beta=0), ValueError, r"softplus: beta must be a positive finite"),
    (lambda: F.gelu(x23, approximate="erf"), ValueError,
     r"gelu: approximate must be 'tanh' or 'none', got 'erf'"),
    (lambda: mt.sin(mt.tensor(["a"])), TypeError, r"tensor: cannot make a tensor"),
    (lambda: F.hardtanh(x23, min_val=2.0, max_val=1.0), ValueError,
     r"hardtanh: min_val 2\.0 is above max_val 1\.0"),
    (lambda: F.hardtanh(x23, min_val="a"), TypeError, r"hardtanh: min_val must be a finite"),
    (lambda: F.celu(x23, alpha=0.0), ValueError, r"celu: alpha must not be 0"),
    (lambda: ~x23, TypeError,
     (r"bitwise_not: ~ needs a boolean or integer tensor, got float32 \(2, 3\)\. For a mask, "
      r"compare first")),
    (lambda: mt.round(x23, decimals=0.5), TypeError, r"round: decimals must be an integer"),
    (lambda: mt.dot(mt.zeros(2, 2, 2), mt.zeros(2)), ValueError,
     r"dot: needs 1-D or 2-D operands, got shapes \(2, 2, 2\) and \(2,\)\. Use \* for a scalar"),
    (lambda: mt.dot(mt.zeros(2), mt.zeros(3)), ValueError,
     r"dot: vectors of different lengths \(2,\) and \(3,\)"),
    (lambda: mt.lerp(x23, mt.zeros(2), 0.5), ValueError,
     r"lerp: shapes float32 \(2, 3\) and float32 \(2,\) and float 0\.5 cannot be broadcast"),
    (lambda: mt.copysign(x23, mt.zeros(4)), ValueError, r"copysign: shapes .* cannot be broadcast"),
    (lambda: mt.isclose(x23, mt.zeros(4)), ValueError, r"isclose: shapes .* cannot be broadcast"),
    (lambda: mt.erf(x23 @ mt.ones(2)), ValueError, r"matmul: shapes \(2, 3\) and \(2,\)"),
    # losses
    (lambda: F.binary_cross_entropy(mt.tensor([0.5, 1.5]), np.array([1.0, 0.0])), ValueError,
     (r"binary_cross_entropy: probabilities must be in \[0, 1\], got values in \[0\.5, 1\.5\]\. "
     r"Apply sigmoid first")),
    (lambda: F.binary_cross_entropy(mt.tensor([0.5]), np.array([1.0, 0.0])), ValueError,
     r"binary_cross_entropy: probabilities \(1,\) and targets \(2,\) must have the same shape"),
    (lambda: F.binary_cross_entropy_with_logits(x23, np.array(["a"] * 6).reshape(2, 3)),
     TypeError, r"binary_cross_entropy_with_logits: targets must be numbers in \[0, 1\]"),
    (lambda: F.binary_cross_entropy_with_logits(x23, x23, reduction="avg"), ValueError,
     r"binary_cross_entropy_with_logits: reduction must be 'mean', 'sum' or 'none'"),
    (lambda: F.nll_loss(x23, np.array([0, 3])), IndexError,
     r"nll_loss: target id 3 is out of range for 3 classes"),
    (lambda: F.nll_loss(x23, np.array([0])), ValueError,
     r"nll_loss: log-probabilities \(2, 3\) need targets of shape \(2,\)"),
    (lambda: F.nll_loss(x23, ids, weight=np.ones(2)), ValueError,
     (r"nll_loss: weight must hold one number per class \(3,\), got float64 \(2,\)\. E\.g\. "
      r"weight=np\.ones\(C\)")),
    (lambda: F.cross_entropy(x23, ids, weight=np.ones((3, 1))), ValueError,
     r"cross_entropy: weight must hold one number per class \(3,\), got float64 \(3, 1\)"),
    (lambda: F.cross_entropy(x23, ids, weight=np.ones(3), label_smoothing=2.0), ValueError,
     r"cross_entropy: label_smoothing must be a number in \[0, 1\], got 2\.0"),
    (lambda: F.binary_cross_entropy_with_logits(x23, np.ones((2, 3)), pos_weight=np.ones(2)),
     ValueError, (r"binary_cross_entropy_with_logits: pos_weight \(2,\) must broadcast to the "
                  r"logits \(2, 3\)\. Give pos_weight one entry per class")),
    (lambda: F.cross_entropy(x23, ids, label_smoothing=1.5), ValueError,
     r"cross_entropy: label_smoothing must be a number in \[0, 1\], got 1\.5"),
    (lambda: F.cross_entropy(x23, np.ones((2, 2))), ValueError,
     (r"cross_entropy: logits \(2, 3\) need targets of shape \(2,\) .* or \(2, 3\) \(class "
     r"probabilities\), got \(2, 2\)")),
    # the core set's comparisons, casts and norms
    (lambda: mt.all(x23 > 0, axis=3), IndexError, r"all: axis 3 is out of range"),
    (lambda: mt.ops.astype(x23, dtype={}), TypeError,
     r"astype: cannot cast float32 \(2, 3\) to \[\]\. Use a bool, integer or float dtype"),
    (lambda: mt.ops.astype(x23, dtype="no such dtype"), TypeError,
     r"astype: data type 'no such dtype' not understood \(inputs: float32 \(2, 3\)\)"),
    (lambda: x23.transpose(0, 5), IndexError, r"swapaxes: axis 5 is out of range .*\(2, 3\)"),
    (lambda: x23.transpose(0, 1, 2), ValueError,
     r"permute: axes \(0, 1, 2\) are not a permutation of the 2 axes .*\(2, 3\)"),
    (lambda: x23.view(5), ValueError,
     r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(5,\)\. The "),
    (lambda: mt.triu(mt.zeros(3)), ValueError, r"triu: needs at least 2 axes .* shape \(3,\)"),
    (lambda: F.rms_norm(x23, mt.ones(4)), ValueError,
     r"rms_norm: weight has shape \(4,\) but the input \(2, 3\) .* must have shape \(3,\)"),
    (lambda: F.layer_norm_linear(x23, mt.ones(3), mt.zeros(3), mt.ones(4, 2)), ValueError,
     r"layer_norm_linear: input \(2, 3\) and weight \(4, 2\) do not match"),
    (lambda: F.layer_norm_linear(x23, None, None, mt.ones(3, 2)), TypeError,
     r"layer_norm_linear: norm_weight and norm_bias are both needed.*linear\(layer_norm"),
    (lambda: F.rms_norm(None), TypeError,
     r"rms_norm: expected a tensor of numbers to normalise, got None"),
    (lambda: mt.erf(None), TypeError,
     r"erf: needs numbers, got None\. Pass a float tensor, array or number"),
    (lambda: mt.erf(np.array([1 + 2j])), TypeError, r"erf: needs numbers, got complex128 \(1,\)"),
    # creation
    (lambda: mt.linspace(0, 1, -2), ValueError, r"linspace: num must be a non-negative integer"),
    (lambda: mt.linspace(0, 1, 3, dtype=bool), TypeError,
     r"linspace: dtype bool has no evenly spaced values\. Use a float or integer dtype"),
    (lambda: mt.empty(2, -1), ValueError, r"empty: sizes must be non-negative integers"),
    (lambda: mt.full_like(x23, "a"), TypeError, r"full_like: cannot fill a float32 with 'a'"),
    (lambda: mt.full((2,), "a"), TypeError, r"full: cannot fill a tensor with 'a'\. Give a number"),
]


@pytest.mark.parametrize("call, kind, message", CASES,
                         ids=[re.match(r"\w+", message).group() + f"-{i}"
                              for i, (_, _, message) in enumerate(CASES)])
def test_bad_input_gets_a_worded_error(call, kind, message):
    with pytest.raises(kind) as info:
        call()
    assert re.match(message, str(info.value)), str(info.value)
    assert getattr(info.value, "microtensor", False), "not worded by op_error"


# Every elementwise op, given an operand that holds no numbers, refuses it with a TypeError
# that names the op (a composed one names itself, not the primitive inside it) and shows
# the operand. The binary ones also name both shapes when they do not broadcast.
ELEMENTWISE = ["abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh",
               "erf", "exp", "exp2", "floor", "log", "log2", "neg", "round", "rsqrt",
               "sigmoid", "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "trunc",
               "isnan", "isinf", "isfinite", "relu", "silu", "softplus", "elu", "leaky_relu",
               "celu", "selu", "relu6", "hardtanh", "hardsigmoid", "hardswish", "mish",
               "softsign", "logsigmoid", "quick_gelu", "gelu"]


@pytest.mark.parametrize("operand", [None, np.array(["a", "b"])], ids=["None", "strings"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_ops_refuse_what_is_not_numbers(name, operand):
    with pytest.raises(TypeError) as info:
        getattr(mt.ops, name)(operand)
    assert getattr(info.value, "microtensor", False), f"not worded by op_error: {info.value}"
    assert str(info.value).startswith(f"{name}: "), str(info.value)
    assert ("None" if operand is None else "(2,)") in str(info.value), str(info.value)


BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "copysign", "equal",
          "not_equal", "less", "less_equal", "greater", "greater_equal", "isclose"]


@pytest.mark.parametrize("name", BINARY)
def test_binary_ops_name_both_shapes_that_do_not_broadcast(name):
    with pytest.raises(ValueError, match=(rf"^{name}: shapes float32 \(2, 3\) and float32 "
                                          r"\(4,\) cannot be broadcast together\. Sizes must "
                                          r"match or be 1")):
        getattr(mt.ops, name)(x23, mt.zeros(4))
