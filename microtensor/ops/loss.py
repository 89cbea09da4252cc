"""Losses beyond cross_entropy (which is in nn.py): binary cross-entropy on
probabilities and on logits, and the negative log-likelihood of log-probabilities.
Each reduces with "mean" (the default), "sum" or "none", as in PyTorch.
"""
import numpy as np

from ..autograd import primitive
from ..errors import describe, op_error
from .neural import _check_targets, check_reduction, reduce_losses


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
           rule="dx = g * (sigmoid(x) - t) ;  dt = -g * x")
def binary_cross_entropy_with_logits(logits, target, *, reduction="mean"):
    """binary_cross_entropy(sigmoid(x), t) in one stable node:
    max(x, 0) - x t + log(1 + exp(-|x|)), which never overflows."""
    check_reduction("binary_cross_entropy_with_logits", reduction)
    _check_pair("binary_cross_entropy_with_logits", logits, target, "logits")
    losses = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    out, scale = _reduce(losses, reduction)
    def backward(g):
        g = g * scale
        probs = 0.5 * (np.tanh(0.5 * logits) + 1)   # sigmoid, stable
        return g * (probs - target), -g * logits
    return np.asarray(out, dtype=losses.dtype), backward


@primitive("nll_loss", rule="dx = -g * onehot(target) / n_counted")
def nll_loss(log_probs, target, *, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood: -log_probs[..., target], for log-probabilities (..., C)
    (e.g. from log_softmax) and integer targets (...). The class axis is the last one, as
    in our cross_entropy (PyTorch puts it second). cross_entropy(x, t) ==
    nll_loss(log_softmax(x), t)."""
    target = np.asarray(target)
    check_reduction("nll_loss", reduction)
    if np.ndim(log_probs) == 0 or log_probs.shape[:-1] != target.shape:
        raise op_error("nll_loss", f"log-probabilities {np.shape(log_probs)} need targets of "
                       f"shape {np.shape(log_probs)[:-1]} (one class id per row; the class "
                       f"axis is the last), got {target.shape}")
    n_classes = log_probs.shape[-1]
    valid = _check_targets("nll_loss", target, n_classes, ignore_index)
    safe_target = np.where(valid, target, 0)[..., None]
    picked = np.take_along_axis(log_probs, safe_target, axis=-1)[..., 0]
    losses = np.where(valid, -picked, 0).astype(log_probs.dtype)
    n_counted = int(valid.sum())
    out = reduce_losses(losses, n_counted, reduction)
    def backward(g):
        weight = -valid.astype(log_probs.dtype) * g
        if reduction == "mean":
            weight /= max(n_counted, 1)
        grad = np.zeros(log_probs.shape, dtype=weight.dtype)
        np.put_along_axis(grad, safe_target, weight[..., None], axis=-1)
        return grad, None
    return np.asarray(out, dtype=log_probs.dtype), backward
