"""Q, K, V: three learned projections of the same input, and W_V as a filter.

Notes: "Q、K、V 都来自同一个输入，通过三组不同的线性变换得到。 Q = XWq, K = XWk, V = XWv"
and "W_V 像是一个'过滤器'": 苹果's embedding X = [1, 2, 0, 0] (two fruit dimensions, two
tech-company dimensions) times a trained W_V gives V = [3, 3, 0, 0]. "W_V 不是计算出来的，
而是学习出来的权重参数": it starts random and backpropagation adjusts it.
"""
from __future__ import annotations

import numpy as np

import microtensor as mt
from microtensor import nn

from ..heatmap import heatmap_svg
from .common import check, fmt, heading, output_dir, step_and_play

NAME = "qkv"
SUMMARY = "Q = XW_q, K = XW_k, V = XW_v from one input; W_V filters 苹果 [1,2,0,0] -> [3,3,0,0]; W_V is learned"

TOKENS = ["我", "想", "吃", "苹果"]
# The notes' filter: keep the two fruit dimensions (summed into both outputs), drop the
# two tech-company dimensions. Only the first two rows are non-zero.
W_V_FILTER = np.array([[1, 1, 0, 0],
                       [1, 1, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]], dtype=np.float32)


def projections(echo) -> dict:
    heading(echo, "1. Q, K, V come from the same X through three projections")
    mt.manual_seed(0)
    X = mt.randn(len(TOKENS), 4, name="X")  # one 4-dim embedding per token (rows)
    W_q, W_k, W_v = (nn.Linear(4, 4, bias=False) for _ in range(3))
    Q, K, V = W_q(X), W_k(X), W_v(X)
    echo("X (rows: " + " ".join(TOKENS) + ") =\n" + fmt(X))
    for name, result, layer in (("Q", Q, W_q), ("K", K, W_k), ("V", V, W_v)):
        echo(f"{name} = X @ W_{name.lower()} =\n{fmt(result)}")
        check(np.allclose(result.data, X.data @ layer.weight.data, atol=1e-6),
              f"{name} is X @ W_{name.lower()} (a Linear layer without bias)", "", echo)
    check(not np.allclose(Q.data, K.data) and not np.allclose(K.data, V.data),
          "one input, three different weight matrices: Q, K and V differ", "", echo)
    row = 3
    check(np.allclose(Q.data[row], X.data[row] @ W_q.weight.data, atol=1e-6),
          f"each token is projected on its own: q_{TOKENS[row]} = x_{TOKENS[row]} @ W_q", "",
          echo)
    echo("Q asks 'what am I looking for', K says 'what I can be found by' (索引标签),")
    echo("V carries 'what I hand over when found' (实际内容).")
    return {"Q_shape": Q.shape, "K_shape": K.shape, "V_shape": V.shape}


def value_filter(echo) -> dict:
    heading(echo, "2. W_V as a filter (过滤器): 苹果 in a recipe layer")
    apple = mt.tensor([1.0, 2.0, 0.0, 0.0], name="X_苹果")
    echo("X_苹果 = [1, 2, 0, 0]   (dims 0-1: fruit features, dims 2-3: tech-company features)")
    echo("W_V =\n" + fmt(W_V_FILTER))
    V = apple @ mt.tensor(W_V_FILTER)
    echo(f"V = X @ W_V = {fmt(V)}")
    echo("  V[0] = 1*1 + 2*1 + 0*0 + 0*0 = 3,   V[1] = 1*1 + 2*1 = 3,   V[2] = V[3] = 0")
    check(np.array_equal(V.data, [3, 3, 0, 0]), "[1, 2, 0, 0] @ W_V = [3, 3, 0, 0] exactly",
          fmt(V), echo)
    company = mt.tensor([0.0, 0.0, 2.0, 1.0])
    V_company = company @ mt.tensor(W_V_FILTER)
    echo(f"an embedding that is all company (乔布斯, 公司) [0, 0, 2, 1] @ W_V = {fmt(V_company)}")
    check(np.array_equal(V_company.data, [0, 0, 0, 0]),
          "the tech-company dimensions are filtered out (抹杀后两维)", "", echo)
    return {"V": V.data.tolist(), "V_company": V_company.data.tolist()}


