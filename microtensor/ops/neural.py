"""Fused neural-network primitives: one node each, with a closed-form backward that is
both faster and more stable than the same function built from exp, sum and divide.
"""
import math

import numpy as np

from .. import kernels
from ..autograd import primitive
from ..errors import describe, op_error
from ..kernels import sum_over_last_axis, sum_over_rows
from ..tensor import generator
from .linalg import check_linear_inputs, linear


def _check_axis(name, x, axis):
    if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise op_error(name, f"axis {axis} is out of range for a tensor with shape {x.shape}",
                       IndexError, f"use an axis in [{-x.ndim}, {x.ndim - 1}]"
                       if x.ndim else "this needs at least a 1-D tensor")
    if x.shape[axis] == 0:
        # NumPy would fail later with "zero-size array to reduction operation maximum".
        raise op_error(name, f"axis {axis} of a tensor with shape {x.shape} is empty: there "
                       f"is nothing to normalise over", fix="check for an empty sequence "
                       "or vocabulary upstream")


def softmax_reference(x, axis=-1):
    """Softmax as in a textbook, and its backward: the specification `softmax` meets.

    y = exp(x - max) / sum(exp(x - max)) (the factor exp(-max) cancels, and no exp
    overflows). The Jacobian is dy_i/dx_j = y_i (delta_ij - y_j), so
    dx_j = sum_i g_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i).
    """
    exp = np.exp(x - np.max(x, axis=axis, keepdims=True))
    y = exp / np.sum(exp, axis=axis, keepdims=True)
    def backward(g):
        return (y * (g - np.sum(g * y, axis=axis, keepdims=True)),)
    return y, backward


