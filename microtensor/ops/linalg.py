"""Matrix product, for 1-D, 2-D and batched (broadcast) operands."""
import numpy as np

from ..autograd import primitive
from ..errors import op_error
from ..kernels import sum_over_rows


def swap_last(x):
    """Transpose the last two axes (the matrix transpose of each matrix in a batch)."""
    return np.swapaxes(x, -1, -2)


def matmul_reference(a, b):
    """The matrix product of operands with at least 2 axes and its backward, as in a
    textbook: the specification `matmul` meets. dA = G @ B^T and dB = A^T @ G for each
    matrix of the batch; the `primitive` decorator then sums each gradient over the batch
    axes its operand was broadcast along."""
    def backward(g):
        return g @ swap_last(b), swap_last(a) @ g
    return a @ b, backward


@primitive("matmul", rule="dA = G @ B^T ;  dB = A^T @ G")
def matmul(a, b):
    """a @ b for 1-D, 2-D and batched (broadcast) operands, as np.matmul. Computes what
    `matmul_reference` computes; batched products against one matrix run faster."""
    # getattr, not np.ndim: this runs for every product, and np.ndim costs a microsecond
    if getattr(a, "ndim", 0) == 0 or getattr(b, "ndim", 0) == 0:
        raise op_error("matmul", f"operands must have at least 1 dimension, got shapes "
                       f"{np.shape(a)} and {np.shape(b)}", fix="use * for a scalar product")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise _inner_axes_error(a, b)
    # Vectors become matrices for the rule (a row on the left, a column on the right).
    A = a[None, :] if a.ndim == 1 else a
    B = b[:, None] if b.ndim == 1 else b
    try:
        if A.shape[:-2] != B.shape[:-2]:   # equal batch axes (the usual case) need no check
            np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise _batch_axes_error(a, b, A, B) from None
    if A.ndim > 2 and B.ndim == 2:
        # (..., T, k) @ (k, m) as one GEMM over all rows: NumPy would loop over the batch.
        out = (A.reshape(-1, A.shape[-1]) @ B).reshape(A.shape[:-1] + (B.shape[-1],))
    else:
        out = A @ B
    out_shape = out.shape

    def backward(g):
        G = g.reshape(out_shape)  # put back the axes a vector operand dropped
        if A.ndim > 2 and B.ndim == 2:
            # One GEMM on the stacked rows, never a (batch, k, m) stack of products
            # for the decorator to sum.
            grad_a = (G.reshape(-1, G.shape[-1]) @ B.T).reshape(A.shape)
            grad_b = A.reshape(-1, A.shape[-1]).T @ G.reshape(-1, G.shape[-1])
        elif A.ndim == 2 and B.ndim > 2:
            # One GEMM with the batch laid along the inner axis, so BLAS does the sum.
            G_rows = np.moveaxis(G, -2, 0).reshape(G.shape[-2], -1)      # (n, batch*m)
            B_rows = swap_last(B).reshape(-1, B.shape[-2])               # (batch*m, k)
            grad_a = G_rows @ B_rows
            grad_b = swap_last(A) @ G
        else:
            grad_a, grad_b = G @ swap_last(B), swap_last(A) @ G
        # Batch axes broadcast in the forward are summed by the decorator; here we only
        # undo the vector-to-matrix promotion.
        if a.ndim == 1:
            grad_a = grad_a.sum(axis=tuple(range(grad_a.ndim - 2))).reshape(a.shape)
        if b.ndim == 1:
            grad_b = grad_b.sum(axis=tuple(range(grad_b.ndim - 2))).reshape(b.shape)
        return grad_a, grad_b

    if a.ndim == 1 or b.ndim == 1:
        out = out.reshape(_result_shape(a, b, out_shape))
    return out, backward


def _inner_axes_error(a, b) -> Exception:
    """The error for operands whose inner axes differ: A's last against B's row axis."""
    return op_error("matmul", f"shapes {a.shape} and {b.shape} do not match: the last "
                    f"axis of A ({a.shape[-1]}) must equal the "
                    f"{'second-to-last' if b.ndim > 1 else 'only'} axis of B "
                    f"({b.shape[-2 if b.ndim > 1 else 0]})",
                    fix="transpose one operand (e.g. B.T or .swapaxes(-1, -2)) or "
                    "reshape it")


