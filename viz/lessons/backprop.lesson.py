"""Forward and backward through attention: how dL/dW_q is computed, step by step: a literate
lesson (see viz.lessons.literate).

Run it: `python -m viz lesson backprop`; as a notebook: `python -m viz lesson backprop --notebook`.
"""
SUMMARY = ("forward and backward through attention: every backward step with its rule, dW_q "
           "via softmax, the graph and the HTML player")

# %% [markdown]
# # Forward and backward through attention
#
# The notes say (in Chinese): "在 Transformer 的注意力机制里 … 前向传播的时候，你会用这个 W
# 去对输入的查询和键进行线性变换，然后计算注意力分数，最后通过 softmax 得到一个注意力分布。" —
# *in the Transformer's attention, in the forward pass you use the weights W to project the
# input into queries and keys, then compute the attention scores, and softmax turns them
# into an attention distribution.* "在反向传播的时候 … 我们会先计算损失对 softmax 输出的梯度，
# 再根据链式法则一步步往回传播 … 最后 … 求出损失对 W 的梯度，也就是 dW。这个 dW 就是用来更新 W
# 的方向和大小。" — *in the backward pass we first compute the gradient of the loss with
# respect to softmax's output, then apply the chain rule step by step, back to the gradient
# of the loss with respect to W, dW: the direction and size of W's update.*
#
# This lesson runs that example for one attention head over the tokens 我 想 吃 ("I want to
# eat": 我 I, 想 want, 吃 eat). It prints every backward step with its rule, derives dW_q
# again by hand, checks it against finite differences, takes one step with it, and draws
# the route dW_q takes (loss → … → softmax → QK^T → Q → W_q).

# %% tags=["parameters"]
out_dir = None     # where the graph and the player go (default: lesson-output/backprop/)
step = False       # pause between backward steps (Enter: next, q: run to the end)
html = True        # this lesson always writes its step-through player; the notebook shows it

# %%
import math

import numpy as np

import microtensor as mt
import viz
from microtensor.autograd import topological_order
from viz.examples import backprop_example, backprop_forward, backprop_picture
from viz.graph import computed_from
from viz.lessons.common import check, fmt, laid_out_by, output_dir

out = output_dir("backprop", out_dir)
TOKENS = ["我", "想", "吃"]     # "I want to eat": one row of X each
D_MODEL, D_K = 4, 2             # the width of a token vector, and of a query or key

# %% [markdown]
# ## 1. Forward: project, score, softmax, mix, compare
#
# `backprop_example` draws X and the weights W_q, W_k, W_v from a seeded generator (the
# same numbers every time) and runs `backprop_forward`: Q, K, V = X W_q, X W_k, X W_v, then
# weights = softmax(Q K^T / √d_k), out = weights V, and loss = mean((out - target)²).
# (In Jupyter, `backprop_forward??` shows its code.)

# %%
loss, t, parts = backprop_example(len(TOKENS), D_MODEL, D_K)
X, W_q = t["X"], t["W_q"]
print(f"X (rows {' '.join(TOKENS)}, d_model={D_MODEL}) =\n{fmt(X)}")
print(f"Q = X W_q =\n{fmt(parts['Q'])}\nK = X W_k =\n{fmt(parts['K'])}")
print(f"weights = softmax(Q K^T / √{D_K}) =\n{fmt(parts['weights'])}")
print(f"out = weights V =\n{fmt(parts['out'])}")
print(f"loss = mean((out - target)^2) = {loss.item():.6f}")

# %% [markdown]
# ## 2. Backward, one node at a time
#
# `viz.step_through` runs the backward pass and prints each step: the op's rule, the
# gradient arriving at its output, and what it sends to each input. It starts at the loss
# and reaches W_q through softmax, exactly once.

# %%
if step:
    print("(Enter: next step, q + Enter: run to the end)")
steps = viz.step_through(loss, pause=step)
dW_q = W_q.grad.copy()
softmax_steps = [s for s in steps if s.node is not None and s.node.name == "softmax"]
check(len(softmax_steps) == 1, "one backward step goes through softmax")

# %% [markdown]
# ## 3. The same chain rule by hand (NumPy, float64)
#
# Each line undoes one forward operation, last first: the mean of the squared error, the
# product with V, softmax (its rule y * (g - sum(g * y)), from the softmax lesson), the
# 1/√d_k scale, Q K^T, and Q = X W_q.

