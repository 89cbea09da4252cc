"""Q, K, V: three learned projections of the same input, and W_V as a filter; a literate
lesson (see viz.lessons.literate).

Run it: `python -m viz lesson qkv`; as a notebook: `python -m viz lesson qkv --notebook`.
"""
SUMMARY = ("Q = XW_q, K = XW_k, V = XW_v from one input; W_V filters 苹果 [1,2,0,0] -> "
           "[3,3,0,0]; W_V is learned")

# %% [markdown]
# # Q, K, V: three learned projections of the same input
#
# The notes (in Chinese): "Attention机制本质是一个信息检索过程" — *attention is at heart a
# retrieval of information (信息检索)*:
#
# - Q (Query): "当前token更关注哪些信息" — *what the current token is looking for*;
# - K (Key): "其他token的索引标签，用来匹配" — *the other tokens' index labels (索引标签),
#   used for matching*;
# - V (Value): "其他token的实际内容，用来提取" — *the other tokens' actual content
#   (实际内容), what is extracted*.
#
# Our sentence is 我 想 吃 苹果, "I want to eat apple": 我 *I*, 想 *want*, 吃 *eat*,
# 苹果 *apple*. This lesson computes Q, K and V from one input, shows the notes' example of
# W_V as a filter, then trains a random W_V by gradient descent until it is that filter.

# %% tags=["parameters"]
out_dir = None     # where the pictures go (default: lesson-output/qkv/)
step = False       # walk the backward pass step by step (in a terminal)
html = True        # write the step-through player (shown at the end of the notebook)

# %%
import numpy as np

import microtensor as mt
from microtensor import nn
from viz.heatmap import heatmap_svg
from viz.lessons.common import check, fmt, output_dir, step_and_play

out = output_dir("qkv", out_dir)
TOKENS = ["我", "想", "吃", "苹果"]    # I, want, eat, apple
print("Attention is a retrieval (信息检索): Q = query, K = index label, V = content.")

# %% [markdown]
# ## 1. Q, K, V come from the same X through three projections
#
# "Q、K、V 都来自同一个输入，通过三组不同的线性变换得到。" — *Q, K and V are obtained by
# applying different linear projections to the same input*: Q = X W_q, K = X W_k,
# V = X W_v. Here X holds one random 4-dimensional embedding per token (its rows), and each
# W is a Linear layer without bias.

# %%
mt.manual_seed(0)
X = mt.randn(len(TOKENS), 4, name="X")  # one 4-dim embedding per token (rows)
W_q, W_k, W_v = (nn.Linear(4, 4, bias=False) for _ in range(3))
Q, K, V = W_q(X), W_k(X), W_v(X)
print("X (rows: " + " ".join(TOKENS) + ") =\n" + fmt(X))

# %%
for name, result, layer in (("Q", Q, W_q), ("K", K, W_k), ("V", V, W_v)):
    print(f"{name} = X @ W_{name.lower()} =\n{fmt(result)}")
    check(np.allclose(result.data, X.data @ layer.weight.data, atol=1e-6),
          f"{name} is X @ W_{name.lower()} (a Linear layer without bias)", "")

# %% [markdown]
# Same X, three different matrices: three different results. And a projection works on
# each token by itself: row i of Q depends on row i of X only.

# %%
check(not np.allclose(Q.data, K.data) and not np.allclose(K.data, V.data),
      "one input, three different weight matrices: Q, K and V differ", "")
row = 3
check(np.allclose(Q.data[row], X.data[row] @ W_q.weight.data, atol=1e-6),
      f"each token is projected on its own: q_{TOKENS[row]} = x_{TOKENS[row]} @ W_q", "")
print("Q asks 'what am I looking for', K says 'what I can be found by' (索引标签),")
print("V carries 'what I hand over when found' (实际内容).")

# %% [markdown]
# ## 2. W_V as a filter (过滤器): 苹果 in a recipe layer
#
# The notes' example: "假设“苹果”的 Embedding X = [1, 2, 0, 0]（前两个维度代表水果特征，后两个代表
# 科技公司特征）" — *suppose the embedding of 苹果 (apple) is X = [1, 2, 0, 0]: the first two
# dimensions are fruit features, the last two tech-company features* (Apple the company).
# In a layer that analyses recipes, a trained W_V might keep the first two dimensions and
# "抹杀后两维" — *wipe out the last two*. Then "[1, 2, 0, 0] * W_V = [3, 3, 0, 0]", and
# "W_V 像是一个“过滤器”" — *W_V is like a filter*.
#
# The filter below sums the two fruit dimensions into both of the first outputs and drops
# the tech-company dimensions: only its first two rows are non-zero. Change a number in it
# and run the cells again to see which checks notice.