def _batch_axes_error(a, b, A, B) -> Exception:
    """The error for operands whose batch axes (all but the last two) do not broadcast."""
    return op_error("matmul", f"shapes {a.shape} and {b.shape}: the batch axes "
                    f"{A.shape[:-2]} and {B.shape[:-2]} cannot be broadcast together",
                    fix="batch sizes must match or be 1, aligned from the right")


def _result_shape(a, b, out_shape):
    """NumPy drops the axis that a 1-D operand contributed."""
    if a.ndim == 1 and b.ndim == 1:
        return ()
    if a.ndim == 1:
        return out_shape[:-2] + out_shape[-1:]
    if b.ndim == 1:
        return out_shape[:-1]
    return out_shape


def check_linear_inputs(name, x, weight, bias) -> None:
    """x (..., in), weight (in, out) and bias (out,) or None, or an error naming `name`."""
    if getattr(weight, "ndim", 0) != 2 or getattr(x, "ndim", 0) == 0 \
            or x.shape[-1] != weight.shape[0]:
        raise op_error(name, f"input {np.shape(x)} and weight {np.shape(weight)} do not "
                       f"match: the weight must be 2-D (in_features, out_features) with "
                       f"in_features equal to the input's last axis",
                       fix="weights here are (in, out), the transpose of PyTorch's (out, in)")
    if bias is not None and getattr(bias, "shape", ()) != weight.shape[1:]:
        raise op_error(name, f"bias has shape {np.shape(bias)}, expected "
                       f"{weight.shape[1:]} (one per output feature)")


@primitive("linear", rule="dx = g @ W^T ;  dW = x^T @ g ;  db = sum of g over rows",
           new_grads=True)
def linear(x, weight, bias=None):
    """x @ weight + bias in one node, weight shaped (in_features, out_features).

    Every leading axis of x is a batch of rows, so forward and both weight gradients are
    single 2-D GEMMs, and the bias is added in place (no second activation-sized array).
    """
    check_linear_inputs("linear", x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])                  # (N, in)
    out = rows @ weight                                # (N, out)
    if bias is not None:
        if bias.dtype == out.dtype:
            out += bias
        else:
            out = out + bias                           # let NumPy promote mixed dtypes
    def backward(g):
        g_rows = g.reshape(-1, g.shape[-1])            # (N, out)
        grad_x = (g_rows @ weight.T).reshape(x.shape)
        grad_weight = rows.T @ g_rows                  # sums x_i^T g_i over all rows
        grad_bias = None if bias is None else sum_over_rows(g_rows)
        return grad_x, grad_weight, grad_bias
    return out.reshape(x.shape[:-1] + weight.shape[1:]), backward


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_specs(subscripts, shapes):
    """Each operand's letters and the output's, with '...' spelled out as letters and
    the implicit output (no '->') made explicit by NumPy's rule."""
    def fail(message, fix=None):
        return op_error("einsum", f"{message} (subscripts {subscripts!r}, operand shapes "
                        f"{[tuple(s) for s in shapes]})", fix=fix)
    if not isinstance(subscripts, str):
        raise op_error("einsum", f"the first argument must be the subscripts string, got "
                       f"{type(subscripts).__name__}", TypeError,
                       "e.g. mt.einsum('ij,jk->ik', a, b)")
    text = subscripts.replace(" ", "")
    inputs_text, arrow, output = text.partition("->")
    inputs = inputs_text.split(",")
    if len(inputs) != len(shapes):
        raise fail(f"{len(inputs)} operand subscript(s) for {len(shapes)} operand(s)")
    if any(c not in _LETTERS + "." for c in text.replace("->", "").replace(",", "")):
        raise fail("subscripts may hold only letters, ',', '->' and '...'")
    free = [c for c in _LETTERS if c not in text]
    widest = max([len(shape) - len(spec.replace("...", "")) for spec, shape in
                  zip(inputs, shapes) if "..." in spec] or [0])
    filler = "".join(free[:max(widest, 0)])
    specs = []
    for spec, shape in zip(inputs, shapes):
        if "..." in spec:
            extra = len(shape) - len(spec.replace("...", ""))
            spec = spec.replace("...", filler[len(filler) - extra:] if extra > 0 else "")
        if len(spec) != len(shape) or "." in spec:
            raise fail(f"subscripts {spec!r} do not fit an operand with {len(shape)} axes")
        if len(set(spec)) != len(spec):
            raise fail(f"a letter repeated within one operand ({spec!r}, a diagonal) is not "
                       f"supported", fix="take the diagonal explicitly first")
        specs.append(spec)
    sizes = {}
    for number, (spec, shape) in enumerate(zip(specs, shapes)):
        for letter, n in zip(spec, shape):
            seen, first = sizes.setdefault(letter, (n, number))
            if n != seen and 1 not in (n, seen):
                raise fail(f"letter {letter!r} has size {seen} in operand {first} but {n} in "
                           f"operand {number}", fix="a letter names one axis size (or 1, "
                           "which broadcasts) in every operand")
    if arrow:
        output = output.replace("...", filler)
    else:   # NumPy's implicit output: the ellipsis, then letters used once, sorted
        counts = "".join(specs)
        output = filler + "".join(sorted(c for c in set(counts) if counts.count(c) == 1
                                         and c not in filler))
    if len(set(output)) != len(output) or any(c not in "".join(specs) for c in output):
        raise fail(f"the output {output!r} must name distinct letters that the operands use")
    return specs, output


