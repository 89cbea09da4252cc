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
from .shape import permute


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


def _class_axis_last(name, scores, target, class_axis, probabilities_allowed=True):
    """(scores, target) in the layout the fused losses read: the class axis of `scores`
    moved last (a `permute`, so gradients flow back through it), probability targets
    (shaped like the scores) moved with it. Class ids (one per position) already have
    the moved layout's shape, (N, d1, ...): only their shape is checked here."""
    what = "logits" if name == "cross_entropy" else "log-probabilities"
    if isinstance(class_axis, bool) or not isinstance(class_axis, (int, np.integer)):
        raise op_error(name, f"class_axis must be an int, got {describe(class_axis)}",
                       TypeError, "pass class_axis=1 for PyTorch's (N, C, ...) layout, "
                       "-1 (the default) for the class axis last")
    shape = np.shape(getattr(scores, "data", scores))
    ndim = len(shape)
    if not ndim:
        return scores, target      # the loss itself says that a class axis is missing
    if not -ndim <= class_axis < ndim:
        raise op_error(name, f"class_axis {class_axis} is out of range for {what} of "
                       f"shape {shape}", IndexError, f"use a class_axis in [{-ndim}, "
                       f"{ndim - 1}]: 1 for PyTorch's (N, C, ...) layout, -1 for the class "
                       f"axis last")
    axis = int(class_axis) % ndim
    target_data = np.asarray(getattr(target, "data", target))
    probabilities = probabilities_allowed and target_data.dtype.kind == "f" \
        and target_data.shape == shape
    ids_shape = shape[:axis] + shape[axis + 1:]
    if axis == ndim - 1:
        # PyTorch's layout with our default axis: say what to pass instead of only that
        # the shapes disagree (the loss's own check words every other mismatch).
        if not probabilities and ndim > 2 and target_data.shape != ids_shape \
                and target_data.shape == shape[:1] + shape[2:]:
            raise op_error(name, f"{what} {shape} need targets of shape {ids_shape} (one "
                           f"class id per position; the class axis is the last), got "
                           f"{target_data.shape}, which fits the class axis at 1",
                           fix="pass class_axis=1 for PyTorch's (N, C, ...) layout")
        return scores, target
    if not probabilities and target_data.shape != ids_shape:
        raise op_error(name, f"{what} {shape} with class_axis={class_axis} need targets of "
                       f"shape {ids_shape} (one class id per position)" + (
                           f" or {shape} (class probabilities)" if probabilities_allowed
                           else "") + f", got {target_data.shape}",
                       fix="the targets fit the class axis last: pass class_axis=-1 (the "
                       "default)" if target_data.shape == shape[:-1] else "give one target "
                       "per position, without the class axis")
    order = tuple(i for i in range(ndim) if i != axis) + (axis,)
    moved_scores = permute(scores, axes=order)
    return moved_scores, (permute(target, axes=order) if probabilities else target)


def nll_loss(log_probs, target, *, weight=None, ignore_index: int = -100,
             reduction: str = "mean", class_axis: int = -1):
    """Negative log-likelihood: -weight[target] log_probs[..., target], for
    log-probabilities (e.g. from log_softmax) and integer targets, one per position.
    The class axis is the last one by default, as in our cross_entropy: (..., C) with
    targets (...). class_axis=1 reads PyTorch's layout, (N, C, d1, ...) with targets
    (N, d1, ...): the class axis is moved last, then the same loss is taken.
    `weight` gives each class a factor (all 1 by default); "mean" divides by the sum of
    the counted positions' weights, as PyTorch. cross_entropy(x, t) ==
    nll_loss(log_softmax(x), t).

    class_axis is explicit rather than detected from the shapes: (N, C, d1) with C == d1
    fits both layouts, and a guess there would silently take the loss over the wrong
    axis. An explicit argument never guesses.

    >>> log_probs = F.log_softmax(mt.zeros(2, 4, 3), axis=1)      # (N, C, d1)
    >>> F.nll_loss(log_probs, np.zeros((2, 3), np.int64), class_axis=1).item()
    1.386...
    """
    log_probs, target = _class_axis_last("nll_loss", log_probs, target, class_axis,
                                         probabilities_allowed=False)
    return _nll_loss(log_probs, target, weight=weight, ignore_index=ignore_index,
                     reduction=reduction)


@primitive("nll_loss", rule="dx = -g * weight[target] * onehot(target) / (sum of the "
                            "counted weights)")
def _nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean"):
    """nll_loss with the class axis last: the primitive `nll_loss` calls."""
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
                  label_smoothing: float = 0.0, weight=None, *, class_axis: int = -1):
    """Cross-entropy of softmax(logits) against integer targets or class probabilities:
    the fused `microtensor.ops.neural.cross_entropy` (see it for the arguments). With
    `weight`, one factor per class as PyTorch's, it is the composition log_softmax then
    weighted nll_loss (and, with label smoothing, the weighted mean of -log_softmax), and
    "mean" divides by the sum of the counted targets' weights (by the number of rows for
    probability targets), as PyTorch.

    The class axis is the last one by default: logits (..., C), class ids (...).
    class_axis=1 reads PyTorch's layout, logits (N, C, d1, ...) with class ids
    (N, d1, ...) or probabilities shaped like the logits: the class axis is moved last
    (a permute), then the same loss is taken, with every option above. It is explicit
    rather than detected because the shapes can fit both layouts ((N, C, d1) with
    C == d1): an explicit argument never guesses.

    >>> F.cross_entropy(mt.zeros(2, 3), np.array([0, 2]), weight=np.array([1.0, 1, 3])).item()
    1.098...
    >>> F.cross_entropy(mt.zeros(2, 3, 5), np.zeros((2, 5), np.int64), class_axis=1).item()
    1.098...
    """
    logits, target = _class_axis_last("cross_entropy", logits, target, class_axis)
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
    return _weighted_cross_entropy(logits, target, weight, ignore_index, reduction,
                                   float(label_smoothing))


def _weighted_cross_entropy(logits, target, weight, ignore_index, reduction, eps):
    """cross_entropy with one weight per class, composed: log_softmax, then the weighted
    nll_loss (class ids) or weighted sum (probabilities), smoothing mixed in by `eps`."""
    n_classes = np.shape(getattr(logits, "data", logits))[-1]
    weight = _class_weights("cross_entropy", weight, n_classes)
    log_probs = log_softmax(logits, axis=-1)
    target_data = np.asarray(getattr(target, "data", target))
    if target_data.dtype.kind == "f" and target_data.shape == log_probs.shape:
        # Probability targets: -sum_c weight_c q_c log p_c per row, q smoothed.
        smoothed = add(mul(target, 1 - eps), eps / n_classes)
        losses = neg(sum(mul(log_probs, mul(smoothed, weight)), axis=-1))
        return losses if reduction == "none" else (
            sum(losses) if reduction == "sum" else mean(losses))
    picked = _nll_loss(log_probs, target_data, weight=weight, ignore_index=ignore_index,
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
