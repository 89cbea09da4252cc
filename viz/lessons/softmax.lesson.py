"""Softmax: exponentials, then normalisation, and why the stable form and the backward rule
are what they are: a literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson softmax`; as a notebook: `python -m viz lesson softmax --notebook`.
"""
SUMMARY = "softmax = exp then normalise: outputs in (0,1) sum to 1, the stable form, its Jacobian"

# %% [markdown]
# # Softmax: exponentials, then normalisation
#
# The notes say (in Chinese): "Softmax 本质上使用的是指数函数 … 所有输出的值都会在 0 到 1 之间，
# 并且总和为 1 … 用指数函数来放大数值的差异，然后再归一化成概率分布。" — *softmax is at heart
# the exponential function … every output lies between 0 and 1, and they sum to 1 … it
# uses the exponential to amplify the differences between the numbers, then normalises them
# into a probability distribution.*
#
# Softmax turns any list of scores into a probability distribution:
#
#     y_i = exp(x_i) / sum_j exp(x_j)      (先取指数，再归一化: first exponentials, then normalise)
#
# This lesson checks each of those claims, then shows why the formula is computed with the
# maximum subtracted, and where the backward rule y * (g - sum(g * y)) comes from. Change
# the scores below and run the cells again.

# %% tags=["parameters"]
out_dir = None     # where the pictures go (default: lesson-output/softmax/)
step = False       # walk the backward pass step by step in the terminal
html = True        # write the step-through player (in the notebook it shows below)

# %%
import math

import numpy as np

import microtensor as mt
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, output_dir, step_and_play

out = output_dir("softmax", out_dir)

# %% [markdown]
# ## 1. Exponentials, then normalisation
#
# By hand first, with Python's `math.exp`: take the exponential of each score, add them up,
# divide each by the sum.

# %%
x = np.array([2.0, 1.0, 0.1])     # three scores
exps = [math.exp(v) for v in x]
total = sum(exps)
by_hand = np.array([e / total for e in exps])
print(f"x            = {fmt(x)}")
print(f"exp(x)       = {fmt(exps)}")
print(f"sum          = {total:.4f}")
print(f"exp(x) / sum = {fmt(by_hand)}")

# %% [markdown]
# microtensor's `mt.softmax` gives the same numbers, each in (0, 1), summing to 1.

# %%
y = mt.softmax(mt.tensor(x), axis=-1).data
check(np.allclose(y, by_hand, atol=1e-12), "mt.softmax equals the hand computation",
      f"max diff {np.abs(y - by_hand).max():.1e}")
check(((y > 0) & (y < 1)).all(), "every output lies in (0, 1)", fmt(y))
check(abs(y.sum() - 1) < 1e-12, "the outputs sum to 1", f"sum = {y.sum():.15f}")

# %% [markdown]
# "放大数值的差异" (*amplify the differences*): the ratio of two outputs is the exponential of
# the gap between their scores, so a gap of 1 becomes a factor of e ≈ 2.72, and a gap of 5 a
# factor of about 148.

# %%
ratio, gap = y[0] / y[1], x[0] - x[1]
check(abs(ratio - math.exp(gap)) < 1e-9,
      "the exponential amplifies differences: y_0 / y_1 = exp(x_0 - x_1)",
      f"{ratio:.4f} = exp({gap:g})")

# %% [markdown]
# ## 2. The naive formula overflows; subtracting the max does not
#
# exp(x) overflows once x passes about 709 in float64 (about 88 in float32): the formula as
# written then divides inf by inf.