@primitive("einsum", rule="d operand_i = einsum(g and the other operands -> operand_i's "
                          "subscripts)")
def _einsum(*operands, subscripts):
    operands = [np.asarray(op) for op in operands]
    specs, output = _einsum_specs(subscripts, [op.shape for op in operands])
    out = np.einsum(f"{','.join(specs)}->{output}", *operands)
    def backward(g):
        # out is linear in each operand: its gradient contracts g with all the others.
        # A letter only operand i has was summed away in the forward: the gradient is
        # the same along it (broadcast back).
        grads = []
        for i, spec in enumerate(specs):
            others = [(s, op) for j, (s, op) in enumerate(zip(specs, operands)) if j != i]
            reachable = set(output).union(*(set(s) for s, _ in others))
            kept = "".join(c for c in spec if c in reachable)
            grad = np.einsum(",".join([output] + [s for s, _ in others]) + "->" + kept,
                             g, *(op for _, op in others))
            sizes_kept = iter(grad.shape)
            grad = grad.reshape([next(sizes_kept) if c in reachable else 1 for c in spec])
            # A size-1 axis of g or the others (broadcast inside einsum) leaves the
            # gradient constant along it: broadcast it; the decorator sums what is too big.
            grads.append(np.broadcast_to(grad, np.broadcast_shapes(grad.shape,
                                                                   operands[i].shape)))
        return tuple(grads)
    return out, backward


def einsum(subscripts: str, *operands):
    """Einstein summation, as np.einsum and torch.einsum, with a gradient for every
    operand: mt.einsum('bhqd,bhkd->bhqk', q, k). '...' and the implicit output (no '->')
    work as in NumPy; a letter repeated within one operand (a diagonal) does not.
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return _einsum(*operands, subscripts=subscripts)


def dot(a, b):
    """The dot product of two 1-D tensors (torch.dot), and, as np.dot, the matrix
    product when an operand is 2-D (torch.dot refuses those). `matmul` underneath.

    >>> mt.dot(mt.tensor([1.0, 2.0]), mt.tensor([3.0, 4.0])).item()
    11.0
    """
    shapes = np.shape(getattr(a, "data", a)), np.shape(getattr(b, "data", b))
    if not all(1 <= len(shape) <= 2 for shape in shapes):
        raise op_error("dot", f"needs 1-D or 2-D operands, got shapes {shapes[0]} and "
                       f"{shapes[1]}", fix="use * for a scalar, matmul (@) for batches")
    if len(shapes[0]) == len(shapes[1]) == 1 and shapes[0] != shapes[1]:
        raise op_error("dot", f"vectors of different lengths {shapes[0]} and {shapes[1]}",
                       fix="both vectors need the same number of elements")
    return matmul(a, b)
