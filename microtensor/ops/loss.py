"""Losses beyond the fused cross_entropy (in neural.py): binary cross-entropy on
probabilities and on logits, the negative log-likelihood of log-probabilities, and
cross_entropy with class weights (a composition).
Each reduces with "mean" (the default), "sum" or "none", as in PyTorch.
"""
import numpy as np

from ..autograd import no_grad, primitive
from ..errors import describe, op_error
from .elementwise import add, div, mul, neg, where
from .neural import _check_targets, check_reduction, log_softmax, reduce_losses
from .neural import cross_entropy as fused_cross_entropy
from .reduce import mean, sum


def _reduce(losses, reduction):
    """The reduced loss and the factor each position's gradient gets from the reduction."""
    if reduction == "none":
        return losses, 1
    if reduction == "sum":
        return losses.sum(), 1
    return losses.mean() if losses.size else np.array(np.nan, losses.dtype), \
        1 / max(losses.size, 1)


def _check_pair(name, x, target, what):
    if np.shape(target) != np.shape(x):
        raise op_error(name, f"{what} {np.shape(x)} and targets {np.shape(target)} must "
                       f"have the same shape (one target per {what[:-1]})",
                       fix="reshape the targets, e.g. y.reshape(x.shape)")
    if np.asarray(target).dtype.kind not in "fiub":
        raise op_error(name, f"targets must be numbers in [0, 1], got {describe(target)}",
                       TypeError)


@primitive("binary_cross_entropy",
           rule="dp = g * (p - t) / (p (1 - p)) ;  dt = g * (log(1 - p) - log(p))")
def binary_cross_entropy(probs, target, *, reduction="mean"):
    """-(t log p + (1 - t) log(1 - p)) for probabilities p in [0, 1]. Each log is clamped
    at -100 (as PyTorch), so p = 0 or 1 gives a large finite loss, never inf. Prefer
    `binary_cross_entropy_with_logits` on raw scores: it is stable without clamping."""
    check_reduction("binary_cross_entropy", reduction)
    _check_pair("binary_cross_entropy", probs, target, "probabilities")
    if probs.size and (np.nanmin(probs) < 0 or np.nanmax(probs) > 1):
        raise op_error("binary_cross_entropy", f"probabilities must be in [0, 1], got values "
                       f"in [{np.nanmin(probs):.4g}, {np.nanmax(probs):.4g}]",
                       fix="apply sigmoid first, or use binary_cross_entropy_with_logits")
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(probs), -100)
        log_not_p = np.maximum(np.log1p(-probs), -100)
    losses = -(target * log_p + (1 - target) * log_not_p)
    out, scale = _reduce(losses, reduction)
    def backward(g):
        g = g * scale
        # d/dp = -t/p + (1 - t)/(1 - p) = (p - t) / (p (1 - p)); PyTorch keeps the
        # denominator above 1e-12 so that p = 0 or 1 gives a finite gradient.
        grad_probs = g * (probs - target) / np.maximum(probs * (1 - probs), 1e-12)
        return grad_probs, g * (log_not_p - log_p)
    return np.asarray(out, dtype=losses.dtype), backward


@primitive("binary_cross_entropy_with_logits",
           rule="dx = g * w * ((1 - t) - l * sigmoid(-x)) ;  dt = g * w * ((p - 1) "
                "softplus(-x) - x),  l = 1 + (p - 1) t, p = pos_weight, w = weight")
def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None, *,
                                     reduction="mean"):
    """binary_cross_entropy(sigmoid(x), t) in one stable node: (1 - t) x + l softplus(-x)
    with l = 1 + (pos_weight - 1) t, softplus(-x) = max(-x, 0) + log(1 + exp(-|x|)),
    which never overflows. `weight` scales each element's loss; `pos_weight` (one per
    class, broadcast against the last axis) scales the positive term, as PyTorch's.

    >>> F.binary_cross_entropy_with_logits(mt.zeros(2, 3), np.ones((2, 3)),
    ...                                    pos_weight=np.array([1.0, 2.0, 3.0])).item()
    1.386...
    """
    name = "binary_cross_entropy_with_logits"
    check_reduction(name, reduction)
    _check_pair(name, logits, target, "logits")
    for label, factor in (("weight", weight), ("pos_weight", pos_weight)):
        if factor is not None and not _broadcasts_to(np.shape(factor), logits.shape):
            raise op_error(name, f"{label} {np.shape(factor)} must broadcast to the logits "
                           f"{logits.shape}", fix="give pos_weight one entry per class (the "
                           "last axis), weight one per element or a broadcastable shape")
    softplus_neg = np.maximum(-logits, 0) + np.log1p(np.exp(-np.abs(logits)))  # -log sigmoid(x)
    positive = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    unweighted = (1 - target) * logits + positive * softplus_neg
    losses = unweighted if weight is None else unweighted * weight
    out, scale = _reduce(losses, reduction)
    def backward(g):
        g = g * scale                                   # at each element's loss
        g_unweighted = g if weight is None else g * weight
        not_probs = 0.5 * (np.tanh(-0.5 * logits) + 1)  # sigmoid(-x), stable
        grad_target = -logits if pos_weight is None else (pos_weight - 1) * softplus_neg - logits
        return (g_unweighted * ((1 - target) - positive * not_probs),
                g_unweighted * grad_target,
                None if weight is None else g * unweighted,
                None if pos_weight is None else g_unweighted * target * softplus_neg)
    return np.asarray(out, dtype=losses.dtype), backward


