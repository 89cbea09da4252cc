"""Forward and backward through attention: how dL/dW_q is computed, step by step.

Notes: "前向传播的时候，你会用这个 W 去对输入的查询和键进行线性变换，然后计算注意力分数，
最后通过 softmax 得到一个注意力分布。在反向传播的时候 … 先计算损失对 softmax 输出的梯度，
再根据链式法则一步步往回传播 … 最后求出损失对 W 的梯度，也就是 dW。这个 dW 就是用来更新 W
的方向和大小。"

This lesson runs that example for one attention head over 我 想 吃, prints every backward
step with its rule, draws the route dW_q takes (loss → … → softmax → QK^T → Q → W_q),
checks dW_q by hand and against finite differences, and writes a step-through web page.
"""
from __future__ import annotations

import math

import numpy as np

import microtensor as mt
import viz
from microtensor.autograd import backward_steps, topological_order
from transformer.attention import scaled_dot_product_attention
from viz.graph import computed_from

from .common import EchoStream, check, fmt, heading, laid_out_by, output_dir

NAME = "backprop"
SUMMARY = "forward and backward through attention: every backward step with its rule, dW_q via softmax, the graph and the HTML player"

TOKENS = ["我", "想", "吃"]
D_MODEL, D_K = 4, 2


def leaves(dtype=np.float64) -> dict:
    """The inputs and weights, the same numbers every call (seeded)."""
    rng = np.random.default_rng(0)
    names = {"X": (len(TOKENS), D_MODEL), "W_q": (D_MODEL, D_K), "W_k": (D_MODEL, D_K),
             "W_v": (D_MODEL, D_K)}
    tensors = {name: mt.tensor(rng.standard_normal(shape), dtype=dtype, name=name,
                               requires_grad=name != "X") for name, shape in names.items()}
    tensors["target"] = mt.tensor(rng.standard_normal((len(TOKENS), D_K)), dtype=dtype,
                                  name="target")
    return tensors


def forward(X, W_q, W_k, W_v, target):
    """loss = mean((softmax(Q K^T / √d_k) V - target)^2), Q, K, V = X W_q, X W_k, X W_v."""
    Q, K, V = X @ W_q, X @ W_k, X @ W_v
    Q.name, K.name, V.name = "Q", "K", "V"
    # Attention names what it makes (QK^T -> scores -> weights), so the graph and the
    # steps read like the math.
    out, weights = scaled_dot_product_attention(Q, K, V)
    out.name = "out"
    error = out - target
    squared = error ** 2
    loss = squared.mean()
    error.name, squared.name, loss.name = "error", "error^2", "loss"
    return loss, {"Q": Q, "K": K, "V": V, "weights": weights, "out": out}


def fresh_graph():
    t = leaves()
    loss, parts = forward(t["X"], t["W_q"], t["W_k"], t["W_v"], t["target"])
    return loss, t, parts


def picture():
    """The graph after backward with the route to W_q lit: the picture at the top of the
    README (viz/assets/backprop-graph.svg)."""
    loss, t, _ = fresh_graph()
    return viz.draw(loss, highlight=t["W_q"], steps=list(backward_steps(loss)),
                    title="How dL/dW_q flows back: loss → mean → (out - target)^2 → "
                          "weights V → softmax → QK^T/√d_k → Q → W_q")