# %%
K, V = parts["K"].data, parts["V"].data
weights, out_values = parts["weights"].data, parts["out"].data
g_out = 2 * (out_values - t["target"].data) / out_values.size   # d mean(e^2) / d out
g_weights = g_out @ V.T                                           # out = weights V
g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdims=True))  # softmax
g_QKt = g_scores / math.sqrt(D_K)                                 # the 1/√d_k scale
g_Q = g_QKt @ K                                                   # Q K^T
dW_q_by_hand = X.data.T @ g_Q                                     # Q = X W_q
print("dL/dout      = 2 (out - target) / n")
print(f"dL/dweights  = dL/dout V^T =\n{fmt(g_weights)}")
print(f"dL/dscores   = y * (g - sum(g * y))  (softmax rule) =\n{fmt(g_scores)}")
print("dL/dQ        = (dL/dscores / √d_k) K")
print(f"dL/dW_q      = X^T dL/dQ =\n{fmt(dW_q_by_hand)}")

# %% [markdown]
# The hand derivation agrees with the steps autograd took: what arrived at softmax, what
# softmax sent back, and the gradient left in W_q.grad.

# %%
softmax_step = softmax_steps[0]
check(np.allclose(softmax_step.grad_out, g_weights, atol=1e-12),
      "the gradient arriving at softmax's output is dL/dweights")
check(np.allclose(softmax_step.grads_in[0], g_scores, atol=1e-12),
      "softmax sends y * (g - sum(g*y)) back to the scores")
check(np.allclose(dW_q, dW_q_by_hand, atol=1e-12), "W_q.grad equals the hand-derived dW_q",
      f"max diff {np.abs(dW_q - dW_q_by_hand).max():.1e}")

# %% [markdown]
# And with finite differences: gradcheck nudges every weight both ways and compares the
# change in the loss with the gradient, for W_q, W_k and W_v at once.

# %%
def loss_of(W_q, W_k, W_v):
    """The loss as a function of the three weights (X and target fixed)."""
    return backprop_forward(X, W_q, W_k, W_v, t["target"])[0]


check(mt.gradcheck(loss_of, [t["W_q"], t["W_k"], t["W_v"]]),
      "dW_q, dW_k, dW_v pass gradcheck (central differences, float64)")

# %% [markdown]
# ## 4. dW is the direction and size of the update (更新 W 的方向和大小)
#
# "更新 W 的方向和大小" is the notes' *the direction and size of W's update*: a small step
# against dW_q lowers the loss. Try another learning rate `lr`.

# %%
lr = 0.5
with mt.no_grad():
    stepped = W_q.data - lr * dW_q
loss_after = loss_of(mt.tensor(stepped), t["W_k"].detach(), t["W_v"].detach()).item()
print(f"W_q ← W_q - {lr} dW_q:  loss {loss.item():.6f} → {loss_after:.6f}")
check(loss_after < loss.item(), "one step against the gradient lowers the loss")

# %% [markdown]
# ## 5. Pictures
#
# The route dW_q takes, read off a fresh graph: every op between W_q and the loss.

# %%
def route_to(root, target) -> list[str]:
    """The ops on the way from `target` up to `root`, in forward order."""
    return [f"{node.op.name} ({node.name})" if node.name else node.op.name
            for node in computed_from(topological_order(root), [target])]


loss, t, _ = backprop_example(len(TOKENS), D_MODEL, D_K)
route = route_to(loss, t["W_q"])
print("route of dW_q, forward order: W_q → " + " → ".join(route))
ops = [entry.split(" ")[0] for entry in route]
check("softmax" in ops and ops.index("softmax") < len(ops) - 1,
      "the route from the loss to W_q passes through softmax")

# %% [markdown]
# The graph after backward with that route lit (the picture at the top of the README), and
# the step-through player: the same backward pass, one step per click or ←/→ key.

# %%
svg = viz.render(backprop_picture(len(TOKENS), D_MODEL, D_K), out / "backprop-graph.svg")
loss, _, _ = backprop_example(len(TOKENS), D_MODEL, D_K)
page = viz.write_player(loss, out / "backprop.html",
                        title="Attention over 我 想 吃 (I want to eat): the backward pass, "
                              "step by step")
for path in (svg, page):
    check(path.exists() and path.stat().st_size > 0, f"wrote {path}", "", echo=None)
engine = laid_out_by()
print(f"graph (route to W_q highlighted; {engine}): {svg.resolve()}")
print(f"step-through player (open in a browser; ←/→ keys step; {engine}): {page.resolve()}")

# %%
numbers = {"loss": loss_of(t["W_q"], t["W_k"], t["W_v"]).item(), "loss_after": loss_after,
           "n_steps": len(steps), "dW_q": dW_q.tolist(),
           "dW_q_error": float(np.abs(dW_q - dW_q_by_hand).max()), "route": route,
           "files": [str(svg), str(page)]}