# %%
def naive_softmax(x: np.ndarray) -> np.ndarray:
    """exp(x) / sum(exp(x)) exactly as written: overflows once x passes ~88 in float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum()


big = np.array([1000.0, 1001.0, 1002.0])
naive = naive_softmax(big)
with np.errstate(over="ignore"):
    print(f"x = {fmt(big)}:  exp(x) = {fmt(np.exp(big))}")
print(f"naive exp(x)/sum(exp(x))  = {fmt(naive)}     (inf / inf = nan)")

# %% [markdown]
# mt.softmax subtracts the largest score m first: exp(x - m) / sum exp(x - m) equals
# exp(x) / sum exp(x), because the factor exp(-m) cancels, and the largest exponent is
# exp(0) = 1, so nothing can overflow.

# %%
stable = mt.softmax(mt.tensor(big), axis=-1).data
print(f"stable exp(x - max)/sum    = {fmt(stable)}")

# %%
check(np.isnan(naive).all(), "the naive form gives nan for [1000, 1001, 1002]", fmt(naive))
check(np.isfinite(stable).all() and abs(stable.sum() - 1) < 1e-12,
      "the stable form is finite and sums to 1", fmt(stable))
small = naive_softmax(big - 1000)
check(np.allclose(stable, small, atol=1e-15),
      "softmax is shift-invariant: softmax([1000,1001,1002]) = softmax([0,1,2])", fmt(small))

# %% [markdown]
# ## 3. The Jacobian and the backward rule
#
# dy_i/dx_j = y_i (δ_ij - y_j), i.e. J = diag(y) - y y^T (symmetric). Four new scores:

# %%
x = np.array([0.5, -1.0, 2.0, 0.0])
y = mt.softmax(mt.tensor(x), axis=-1).data
J_formula = np.diag(y) - np.outer(y, y)
print(f"y = {fmt(y)}")
print("J = diag(y) - y y^T =\n" + fmt(J_formula))

# %% [markdown]
# Autograd gives J one row at a time: a backward pass with the gradient g one-hot at output
# i puts row i of J (dy_i/dx_j for every j) in x.grad.

# %%
def jacobian_by_autograd(x: np.ndarray) -> np.ndarray:
    """J[i, j] = dy_i / dx_j, one backward pass per output i (g = one-hot at i)."""
    rows = []
    for i in range(x.size):
        x_leaf = mt.tensor(x, requires_grad=True)
        y = mt.softmax(x_leaf, axis=-1)
        y.backward(np.eye(x.size, dtype=x.dtype)[i])
        rows.append(x_leaf.grad)
    return np.stack(rows)


J_autograd = jacobian_by_autograd(x)
jac_err = float(np.abs(J_formula - J_autograd).max())
check(jac_err < 1e-12, "backward, one output at a time, reproduces diag(y) - y y^T",
      f"max diff {jac_err:.1e}")
check(np.allclose(J_formula.sum(axis=0), 0, atol=1e-12),
      "each column of J sums to 0 (the outputs always sum to 1, so their total "
      "cannot change)", fmt(J_formula.sum(axis=0)))

# %% [markdown]
# The backward pass never builds J (n² numbers): J^T g = y * g - y (y·g), which is the
# rule y * (g - sum(g * y)), O(n). Here g is any gradient arriving at the output.

# %%
g = np.array([1.0, -2.0, 0.5, 3.0])
rule = y * (g - np.sum(g * y))
print(f"rule  {mt.softmax.rule}")
print(f"g = {fmt(g)}:  rule gives {fmt(rule)},  J^T g = {fmt(J_formula.T @ g)}")
rule_err = float(np.abs(rule - J_formula.T @ g).max())
check(rule_err < 1e-12, "the O(n) rule y * (g - sum(g*y)) equals the O(n^2) J^T g",
      f"max diff {rule_err:.1e}")
x_leaf = mt.tensor(x, requires_grad=True)
mt.softmax(x_leaf, axis=-1).backward(g)
check(np.allclose(x_leaf.grad, rule, atol=1e-12), "mt.softmax's backward applies that rule",
      fmt(x_leaf.grad))

# %% [markdown]
# And against finite differences, on a batch of rows, along either axis:

# %%
batch = mt.tensor(np.random.default_rng(0).standard_normal((3, 5)), requires_grad=True)
for axis in (-1, 0):
    check(mt.gradcheck(lambda t, axis=axis: mt.softmax(t, axis=axis), [batch]),
          f"gradcheck (float64 finite differences) passes for a (3, 5) input, axis={axis}")

# %% [markdown]
# ## The pictures
#
# The Jacobian as a heatmap (positive on the diagonal, negative off it), and the backward
# pass of sum(softmax(x) * g), whose gradient at x is the rule above, step by step.

# %%
picture = heatmap_svg(J_formula, out / "softmax-jacobian.svg",
                      title="softmax Jacobian  J = diag(y) - y y^T",
                      row_labels=[f"y{i}" for i in range(x.size)],
                      col_labels=[f"x{j}" for j in range(x.size)])
print(f"wrote {picture}")

# %%
def build():
    """A fresh graph whose backward sends g into softmax: loss = sum(softmax(x) * g)."""
    logits = mt.tensor(x, requires_grad=True, name="x")
    probs = mt.softmax(logits, axis=-1)
    probs.name = "y"
    return (probs * mt.tensor(g, name="g")).sum()


extras = step_and_play(build, out / "softmax.html", step=step, html=html, echo=print,
                       title="softmax backward: dx = y * (g - sum(g*y))")

# %%
numbers = {"probs": y.tolist(), "probs_sum": float(y.sum()), "naive": naive.tolist(),
           "stable": stable.tolist(), "jacobian_error": jac_err, "rule_error": rule_err,
           "gradcheck": True, "files": [str(p) for p in [picture, *extras]]}