def route_to(root, target) -> list[str]:
    """The ops on the way from `target` up to `root`, in forward order."""
    return [f"{t.op.name} ({t.name})" if t.name else t.op.name
            for t in computed_from(topological_order(root), [target])]


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    loss, t, parts = fresh_graph()
    X, W_q = t["X"], t["W_q"]
    echo("在 Transformer 的注意力机制里: forward uses the weights W to project the input into")
    echo("queries and keys, scores them, and softmax turns the scores into an attention")
    echo("distribution. Backward starts from dL/d(softmax output) and applies the chain rule")
    echo("node by node until it reaches dL/dW (dW), the direction and size of W's update.")

    heading(echo, "1. forward: project, score, softmax, mix, compare")
    echo(f"X (rows {' '.join(TOKENS)}, d_model={D_MODEL}) =\n{fmt(X)}")
    echo(f"Q = X W_q =\n{fmt(parts['Q'])}\nK = X W_k =\n{fmt(parts['K'])}")
    echo(f"weights = softmax(Q K^T / √{D_K}) =\n{fmt(parts['weights'])}")
    echo(f"out = weights V =\n{fmt(parts['out'])}")
    echo(f"loss = mean((out - target)^2) = {loss.item():.6f}")

    heading(echo, "2. backward, one node at a time (each op's rule, the gradients it sends)")
    if step:
        echo("(Enter: next step, q + Enter: run to the end)")
    steps = viz.step_through(loss, pause=step, file=EchoStream(echo))
    dW_q = W_q.grad.copy()
    softmax_steps = [s for s in steps if s.node is not None and s.node.name == "softmax"]
    check(len(softmax_steps) == 1, "one backward step goes through softmax", "", echo)

    heading(echo, "3. the same chain rule by hand (NumPy, float64)")
    K, V = parts["K"].data, parts["V"].data
    weights, out_values = parts["weights"].data, parts["out"].data
    g_out = 2 * (out_values - t["target"].data) / out_values.size   # d mean(e^2) / d out
    g_weights = g_out @ V.T                                           # out = weights V
    g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdims=True))  # softmax
    g_QKt = g_scores / math.sqrt(D_K)                                 # the 1/√d_k scale
    g_Q = g_QKt @ K                                                   # Q K^T
    dW_q_by_hand = X.data.T @ g_Q                                     # Q = X W_q
    echo("dL/dout      = 2 (out - target) / n")
    echo(f"dL/dweights  = dL/dout V^T =\n{fmt(g_weights)}")
    echo(f"dL/dscores   = y * (g - sum(g * y))  (softmax rule) =\n{fmt(g_scores)}")
    echo("dL/dQ        = (dL/dscores / √d_k) K")
    echo(f"dL/dW_q      = X^T dL/dQ =\n{fmt(dW_q_by_hand)}")
    softmax_step = softmax_steps[0]
    check(np.allclose(softmax_step.grad_out, g_weights, atol=1e-12),
          "the gradient arriving at softmax's output is dL/dweights", "", echo)
    check(np.allclose(softmax_step.grads_in[0], g_scores, atol=1e-12),
          "softmax sends y * (g - sum(g*y)) back to the scores", "", echo)
    check(np.allclose(dW_q, dW_q_by_hand, atol=1e-12), "W_q.grad equals the hand-derived "
          "dW_q", f"max diff {np.abs(dW_q - dW_q_by_hand).max():.1e}", echo)

    def loss_of(W_q, W_k, W_v):
        return forward(X, W_q, W_k, W_v, t["target"])[0]
    check(mt.gradcheck(loss_of, [t["W_q"], t["W_k"], t["W_v"]]),
          "dW_q, dW_k, dW_v pass gradcheck (central differences, float64)", "", echo)

    heading(echo, "4. dW is the direction and size of the update (更新 W 的方向和大小)")
    lr = 0.5
    with mt.no_grad():
        stepped = W_q.data - lr * dW_q
    loss_after = loss_of(mt.tensor(stepped), t["W_k"].detach(), t["W_v"].detach()).item()
    echo(f"W_q ← W_q - {lr} dW_q:  loss {loss.item():.6f} → {loss_after:.6f}")
    check(loss_after < loss.item(), "one step against the gradient lowers the loss", "", echo)

    heading(echo, "5. pictures")
    loss, t, _ = fresh_graph()
    route = route_to(loss, t["W_q"])
    echo("route of dW_q, forward order: W_q → " + " → ".join(route))
    ops = [entry.split(" ")[0] for entry in route]
    check("softmax" in ops and ops.index("softmax") < len(ops) - 1,
          "the route from the loss to W_q passes through softmax", "", echo)
    svg = viz.render(picture(), out / "backprop-graph.svg")
    loss, _, _ = fresh_graph()
    page = viz.write_player(loss, out / "backprop.html",
                            title="Attention over 我 想 吃: the backward pass, step by step")
    for path in (svg, page):
        check(path.exists() and path.stat().st_size > 0, f"wrote {path}", "", None)
    engine = laid_out_by()
    echo(f"graph (route to W_q highlighted; {engine}): {svg.resolve()}")
    echo(f"step-through player (open in a browser; ←/→ keys step; {engine}): "
         f"{page.resolve()}")
    return {"loss": loss_of(t["W_q"], t["W_k"], t["W_v"]).item(), "loss_after": loss_after,
            "n_steps": len(steps), "dW_q": dW_q.tolist(),
            "dW_q_error": float(np.abs(dW_q - dW_q_by_hand).max()), "route": route,
            "files": [str(svg), str(page)]}