@primitive("softmax", rule="dx = y * (g - sum(g * y, axis))")
def softmax(x, *, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`; the max is subtracted first so exp never
    overflows. Computes what `softmax_reference` computes, faster (see kernels.py)."""
    _check_axis("softmax", x, axis)
    last = axis in (-1, x.ndim - 1)
    if not last:
        x = np.moveaxis(x, axis, -1)      # the kernels work along the last axis (a view)
    # fmax skips the NaN test that max makes per element (faster over short rows);
    # a NaN still reaches its whole row through the sum. Row sums are a GEMV, and the
    # exp and the scaling write into one buffer.
    y = np.subtract(x, np.fmax.reduce(x, axis=-1, keepdims=True),
                    dtype=np.result_type(x, 0.5))   # integer scores give float64
    np.exp(y, out=y)
    y *= (1 / sum_over_last_axis(y))[..., None]
    def backward(g):
        if not last:
            g = np.moveaxis(g, axis, -1)
        g_dot_y = np.einsum("...i,...i->...", g, y)[..., None]   # no (g * y) temporary
        grad = g - g_dot_y
        grad *= y
        return (grad if last else np.moveaxis(grad, -1, axis),)
    return (y if last else np.moveaxis(y, -1, axis)), backward


@primitive("log_softmax", rule="dx = g - softmax(x) * sum(g, axis)")
def log_softmax(x, *, axis=-1):
    """x - logsumexp(x), computed with the max subtracted (never overflows)."""
    _check_axis("log_softmax", x, axis)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    def backward(g):
        # d(x_j - lse)/dx_k = delta_jk - softmax_k, summed against g over j.
        return (g - np.exp(out) * np.sum(g, axis=axis, keepdims=True),)
    return out, backward


def check_norm_inputs(name, x, **params) -> None:
    """A normalisation works over the last axis: x has one, and each parameter (weight,
    bias) has its shape."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise op_error(name, f"expected a tensor of numbers to normalise, got {describe(x)}",
                       TypeError, fix="pass a float tensor, e.g. mt.tensor(values)")
    if x.ndim == 0:
        raise op_error(name, f"got a 0-d tensor, but {name} normalises over the last axis",
                       fix="give it at least a 1-D tensor, e.g. x.reshape(1)")
    for label, param in params.items():
        if param is not None and getattr(param, "shape", ()) != x.shape[-1:]:
            raise op_error(name, f"{label} has shape {np.shape(param)} but the input "
                           f"{x.shape} is normalised over its last axis, so it must have "
                           f"shape {x.shape[-1:]}")


def layer_norm_reference(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm as in a textbook, and its backward: the specification `layer_norm` meets.

    x_hat = (x - mean) / sqrt(var + eps) over the last axis (biased variance), then
    y = x_hat * weight + bias. With g_hat = g * weight, the gradient at x is
    rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)): normalising subtracts the
    mean and divides by std, so the gradient loses its mean and its projection on x_hat.
    """
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean(np.square(x - mean), axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * rstd
    scale = 1 if weight is None else weight
    out = x_hat * scale + (0 if bias is None else bias)
    def backward(g):
        g_hat = g * scale
        grad_x = rstd * (g_hat - np.mean(g_hat, axis=-1, keepdims=True)
                         - x_hat * np.mean(g_hat * x_hat, axis=-1, keepdims=True))
        every_row = tuple(range(x.ndim - 1))
        grad_weight = None if weight is None else np.sum(g * x_hat, axis=every_row)
        grad_bias = None if bias is None else np.sum(g, axis=every_row)
        return grad_x, grad_weight, grad_bias
    return out, backward


@primitive("layer_norm", rule="dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)),"
                              "  g_hat = g * weight", new_grads=True)
def layer_norm(x, weight=None, bias=None, *, eps=1e-5):
    """Normalise over the last axis with the *biased* variance (as the paper and PyTorch
    do), then scale by `weight` and shift by `bias` (both shaped like the last axis).
    Computes what `layer_norm_reference` computes, faster (see kernels.py)."""
    check_norm_inputs("layer_norm", x, weight=weight, bias=bias)
    # kernels.normalize_rows: the row mean a GEMV, the variance a row-wise dot product,
    # x_hat normalised in place; over many short rows several times faster than np.mean
    # and np.var.
    x_rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])   # (rows, features)
    x_hat, rstd = kernels.normalize_rows(x_rows, eps)              # (x - mean) / std
    averager = kernels.averager(x.shape[-1], x_hat.dtype)
    out = np.multiply(x_hat, 1 if weight is None else weight,
                      dtype=np.result_type(x_hat, 1 if weight is None else weight,
                                           0 if bias is None else bias))
    if bias is not None:
        out += bias

    def backward(g):
        g = np.reshape(g, x_rows.shape)
        # The two row means of the rule, mean(g_hat) and mean(g_hat * x_hat), are GEMVs
        # with weight / features, so g_hat itself is never needed for them.
        weight_avg = averager if weight is None else weight * averager
        g_x_hat = g * x_hat                               # summed over rows: grad_weight
        mean_g_hat = (g @ weight_avg)[:, None]            # mean(g_hat) per row
        projection = (g_x_hat @ weight_avg)[:, None]      # mean(g_hat * x_hat) per row
        g_hat = g * (1 if weight is None else weight)
        grad_x = kernels.normalize_rows_backward(g_hat, x_hat, rstd, mean_g_hat, projection)
        grad_weight = None if weight is None else sum_over_rows(g_x_hat)
        grad_bias = None if bias is None else sum_over_rows(g)
        return grad_x.reshape(x.shape), grad_weight, grad_bias
    return out.reshape(x.shape), backward


def layer_norm_linear_reference(x, norm_weight, norm_bias, weight, bias=None, eps=1e-5):
    """What `layer_norm_linear` computes, as the two ops a textbook writes (Tensors in,
    Tensor out, the gradient from their rules)."""
    return linear(layer_norm(x, norm_weight, norm_bias, eps=eps), weight, bias)


def _fold_affine(norm_weight, norm_bias, weight, bias, dtype):
    """The LayerNorm's affine folded into the linear layer, [w W ; b W + c]: a
    (features + 1, out) matrix whose last row, met by x_hat's column of ones, adds the
    bias. Computed once per call on the small weight, not on every row of x."""
    features = len(norm_weight)
    folded = np.empty((features + 1, weight.shape[1]), dtype)
    np.multiply(norm_weight[:, None], weight, out=folded[:features])
    np.matmul(norm_bias, weight, out=folded[features])
    if bias is not None:
        folded[features] += bias
    return folded


@primitive("layer_norm_linear", rule="layer_norm's and linear's rules, on W' = w W (rows "
                                     "scaled) and c' = b W + c: dW = w dW' + b (x) dc', "
                                     "dw = rowsum(W * dW'), db = W dc'", new_grads=True,
           reference=layer_norm_linear_reference)
def layer_norm_linear(x, norm_weight, norm_bias, weight, bias=None, *, eps=1e-5):
    """linear(layer_norm(x, norm_weight, norm_bias, eps=eps), weight, bias) as one node,
    the same numbers with fewer passes over the activations (`layer_norm_linear_reference`
    is the two ops it replaces, and the tests hold them equal).

    The LayerNorm's affine is folded into the product: (x_hat w + b) W + c equals
    x_hat (w W) + (b W + c), so the folded weight is computed once per call on the small
    (features, out) matrix instead of scaling and shifting every row of x. x_hat carries a
    column of ones, so one GEMM adds the bias and, in the backward, one GEMM
    [x_hat | 1]^T g gives the gradients of both folded parts. The fast forms of pre-LN
    blocks use it (`transformer.fast`).
    """
    check_folded_inputs("layer_norm_linear", x, norm_weight, norm_bias, weight, bias,
                        fix="for a norm without them use linear(layer_norm(x), weight, bias)")
    x_rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    dtype = np.result_type(x_rows, norm_weight, norm_bias, weight,
                           0.5 if bias is None else bias)
    folded_product = FoldedProduct(x_rows, norm_weight, norm_bias, weight, bias, eps, dtype)

    def backward(g):
        grad_rows, *grads = folded_product.backward(g.reshape(len(x_rows), weight.shape[1]))
        return grad_rows.reshape(x.shape), *grads
    return folded_product.out.reshape(x.shape[:-1] + weight.shape[1:]), backward


def check_folded_inputs(name, x, norm_weight, norm_bias, weight, bias, fix) -> None:
    """The inputs of a LayerNorm folded into the product after it, or an error naming
    `name`; `fix` says what to use for a norm without weight and bias."""
    if norm_weight is None or norm_bias is None:
        raise op_error(name, "norm_weight and norm_bias are both needed: they are folded "
                       "into the product", TypeError, fix=fix)
    check_norm_inputs(name, x, norm_weight=norm_weight, norm_bias=norm_bias)
    check_linear_inputs(name, x, weight, bias)


class FoldedProduct:
    """`layer_norm_linear`'s arithmetic on rows (N, d), for the fused ops that begin with
    it (`transformer.fast`'s feed-forward too): `out` = [x_hat | 1] @ [w W ; b W + c],
    and `backward(g_rows)` gives (grad_rows, grad_norm_weight, grad_norm_bias,
    grad_weight, grad_bias or None)."""

    def __init__(self, x_rows, norm_weight, norm_bias, weight, bias, eps, dtype):
        features = x_rows.shape[-1]
        self.norm_weight, self.norm_bias, self.weight = norm_weight, norm_bias, weight
        self.has_bias = bias is not None
        self.x_hat_ones = np.empty((len(x_rows), features + 1), dtype)      # [x_hat | 1]
        self.x_hat, self.rstd = kernels.normalize_rows(
            x_rows, eps, out=self.x_hat_ones[:, :features])
        self.x_hat_ones[:, features] = 1
        self.folded = _fold_affine(norm_weight, norm_bias, weight, bias, dtype)  # [w W ; b W + c]
        self.out = self.x_hat_ones @ self.folded

    def backward(self, g_rows):
        """The gradients for g_rows = dL/d out (N, out), in the order the class gives."""
        features, weight = len(self.norm_weight), self.weight
        grad_folded = self.x_hat_ones.T @ g_rows           # [x_hat^T g ; sum of g rows]
        grad_rows, grad_bias = grad_folded[:features], grad_folded[features]
        grad_weight = grad_rows * self.norm_weight[:, None]
        grad_weight += np.outer(self.norm_bias, grad_bias)
        grad_norm_weight = np.vecdot(grad_rows, weight)
        grad_norm_bias = weight @ grad_bias
        # Then layer_norm's rule with the affine already applied: g_hat = g (w W)^T.
        g_hat = g_rows @ self.folded[:features].T
        mean_g_hat = (g_hat @ kernels.averager(features, g_hat.dtype))[:, None]
        projection = (np.vecdot(g_hat, self.x_hat) * (1 / features))[:, None]
        grad_x = kernels.normalize_rows_backward(g_hat, self.x_hat, self.rstd, mean_g_hat,
                                                 projection)
        return (grad_x, grad_norm_weight, grad_norm_bias, grad_weight,
                grad_bias if self.has_bias else None)


def _check_targets(name, target, n_classes, ignore_index):
    if target.dtype.kind not in "iu":
        raise op_error(name, f"targets must be integer class ids, got {describe(target)}",
                       TypeError, "convert them with .astype(np.int64), or give class "
                       "probabilities as a float array shaped like the logits")
    valid = target != ignore_index
    if valid.any():
        low, high = target[valid].min(), target[valid].max()
        if low < 0 or high >= n_classes:
            bad = low if low < 0 else high
            raise op_error(name, f"target id {bad} is out of range for {n_classes} classes",
                           IndexError, f"targets must be in [0, {n_classes - 1}] or equal "
                           f"ignore_index ({ignore_index})" if n_classes else "the class "
                           "axis is empty: give the scores at least one class")
    return valid


def check_reduction(name, reduction):
    """Raise, naming the op, unless `reduction` is "mean", "sum" or "none"."""
    if reduction not in ("mean", "sum", "none"):
        raise op_error(name, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def reduce_losses(losses: np.ndarray, n_counted: int, reduction: str) -> np.ndarray:
    """Per-position losses as `reduction` asks: "none", "sum", or "mean" over the counted
    positions (NaN when none counts, as in PyTorch)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / n_counted if n_counted else np.array(np.nan, losses.dtype)


def log_softmax_last(logits):
    """log softmax over the last axis, the max subtracted first (never overflows)."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax_rows(rows, dtype):
    """softmax over the last axis of a (N, C) array, in one new (N, C) array of `dtype`."""
    out = np.subtract(rows, np.fmax.reduce(rows, axis=-1, keepdims=True), dtype=dtype)
    np.exp(out, out=out)
    out *= (1 / sum_over_last_axis(out))[:, None]
    return out


def cross_entropy_reference(logits, target, *, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0):
    """Cross-entropy as in a textbook, and its backward: the specification
    `cross_entropy` meets (for inputs `cross_entropy` accepts).

    With q the target distribution (one-hot at the target id, mixed with the uniform one
    by label smoothing eps: (1 - eps) q + eps / C; or the given probabilities), the loss
    per position is -sum_c q_c log softmax(x)_c, and its gradient at x is
    softmax(x) * sum(q) - q: the predicted distribution minus the target one.
    """
    target = np.asarray(target)
    n_classes, eps = logits.shape[-1], float(label_smoothing)
    log_probs = log_softmax_last(logits)
    if target.shape == logits.shape:                                   # probabilities
        valid = np.ones(logits.shape[:-1], dtype=bool)
        q = target * (1 - eps) + eps / n_classes
        losses = -np.sum(q * log_probs, axis=-1)
    else:
        valid = target != ignore_index
        safe_target = np.where(valid, target, 0)[..., None]
        q = (np.arange(n_classes) == safe_target) * (1 - eps) + eps / n_classes
        # The sum over q picks one log-probability (and, smoothed, takes the mean of all),
        # written as a pick so that a -inf logit elsewhere does not make 0 * -inf.
        losses = -(1 - eps) * np.take_along_axis(log_probs, safe_target, axis=-1)[..., 0]
        if eps:
            losses -= eps * np.mean(log_probs, axis=-1)
        losses = np.where(valid, losses, 0)
    losses = losses.astype(logits.dtype)
    n_counted = int(valid.sum())
    out = reduce_losses(losses, n_counted, reduction)
    def backward(g):
        weight = valid / max(n_counted, 1) if reduction == "mean" else valid * 1.0
        weight = (weight * g)[..., None]
        grad = (np.exp(log_probs) * np.sum(q, axis=-1, keepdims=True) - q) * weight
        grad_target = -(1 - eps) * log_probs * weight if target.shape == logits.shape \
            else None
        return grad, grad_target
    return np.asarray(out, dtype=logits.dtype), backward


def _check_cross_entropy_inputs(logits, target, reduction, label_smoothing) -> bool:
    """Raise, naming cross_entropy, unless the arguments fit; return whether `target`
    holds class probabilities (a float array shaped like the logits) rather than ids."""
    check_reduction("cross_entropy", reduction)
    if np.ndim(logits) == 0:
        raise op_error("cross_entropy", "logits must have a class axis, got a 0-d tensor")
    if isinstance(label_smoothing, bool) or not isinstance(
            label_smoothing, (int, float, np.floating)) or not 0 <= label_smoothing <= 1:
        raise op_error("cross_entropy", f"label_smoothing must be a number in [0, 1], got "
                       f"{label_smoothing!r}", fix="the usual value is 0.1")
    probabilities = target.dtype.kind == "f" and target.shape == np.shape(logits)
    if not probabilities and logits.shape[:-1] != np.shape(target):
        raise op_error("cross_entropy", f"logits {logits.shape} need targets of shape "
                       f"{logits.shape[:-1]} (one class id per row) or {logits.shape} "
                       f"(class probabilities), got {np.shape(target)}")
    if logits.shape[-1] == 0:
        raise op_error("cross_entropy", f"logits {logits.shape} have 0 classes (an empty "
                       f"last axis)", fix="the last axis of the logits must hold one score "
                       "per class")
    return probabilities


def _exp_in_place(shifted):
    """exp(shifted) written over `shifted`; returns its row sums and their logs
    (log softmax = shifted - log_sum_exp)."""
    np.exp(shifted, out=shifted)
    sum_exp = sum_over_last_axis(shifted)
    return sum_exp, np.log(sum_exp)


def _probability_target_losses(shifted, target, eps):
    """-sum_c q_c log softmax_c per row, q = (1 - eps) target + eps / C, read off the
    shifted logits (N, C) before they become exp(shifted) in place. Returns the losses,
    the row sums of exp, and what the backward needs: q, its row sums, and the full
    log-probabilities (the target's gradient is made of them)."""
    q = target.reshape(shifted.shape) * (1 - eps) + eps / shifted.shape[1]   # (N, C)
    q_sum = sum_over_last_axis(q)
    q_dot_shifted = np.vecdot(q, shifted)
    log_probs = shifted.copy()                          # shifted; minus log_sum_exp below
    sum_exp, log_sum_exp = _exp_in_place(shifted)
    log_probs -= log_sum_exp[:, None]
    return q_sum * log_sum_exp - q_dot_shifted, sum_exp, (q, q_sum, log_probs)


def _class_id_losses(shifted, safe_target, valid, eps):
    """-log softmax at each row's target id (smoothed: (1 - eps) of it plus eps of the
    mean over classes), 0 where not `valid`. Only the shifted logit at the target and,
    smoothed, a row mean (a GEMV) are read before the logits (N, C) become exp(shifted)
    in place: no log-probabilities are formed. Returns the losses and the row sums of exp."""
    shifted_at_target = shifted[np.arange(len(shifted)), safe_target]
    if eps:
        shifted_mean = shifted @ kernels.averager(shifted.shape[1], shifted.dtype)
    sum_exp, log_sum_exp = _exp_in_place(shifted)
    losses = log_sum_exp - shifted_at_target            # -log softmax at the target
    if eps:
        losses = (1 - eps) * losses + eps * (log_sum_exp - shifted_mean)
    return np.where(valid, losses, 0), sum_exp


def _probability_target_grads(softmax, q, q_sum, log_probs, row_weight, eps):
    """The gradients at the logits, softmax * sum(q) - q, and at the target,
    -(1 - eps) log softmax, each row scaled by its weight (N,)."""
    grad = softmax * (q_sum * row_weight)[:, None]
    grad -= q * row_weight[:, None]
    return grad, -(1 - eps) * log_probs * row_weight[:, None]


def _class_id_grads(softmax, safe_target, row_weight, eps):
    """softmax - q for the one-hot (or smoothed) target q, each row scaled by its weight
    (N,), written over `softmax` (N, C): at 50,257 classes that is the one (N, C) array
    beside the logits, and no second one is made."""
    softmax *= row_weight[:, None]
    if eps:
        softmax -= (eps / softmax.shape[1] * row_weight)[:, None]
    softmax[np.arange(len(softmax)), safe_target] -= (1 - eps) * row_weight
    return softmax


@primitive("cross_entropy",
           rule="dlogits = g * (softmax(logits) * sum(q) - q) / n_counted,  "
                "q = the target distribution (one-hot, smoothed or given)")
def cross_entropy(logits, target, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Mean negative log-likelihood of `target` under softmax(`logits`), in one node.

    logits: (..., C) floats. target: (...) integer class ids, or (..., C) class
    probabilities (a float array shaped like the logits; it gets a gradient too).
    Positions whose integer target is `ignore_index` count for nothing (not in the sum,
    not in the mean's denominator). `label_smoothing` = eps mixes the target with the
    uniform distribution, (1 - eps) target + eps / C, as PyTorch does.
    reduction: "mean" (over counted positions; NaN if none, as PyTorch), "sum" or "none".
    Computes what `cross_entropy_reference` computes, faster (see kernels.py).
    """
    target = np.asarray(target)
    probabilities = _check_cross_entropy_inputs(logits, target, reduction, label_smoothing)
    n_classes, eps = logits.shape[-1], float(label_smoothing)
    # One (rows, C) buffer goes from the shifted logits to softmax in place; each loss
    # helper reads what it needs of log softmax before the exp. The backward gets softmax
    # itself, so it does not recompute the exp.
    rows = logits.reshape(-1, n_classes)                               # (N, C)
    dtype = np.result_type(rows, 0.5)
    softmax = np.subtract(rows, np.fmax.reduce(rows, axis=-1, keepdims=True), dtype=dtype)
    saved = safe_target = None      # each branch sets what its backward reads
    if probabilities:
        valid = np.ones(len(rows), dtype=bool)
        losses, sum_exp, saved = _probability_target_losses(softmax, target, eps)
    else:
        valid = _check_targets("cross_entropy", target, n_classes, ignore_index).reshape(-1)
        safe_target = np.where(valid, target.reshape(-1), 0)
        losses, sum_exp = _class_id_losses(softmax, safe_target, valid, eps)
    softmax *= (1 / sum_exp)[:, None]
    n_counted = int(valid.sum())
    out = reduce_losses(losses.astype(logits.dtype).reshape(logits.shape[:-1]), n_counted,
                        reduction)

    def backward(g):
        # d(-sum_c q_c log softmax(x)_c) / dx = softmax(x) * sum(q) - q: the predicted
        # distribution minus the target one (sum(q) is 1 for a one-hot or smoothed target).
        nonlocal softmax
        scale = 1 / max(n_counted, 1) if reduction == "mean" else 1
        row_weight = valid * (np.reshape(g, -1) * scale)                # (N,)
        if probabilities:
            grads = _probability_target_grads(softmax, *saved, row_weight, eps)
            return tuple(grad.reshape(logits.shape) for grad in grads)
        # With class ids the gradient is written over the softmax buffer. A second call
        # (retain_graph=True) finds it given away and takes softmax from the logits again.
        buffer = softmax if softmax is not None else softmax_rows(rows, dtype)
        softmax = None
        grad = _class_id_grads(buffer, safe_target, row_weight, eps)
        return grad.reshape(logits.shape), None
    return np.asarray(out, dtype=logits.dtype), backward


@primitive("dropout", rule="dx = g * mask / (1 - p)")
def dropout(x, *, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p), so the
    expected value is unchanged; identity when not training or p == 0."""
    if not 0 <= p < 1:
        raise op_error("dropout", f"p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x, lambda g: (g,)
    scale = (generator().random(x.shape) >= p).astype(x.dtype) / (1 - p)
    def backward(g):
        return (g * scale,)
    return x * scale, backward


def embedding_reference(ids, weight):
    """The embedding lookup and its backward as in a textbook: the specification
    `embedding` meets. Each output row is weight[id]; its gradient is added back into
    that row, once per use (np.add.at accumulates repeated ids)."""
    def backward(g):
        grad = np.zeros(weight.shape, dtype=g.dtype)
        np.add.at(grad, np.reshape(ids, -1), np.reshape(g, (np.size(ids), weight.shape[1])))
        return None, grad
    return weight[ids], backward


# Up to this many table rows, embedding's backward is a one-hot GEMM; above, a sort and
# a segmented sum. Measured (tests/bench/bench_kernels.py; also 256 to 16384 ids of
# width 32 to 512), the GEMM's cost grows with the rows and the sort's does not: alone,
# with BLAS on 2 threads, it wins up to about 128 rows, on one thread up to about 50.
# Inside a training step (BLAS threads busy, caches cold) a 64-row table was already
# slower on either setting, so the GEMM is kept for tables of up to 32 rows.
ONE_HOT_MAX_VOCAB = 32


@primitive("embedding", rule="dW = zeros, with g rows added at the looked-up ids",
           new_grads=True)
def embedding(ids, weight):
    """Rows of `weight` (vocab, d) picked by integer `ids` of any shape -> (..., d).
    Computes what `embedding_reference` computes; its backward is faster (a one-hot GEMM
    for a small table, a sort and a segmented sum otherwise)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise op_error("embedding", f"ids must be integers, got {describe(ids)}", TypeError)
    if getattr(weight, "ndim", 0) != 2:
        # Checked here: with another rank the forward would run and only backward fail.
        raise op_error("embedding", f"weight must be a 2-D table (vocab, dim), got "
                       f"{describe(weight)}", ValueError,
                       "reshape it to (vocab, dim), e.g. weight.reshape(-1, 1)")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise op_error("embedding", f"id {bad} is out of range for a table of "
                       f"{weight.shape[0]} rows", IndexError,
                       f"ids must be in [0, {weight.shape[0] - 1}]" if weight.shape[0]
                       else "the table is empty: give it at least one row")
    def backward(g):
        flat = ids.reshape(-1)
        rows = g.reshape(flat.size, weight.shape[1])   # (N, d); -1 fails when d == 0
        if ids.ndim >= 2 and len(ids) > 1 and ids.size and (ids == ids[:1]).all():
            # Every row looks up the same ids (an unpadded batch's positions 0..T-1): the
            # batch's gradient rows add up first, one sum over the leading axis, and only
            # the first row's lookups are scattered.
            flat = ids[0].reshape(-1)
            rows = rows.reshape(len(ids), flat.size, weight.shape[1]).sum(axis=0)
        if weight.shape[0] <= ONE_HOT_MAX_VOCAB:
            # dW = one_hot(ids)^T @ rows: each table row is the sum of the gradient rows
            # that looked it up, as one GEMM. It costs vocab multiply-adds per gradient
            # element, so it wins only for a small vocabulary (positions, characters).
            one_hot_t = np.zeros((weight.shape[0], flat.size), rows.dtype)   # (vocab, N)
            one_hot_t[flat, np.arange(flat.size)] = 1
            with np.errstate(invalid="ignore"):   # 0 * inf: handled just below
                grad = one_hot_t @ rows
            if np.isfinite(grad).all():
                return None, grad
            # An inf or NaN in g would reach every table row through 0 * inf: sum by
            # sorting instead, which touches only the rows that were looked up.
        # np.add.at is slow (one Python-level scatter per row). Sorting the ids puts equal
        # ones together, so one np.add.reduceat sums each run of rows: O(N * d) work and
        # memory, several times faster (and no (vocab, N) one-hot matrix).
        order = np.argsort(flat, kind="stable")
        sorted_ids = flat[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        grad = np.zeros(weight.shape, dtype=g.dtype)
        if flat.size:
            grad[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
        return None, grad
    return weight[ids], backward


def rms_norm_reference(x, weight=None, eps=1e-6):
    """RMSNorm as in a textbook, and its backward: the specification `rms_norm` meets.

    y = x / sqrt(mean(x^2) + eps) * weight. With r = (mean(x^2) + eps)^(-1/2),
    dr/dx_j = -r^3 x_j / n, so dx = r (g_hat - x_hat * mean(g_hat * x_hat)),
    g_hat = g * weight: the gradient loses its projection on x_hat (no mean to remove).
    """
    rstd = 1 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + eps)
    x_hat = x * rstd
    scale = 1 if weight is None else weight
    def backward(g):
        g_hat = g * scale
        grad_x = rstd * (g_hat - x_hat * np.mean(g_hat * x_hat, axis=-1, keepdims=True))
        every_row = tuple(range(x.ndim - 1))
        grad_weight = None if weight is None else np.sum(g * x_hat, axis=every_row)
        return grad_x, grad_weight
    return x_hat * scale, backward


@primitive("rms_norm", rule="dx = rstd * (g_hat - x_hat * mean(g_hat * x_hat)),"
                            "  g_hat = g * weight", new_grads=True)
def rms_norm(x, weight=None, *, eps=1e-6):
    """Divide by the root mean square over the last axis, then scale by `weight` (shaped
    like the last axis): x / sqrt(mean(x^2) + eps) * weight. LayerNorm without the mean
    subtraction and without a bias (Llama's RMSNorm; eps 1e-6 as Llama configs use).
    Computes what `rms_norm_reference` computes, faster (see kernels.py)."""
    check_norm_inputs("rms_norm", x, weight=weight)
    # kernels.normalize_rows without the centring: the mean square a row-wise dot product.
    x_rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])   # (rows, features)
    x_hat, rstd = kernels.normalize_rows(x_rows, eps, centre=False)   # x / rms
    averager = kernels.averager(x.shape[-1], x_hat.dtype)
    out = x_hat if weight is None else np.multiply(x_hat, weight,
                                                   dtype=np.result_type(x_hat, weight))

    def backward(g):
        g = np.reshape(g, x_rows.shape)
        # mean(g_hat * x_hat) is a GEMV with weight / features (g_hat is never formed).
        weight_avg = averager if weight is None else weight * averager
        g_x_hat = g * x_hat                               # summed over rows: grad_weight
        projection = (g_x_hat @ weight_avg)[:, None]      # mean(g_hat * x_hat) per row
        g_hat = g * (1 if weight is None else weight)
        grad_x = kernels.normalize_rows_backward(g_hat, x_hat, rstd, None, projection)
        grad_weight = None if weight is None else sum_over_rows(g_x_hat)
        return grad_x.reshape(x.shape), grad_weight
    return out.reshape(x.shape), backward