def learning(echo, out) -> dict:
    heading(echo, "3. W_V is learned: gradient descent turns a random W_V into the filter")
    echo("Task: 8 four-token sentences with random embeddings and fixed attention weights A.")
    echo("The layer's output Z = A @ (X @ W_V) should carry only the fruit features, i.e.")
    echo("match Z* = A @ (X @ W_filter). Loss = mean((Z - Z*)^2); update W_V -= lr * dW_V.")
    rng = np.random.default_rng(1)
    X = mt.tensor(rng.standard_normal((8, 4, 4)))
    A = mt.softmax(mt.tensor(rng.standard_normal((8, 4, 4))), axis=-1)
    target = A @ (X @ mt.tensor(W_V_FILTER.astype(np.float64)))
    W_V = mt.tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True, name="W_V")
    lr, steps = 0.5, 200

    def loss_of(W):
        return ((A @ (X @ W) - target) ** 2).mean()

    before = W_V.data.copy()
    echo("W_V before (random) =\n" + fmt(before))
    check(mt.gradcheck(loss_of, [W_V]), "dLoss/dW_V from backward matches finite "
          "differences (gradcheck, float64)", "", echo)
    losses = []
    for step in range(steps):
        W_V.grad = None
        loss = loss_of(W_V)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            first_grad = W_V.grad.copy()
            echo(f"step 0: loss = {losses[0]:.4f}, gradient dLoss/dW_V =\n" + fmt(first_grad))
            # By hand: Z = (A X) W, so dW = (A X)^T dZ summed over sentences,
            # with dZ = 2 (Z - Z*) / n for a mean over n numbers.
            AX = (A @ X).data
            dZ = 2 * (AX @ before - target.data) / target.data.size
            by_hand = np.einsum("bti,btj->ij", AX, dZ)
            check(np.allclose(first_grad, by_hand, atol=1e-12),
                  "the gradient equals (A X)^T · 2(Z - Z*)/n computed by hand", "", echo)
        with mt.no_grad():
            W_V.data -= lr * W_V.grad
        if step == 0:
            echo(f"after one step W_V - lr * dW_V =\n{fmt(W_V.data)}")
            check(np.allclose(W_V.data, before - lr * first_grad), "one step moved W_V by "
                  f"-lr * gradient (lr = {lr})", "", echo)
            distance = [np.abs(w - W_V_FILTER).sum() for w in (before, W_V.data)]
            check(distance[1] < distance[0], "that step moved W_V toward the filter",
                  f"sum |W_V - W_filter|: {distance[0]:.3f} → {distance[1]:.3f}", echo)
    after = W_V.data.copy()
    echo(f"loss: {losses[0]:.4f} (step 0) → {losses[9]:.4f} (step 9) → "
         f"{losses[-1]:.2e} (step {steps - 1})")
    echo(f"W_V after {steps} steps =\n{fmt(after, 3)}")
    apple_v = np.array([1.0, 2.0, 0.0, 0.0]) @ after
    echo(f"[1, 2, 0, 0] @ learned W_V = {fmt(apple_v, 3)}")
    check(losses[-1] < losses[0] * 1e-3, "training drove the loss down by 1000x",
          f"{losses[0]:.3g} → {losses[-1]:.3g}", echo)
    error = float(np.abs(after - W_V_FILTER).max())
    check(error < 0.05, "the learned W_V is the filter: first two rows ≈ [1, 1, 0, 0], "
          "last two rows ≈ 0", f"max |W_V - W_filter| = {error:.4f}", echo)
    check(np.allclose(apple_v, [3, 3, 0, 0], atol=0.1),
          "and the learned W_V maps 苹果 [1, 2, 0, 0] to ≈ [3, 3, 0, 0]", fmt(apple_v, 3), echo)
    pictures = [heatmap_svg(m, out / f"qkv-W_V-{tag}.svg", title=f"W_V {tag}",
                            row_labels=["fruit 0", "fruit 1", "tech 2", "tech 3"],
                            col_labels=["v0", "v1", "v2", "v3"])
                for m, tag in ((before, "before"), (first_grad, "gradient-step-0"),
                               (after, "after"))]
    for picture in pictures:
        echo(f"wrote {picture}")
    return {"losses": [losses[0], losses[-1]], "W_V_error": error,
            "apple_v_learned": apple_v.tolist(), "files": [str(p) for p in pictures]}


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    echo("Attention is a retrieval (信息检索): Q = query, K = index label, V = content.")
    results = projections(echo)
    results.update(value_filter(echo))
    results.update(learning(echo, out))

    def build():
        X = mt.tensor([[1.0, 2.0, 0.0, 0.0]], name="X_苹果")
        W_V = mt.tensor(np.eye(4), requires_grad=True, name="W_V")
        V = X @ W_V
        V.name = "V"
        return ((V - mt.tensor([[3.0, 3.0, 0.0, 0.0]], name="V_target")) ** 2).mean()
    results["files"] += [str(p) for p in step_and_play(
        build, out / "qkv.html", step=step, html=html, echo=echo,
        title="learning W_V: dW_V = X^T dV for 苹果 [1, 2, 0, 0] → [3, 3, 0, 0]")]
    echo("Embedding is 'who I am'; V is 'what I can contribute in this layer's discussion'.")
    return results