# %%
# The notes' filter: keep the two fruit dimensions (summed into both outputs), drop the
# two tech-company dimensions. Only the first two rows are non-zero.
W_V_FILTER = np.array([[1, 1, 0, 0],
                       [1, 1, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]], dtype=np.float32)
apple = mt.tensor([1.0, 2.0, 0.0, 0.0], name="X_苹果")
print("X_苹果 = [1, 2, 0, 0]   (dims 0-1: fruit features, dims 2-3: tech-company features)")
print("W_V =\n" + fmt(W_V_FILTER))
V_apple = apple @ mt.tensor(W_V_FILTER)
print(f"V = X @ W_V = {fmt(V_apple)}")
print("  V[0] = 1*1 + 2*1 + 0*0 + 0*0 = 3,   V[1] = 1*1 + 2*1 = 3,   V[2] = V[3] = 0")
check(np.array_equal(V_apple.data, [3, 3, 0, 0]), "[1, 2, 0, 0] @ W_V = [3, 3, 0, 0] exactly",
      fmt(V_apple))

# %% [markdown]
# The notes: V keeps what is about "好吃、甜" (*tasty, sweet*) and filters out what is
# about "公司、乔布斯" (*the company, Steve Jobs*). Try it on an embedding that is all
# company:

# %%
company = mt.tensor([0.0, 0.0, 2.0, 1.0])
V_company = company @ mt.tensor(W_V_FILTER)
print("X_company = [0, 0, 2, 1]   (乔布斯, 公司: Steve Jobs, the company)")
print(f"V = X_company @ W_V = {fmt(V_company)}")
check(np.array_equal(V_company.data, [0, 0, 0, 0]),
      "the tech-company dimensions are filtered out (抹杀后两维)", "")

# %% [markdown]
# ## 3. W_V is learned: gradient descent turns a random W_V into the filter
#
# "W_V 不是计算出来的，而是学习出来的权重参数" — *W_V is not computed: it is a learned weight
# parameter*. It starts as random numbers, and backpropagation adjusts it.
#
# The task: 8 four-token sentences with random embeddings X and fixed attention weights A.
# The layer's output Z = A @ (X @ W_V) should carry only the fruit features, that is match
# Z* = A @ (X @ W_filter). Loss = mean((Z - Z*)²); each step updates W_V -= lr · dW_V.
# Try another `lr` or number of `steps`.

# %%
rng = np.random.default_rng(1)
X_train = mt.tensor(rng.standard_normal((8, 4, 4)))                 # (sentences, tokens, d)
A = mt.softmax(mt.tensor(rng.standard_normal((8, 4, 4))), axis=-1)   # attention weights
target = A @ (X_train @ mt.tensor(W_V_FILTER.astype(np.float64)))
W_V = mt.tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True, name="W_V")
lr, steps = 0.5, 200


def loss_of(W):
    return ((A @ (X_train @ W) - target) ** 2).mean()


before = W_V.data.copy()
print("W_V before (random) =\n" + fmt(before))

# %% [markdown]
# First, is the gradient that backward computes right? `mt.gradcheck` compares it with
# finite differences.

# %%
check(mt.gradcheck(loss_of, [W_V]), "dLoss/dW_V from backward matches finite "
      "differences (gradcheck, float64)", "")

# %% [markdown]
# Step 0: the loss and its gradient. By hand: Z = (A X) W, so dW = (A X)ᵀ dZ summed over
# the sentences, with dZ = 2 (Z - Z*) / n for a mean over n numbers.

# %%
W_V.data[...] = before      # start from the random W_V (when this cell runs again)
W_V.grad = None
loss = loss_of(W_V)
loss.backward()
losses = [loss.item()]
first_grad = W_V.grad.copy()
print(f"step 0: loss = {losses[0]:.4f}, gradient dLoss/dW_V =\n" + fmt(first_grad))
AX = (A @ X_train).data
dZ = 2 * (AX @ before - target.data) / target.data.size
by_hand = np.einsum("bti,btj->ij", AX, dZ)
check(np.allclose(first_grad, by_hand, atol=1e-12),
      "the gradient equals (A X)^T · 2(Z - Z*)/n computed by hand", "")

