"""Softmax: exponentials, then normalisation — and why the stable form and the backward
rule are what they are.

Notes: "Softmax 本质上使用的是指数函数 … 所有输出的值都会在 0 到 1 之间，并且总和为 1 …
用指数函数来放大数值的差异，然后再归一化成概率分布。"
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt

from ..heatmap import heatmap_svg
from .common import check, fmt, heading, output_dir, step_and_play

NAME = "softmax"
SUMMARY = "softmax = exp then normalise: outputs in (0,1) sum to 1, the stable form, its Jacobian"


def naive_softmax(x: np.ndarray) -> np.ndarray:
    """exp(x) / sum(exp(x)) exactly as written: overflows once x passes ~88 in float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum()


def jacobian_by_autograd(x: np.ndarray) -> np.ndarray:
    """J[i, j] = dy_i / dx_j, one backward pass per output i (g = one-hot at i)."""
    rows = []
    for i in range(x.size):
        x_leaf = mt.tensor(x, requires_grad=True)
        y = mt.softmax(x_leaf, axis=-1)
        y.backward(np.eye(x.size, dtype=x.dtype)[i])
        rows.append(x_leaf.grad)
    return np.stack(rows)


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    echo("Softmax turns any list of scores into a probability distribution:")
    echo("  y_i = exp(x_i) / sum_j exp(x_j)      (先取指数，再归一化)")

    heading(echo, "1. exponentials, then normalisation")
    x = np.array([2.0, 1.0, 0.1])
    exps = [math.exp(v) for v in x]
    total = sum(exps)
    by_hand = np.array([e / total for e in exps])
    echo(f"x            = {fmt(x)}")
    echo(f"exp(x)       = {fmt(exps)}")
    echo(f"sum          = {total:.4f}")
    echo(f"exp(x) / sum = {fmt(by_hand)}")
    y = mt.softmax(mt.tensor(x), axis=-1).data
    check(np.allclose(y, by_hand, atol=1e-12), "mt.softmax equals the hand computation",
          f"max diff {np.abs(y - by_hand).max():.1e}", echo)
    check(((y > 0) & (y < 1)).all(), "every output lies in (0, 1)", fmt(y), echo)
    check(abs(y.sum() - 1) < 1e-12, "the outputs sum to 1", f"sum = {y.sum():.15f}", echo)
    ratio, gap = y[0] / y[1], x[0] - x[1]
    check(abs(ratio - math.exp(gap)) < 1e-9,
          "the exponential amplifies differences: y_0 / y_1 = exp(x_0 - x_1)",
          f"{ratio:.4f} = exp({gap:g})", echo)

    heading(echo, "2. the naive formula overflows; subtracting the max does not")
    big = np.array([1000.0, 1001.0, 1002.0])
    naive = naive_softmax(big)
    with np.errstate(over="ignore"):
        echo(f"x = {fmt(big)}:  exp(x) = {fmt(np.exp(big))}")
    echo(f"naive exp(x)/sum(exp(x))  = {fmt(naive)}     (inf / inf = nan)")
    stable = mt.softmax(mt.tensor(big), axis=-1).data
    echo(f"stable exp(x - max)/sum    = {fmt(stable)}")
    echo("exp(x - m) / sum exp(x - m) = exp(x)/sum exp(x): the factor exp(-m) cancels, and")
    echo("the largest exponent is exp(0) = 1, so nothing can overflow.")
    check(np.isnan(naive).all(), "the naive form gives nan for [1000, 1001, 1002]",
          fmt(naive), echo)
    check(np.isfinite(stable).all() and abs(stable.sum() - 1) < 1e-12,
          "the stable form is finite and sums to 1", fmt(stable), echo)
    small = naive_softmax(big - 1000)
    check(np.allclose(stable, small, atol=1e-15),
          "softmax is shift-invariant: softmax([1000,1001,1002]) = softmax([0,1,2])",
          fmt(small), echo)

    heading(echo, "3. the Jacobian and the backward rule")
    echo("dy_i/dx_j = y_i (δ_ij - y_j), i.e. J = diag(y) - y y^T (symmetric).")
    x = np.array([0.5, -1.0, 2.0, 0.0])
    y = mt.softmax(mt.tensor(x), axis=-1).data
    J_formula = np.diag(y) - np.outer(y, y)
    J_autograd = jacobian_by_autograd(x)
    echo(f"y = {fmt(y)}")
    echo("J = diag(y) - y y^T =\n" + fmt(J_formula))
    jac_err = float(np.abs(J_formula - J_autograd).max())
    check(jac_err < 1e-12, "backward, one output at a time, reproduces diag(y) - y y^T",
          f"max diff {jac_err:.1e}", echo)
    check(np.allclose(J_formula.sum(axis=0), 0, atol=1e-12),
          "each column of J sums to 0 (the outputs always sum to 1, so their total "
          "cannot change)", fmt(J_formula.sum(axis=0)), echo)
    g = np.array([1.0, -2.0, 0.5, 3.0])
    rule = y * (g - np.sum(g * y))
    echo(f"rule  {mt.softmax.rule}")
    echo(f"g = {fmt(g)}:  rule gives {fmt(rule)},  J^T g = {fmt(J_formula.T @ g)}")
    rule_err = float(np.abs(rule - J_formula.T @ g).max())
    check(rule_err < 1e-12, "the O(n) rule y * (g - sum(g*y)) equals the O(n^2) J^T g",
          f"max diff {rule_err:.1e}", echo)
    x_leaf = mt.tensor(x, requires_grad=True)
    mt.softmax(x_leaf, axis=-1).backward(g)
    check(np.allclose(x_leaf.grad, rule, atol=1e-12), "mt.softmax's backward applies that rule",
          fmt(x_leaf.grad), echo)
    batch = mt.tensor(np.random.default_rng(0).standard_normal((3, 5)), requires_grad=True)
    for axis in (-1, 0):
        check(mt.gradcheck(lambda t, axis=axis: mt.softmax(t, axis=axis), [batch]),
              f"gradcheck (float64 finite differences) passes for a (3, 5) input, axis={axis}",
              "", echo)

    picture = heatmap_svg(J_formula, out / "softmax-jacobian.svg",
                          title="softmax Jacobian  J = diag(y) - y y^T",
                          row_labels=[f"y{i}" for i in range(4)],
                          col_labels=[f"x{j}" for j in range(4)])
    echo(f"\nwrote {picture}")

    def build():
        logits = mt.tensor(x, requires_grad=True, name="x")
        probs = mt.softmax(logits, axis=-1)
        probs.name = "y"
        return (probs * mt.tensor(g, name="g")).sum()
    extras = step_and_play(build, out / "softmax.html", step=step, html=html, echo=echo,
                           title="softmax backward: dx = y * (g - sum(g*y))")
    return {"probs": y.tolist(), "probs_sum": float(y.sum()), "naive": naive.tolist(),
            "stable": stable.tolist(), "jacobian_error": jac_err, "rule_error": rule_err,
            "gradcheck": True, "files": [str(p) for p in [picture, *extras]]}