def _broadcasts_to(shape, target):
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _class_weights(name, weight, n_classes):
    """`weight` as an array of one float per class, or an error naming `name`."""
    weight = np.asarray(getattr(weight, "data", weight))
    if weight.shape != (n_classes,) or weight.dtype.kind not in "fiu":
        raise op_error(name, f"weight must hold one number per class ({n_classes},), got "
                       f"{describe(weight)}", fix="e.g. weight=np.ones(C), larger for rare "
                       "classes")
    return weight


@primitive("nll_loss", rule="dx = -g * weight[target] * onehot(target) / (sum of the "
                            "counted weights)")
def nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood: -weight[target] log_probs[..., target], for
    log-probabilities (..., C) (e.g. from log_softmax) and integer targets (...). The
    class axis is the last one, as in our cross_entropy (PyTorch puts it second).
    `weight` gives each class a factor (all 1 by default); "mean" divides by the sum of
    the counted positions' weights, as PyTorch. cross_entropy(x, t) ==
    nll_loss(log_softmax(x), t)."""
    target = np.asarray(target)
    check_reduction("nll_loss", reduction)
    if np.ndim(log_probs) == 0 or log_probs.shape[:-1] != target.shape:
        raise op_error("nll_loss", f"log-probabilities {np.shape(log_probs)} need targets of "
                       f"shape {np.shape(log_probs)[:-1]} (one class id per row; the class "
                       f"axis is the last), got {target.shape}")
    n_classes = log_probs.shape[-1]
    valid = _check_targets("nll_loss", target, n_classes, ignore_index)
    safe_target = np.where(valid, target, 0)
    factor = valid.astype(log_probs.dtype)
    if weight is not None:
        factor = factor * _class_weights("nll_loss", weight, n_classes)[safe_target]
    picked = np.take_along_axis(log_probs, safe_target[..., None], axis=-1)[..., 0]
    losses = np.where(valid, -picked * factor, 0).astype(log_probs.dtype)
    counted = float(factor.sum()) if weight is not None else int(valid.sum())
    out = reduce_losses(losses, counted, reduction)
    def backward(g):
        grad_picked = -factor * g
        if reduction == "mean":
            grad_picked /= counted if counted else 1
        grad = np.zeros(log_probs.shape, dtype=grad_picked.dtype)
        np.put_along_axis(grad, safe_target[..., None], grad_picked[..., None], axis=-1)
        return grad, None
    return np.asarray(out, dtype=log_probs.dtype), backward


def cross_entropy(logits, target, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, weight=None):
    """Cross-entropy of softmax(logits) against integer targets or class probabilities:
    the fused `microtensor.ops.neural.cross_entropy` (see it for the arguments). With
    `weight`, one factor per class as PyTorch's, it is the composition log_softmax then
    weighted nll_loss (and, with label smoothing, the weighted mean of -log_softmax), and
    "mean" divides by the sum of the counted targets' weights (by the number of rows for
    probability targets), as PyTorch.

    >>> F.cross_entropy(mt.zeros(2, 3), np.array([0, 2]), weight=np.array([1.0, 1, 3])).item()
    1.098...
    """
    # Only the options that differ from the defaults reach the node: a drawing's label of
    # the op then names what was chosen, not every default.
    chosen = {name: value for name, value, default in (
        ("ignore_index", ignore_index, -100), ("reduction", reduction, "mean"),
        ("label_smoothing", label_smoothing, 0.0)) if value != default}
    if weight is None:
        return fused_cross_entropy(logits, target, **chosen)
    # The fused op checks every argument but the weight (its numbers are discarded).
    with no_grad():
        fused_cross_entropy(logits, target, **chosen)
    n_classes = np.shape(getattr(logits, "data", logits))[-1]
    weight = _class_weights("cross_entropy", weight, n_classes)
    eps = float(label_smoothing)
    log_probs = log_softmax(logits, axis=-1)
    target_data = np.asarray(getattr(target, "data", target))
    if target_data.dtype.kind == "f" and target_data.shape == log_probs.shape:
        # Probability targets: -sum_c weight_c q_c log p_c per row, q smoothed.
        smoothed = add(mul(target, 1 - eps), eps / n_classes)
        losses = neg(sum(mul(log_probs, mul(smoothed, weight)), axis=-1))
        return losses if reduction == "none" else (
            sum(losses) if reduction == "sum" else mean(losses))
    picked = nll_loss(log_probs, target_data, weight=weight, ignore_index=ignore_index,
                      reduction=reduction)
    if not eps:
        return picked
    valid = target_data != ignore_index
    smooth = where(valid, neg(sum(mul(log_probs, weight), axis=-1)), 0.0)
    if reduction == "sum":
        smooth = sum(smooth)
    elif reduction == "mean":
        smooth = div(sum(smooth), float(weight[np.where(valid, target_data, 0)][valid].sum()))
    return add(mul(picked, 1 - eps), mul(smooth, eps / n_classes))