# %% [markdown]
# One step of gradient descent: W_V moves against its gradient, and so toward the filter.

# %%
with mt.no_grad():
    W_V.data -= lr * W_V.grad
print(f"after one step W_V - lr * dW_V =\n{fmt(W_V.data)}")
check(np.allclose(W_V.data, before - lr * first_grad), "one step moved W_V by "
      f"-lr * gradient (lr = {lr})", "")
distance = [np.abs(w - W_V_FILTER).sum() for w in (before, W_V.data)]
check(distance[1] < distance[0], "that step moved W_V toward the filter",
      f"sum |W_V - W_filter|: {distance[0]:.3f} → {distance[1]:.3f}")

# %% [markdown]
# The other steps, the same way.

# %%
for _ in range(1, steps):
    W_V.grad = None
    loss = loss_of(W_V)
    loss.backward()
    losses.append(loss.item())
    with mt.no_grad():
        W_V.data -= lr * W_V.grad
after = W_V.data.copy()
print(f"loss: {losses[0]:.4f} (step 0) → {losses[9]:.4f} (step 9) → "
      f"{losses[-1]:.2e} (step {steps - 1})")
print(f"W_V after {steps} steps =\n{fmt(after, 3)}")
apple_v = np.array([1.0, 2.0, 0.0, 0.0]) @ after
print(f"[1, 2, 0, 0] @ learned W_V = {fmt(apple_v, 3)}")

# %% [markdown]
# What training found is the notes' filter, learned and not computed.

# %%
check(losses[-1] < losses[0] * 1e-3, "training drove the loss down by 1000x",
      f"{losses[0]:.3g} → {losses[-1]:.3g}")
error = float(np.abs(after - W_V_FILTER).max())
check(error < 0.05, "the learned W_V is the filter: first two rows ≈ [1, 1, 0, 0], "
      "last two rows ≈ 0", f"max |W_V - W_filter| = {error:.4f}")
check(np.allclose(apple_v, [3, 3, 0, 0], atol=0.1),
      "and the learned W_V maps 苹果 [1, 2, 0, 0] to ≈ [3, 3, 0, 0]", fmt(apple_v, 3))

# %% [markdown]
# ## The pictures
#
# W_V before training, the gradient at step 0, and W_V after training. Rows are the input
# dimensions (two fruit, two tech), columns the outputs.

# %%
pictures = [heatmap_svg(m, out / f"qkv-W_V-{tag}.svg", title=f"W_V {tag}",
                        row_labels=["fruit 0", "fruit 1", "tech 2", "tech 3"],
                        col_labels=["v0", "v1", "v2", "v3"])
            for m, tag in ((before, "before"), (first_grad, "gradient-step-0"),
                           (after, "after"))]
for picture in pictures:
    print(f"wrote {picture}")

# %% [markdown]
# ## The backward pass of one learning step
#
# One embedding, 苹果 [1, 2, 0, 0], W_V starting at the identity, and the loss
# mean((V - [3, 3, 0, 0])²): its backward pass computes dW_V = Xᵀ dV. `step = True` walks
# it in the terminal; `html = True` writes the step-through player.
#
# The notes sum it up: "Embedding 是“我是谁”，而 V 是“在这层讨论中，我能贡献出的相关内容”" —
# *the embedding is "who I am"; V is "what I can contribute to this layer's discussion"*.

# %%
def build():
    X = mt.tensor([[1.0, 2.0, 0.0, 0.0]], name="X_苹果")
    W_V = mt.tensor(np.eye(4), requires_grad=True, name="W_V")
    V = X @ W_V
    V.name = "V"
    return ((V - mt.tensor([[3.0, 3.0, 0.0, 0.0]], name="V_target")) ** 2).mean()


pictures += step_and_play(build, out / "qkv.html", step=step, html=html, echo=print,
                          title="learning W_V: dW_V = X^T dV for 苹果 (apple) "
                                "[1, 2, 0, 0] → [3, 3, 0, 0]")
numbers = {"Q_shape": Q.shape, "K_shape": K.shape, "V_shape": V.shape,
           "V": V_apple.data.tolist(), "V_company": V_company.data.tolist(),
           "losses": [losses[0], losses[-1]], "W_V_error": error,
           "apple_v_learned": apple_v.tolist(), "files": [str(p) for p in pictures]}
