"""The Transformer as a whole: a literate lesson (see viz.lessons.literate).

Run it: `python -m viz lesson architecture`; as a notebook: `python -m viz lesson
architecture --notebook`.
"""
SUMMARY = ("encoder-decoder: module tree with shapes and parameter counts, residual + "
           "LayerNorm, the collapsed graph")

# %% [markdown]
# # The Transformer as a whole
#
# The notes open with the whole model: "Transformer follows an encoder–decoder
# architecture, where each layer consists of multi-head attention, feed-forward networks,
# residual connections, and layer normalization."
#
# The encoder reads the source sentence; the decoder writes the target sentence one token
# at a time. Each layer is an attention block and a feed-forward network (FFN), each
# wrapped in a residual connection and a LayerNorm. A decoder layer has a second attention
# block, cross-attention, that looks at the encoder's output.
#
# This lesson builds a small model and checks that sentence part by part: the module tree
# with its shapes and parameter counts, the count from the paper's shapes, one layer
# recomputed from its parts, and one forward pass drawn as a graph. Change `CONFIG` (say
# `n_layers` or `d_ff`) and run the cells again: every check follows.

# %% tags=["parameters"]
out_dir = None     # where the picture goes (default: lesson-output/architecture/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
import numpy as np

import microtensor as mt
import microtensor.functional as F
import viz
from transformer import Transformer
from viz.layout import plan_layout
from viz.lessons.common import check, laid_out_by, no_player, output_dir

out = output_dir("architecture", out_dir)
no_player("architecture", step, html, print)

CONFIG = {"src_vocab": 20, "tgt_vocab": 20, "d_model": 16, "n_heads": 2, "n_layers": 2,
          "d_ff": 32, "dropout": 0.0, "max_len": 32}
print("Transformer(" + ", ".join(f"{k}={v}" for k, v in CONFIG.items()) + ")")

# %% [markdown]
# ## One sentence pair through the model
#
# A source sentence of 5 token ids, and a target of 4: the decoder reads `<bos>` and the
# first 3 target tokens (`tgt_in`) and must predict the next token at each position
# (`tgt_out`, ending with `<eos>`). The loss is the cross-entropy of those predictions.
#
# To see each module's output shape we hang a forward hook on every module: it remembers
# the module's first input and output as the model runs.

# %%
def record_outputs(model):
    """A forward hook on every module that remembers its first input and output; returns
    ({path: (input, output)}, the hooks' handles, to remove when done)."""
    seen, handles = {}, []
    for path, module in model.named_modules():
        if type(module).forward is mt.nn.Module.forward:
            continue   # containers such as ModuleList have no forward of their own

        def remember(module, args, output, path=path):
            seen.setdefault(path, (args[0] if args else None, output))
        handles.append(module.register_forward_hook(remember))
    return seen, handles


mt.manual_seed(0)
model = Transformer(**CONFIG)
model.name_parameters()
src = np.array([[3, 5, 7, 9, 11]])          # a 5-token source sentence (no padding)
tgt_in = np.array([[1, 4, 6, 8]])           # <bos> + the first 3 target tokens
tgt_out = np.array([[4, 6, 8, 2]])          # the next tokens, ending with <eos>

seen, handles = record_outputs(model)
logits = model(src, tgt_in)
for handle in handles:
    handle.remove()
loss = F.cross_entropy(logits, tgt_out)
print(f"src {src.shape}, tgt {tgt_in.shape} → logits {logits.shape}, loss {loss.item():.3f}")

# %% [markdown]
# ## 1. The module tree
#
# Every module with the shape of its output and its parameter count (its own parameters
# and its children's). Layers 1, 2, ... repeat layer 0's structure, so only layer 0 is
# opened.

# %%
rows = []
for path, module in model.named_modules():
    parts = path.split(".")
    if len(parts) > 3 and parts[1] == "layers" and parts[2] != "0":
        continue   # layers 1, 2, ... repeat layer 0's structure
    depth = path.count(".") + 1 if path else 0
    n_params = sum(p.size for p in module.parameters())
    own = ", ".join(f"{name} {tuple(p.shape)}" for name, p in module._parameters.items()
                    if p is not None)
    shape = seen.get(path, (None, None))[1]
    shape_text = str(tuple(shape.shape)) if isinstance(shape, mt.Tensor) else ""
    label = ("  " * depth + (path.split(".")[-1] if path else "model")
             + f": {type(module).__name__}")
    if len(parts) == 3 and parts[1] == "layers" and parts[2] != "0":
        own = "(the same sublayers as layer 0)"
    rows.append(f"{label:<44}{shape_text:<14}{n_params:>7,}  {own}")
print(f"output shapes for src {src.shape}, tgt {tgt_in.shape}")
print(f"{'module':<44}{'output':<14}{'params':>7}  own parameters")
print("\n".join(rows))

# %% [markdown]
# ## 2. The parameter count, from the paper's shapes
#
# A Linear layer computes x @ W + b with W of shape (in, out): in·out + out parameters.
# An attention block has four of them (W_q, W_k, W_v, W_o), each d × d; the FFN has two,
# d × d_ff and d_ff × d; a LayerNorm has a gain and a bias of d each.

# %%
def expected_parameters(c: dict) -> dict:
    """Parameter counts from the paper's shapes (Linear: x @ W + b, W is (in, out))."""
    d, d_ff = c["d_model"], c["d_ff"]
    attention = 4 * (d * d + d)                  # W_q, W_k, W_v, W_o and their biases
    ffn = (d * d_ff + d_ff) + (d_ff * d + d)     # W_1, W_2
    norm = 2 * d                                 # gain and bias
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm   # self- and cross-attention
    embeddings = (c["src_vocab"] + c["tgt_vocab"]) * d
    output = d * c["tgt_vocab"] + c["tgt_vocab"]
    total = c["n_layers"] * (encoder_layer + decoder_layer) + embeddings + output
    return {"attention": attention, "ffn": ffn, "encoder_layer": encoder_layer,
            "decoder_layer": decoder_layer, "total": total}


expected = expected_parameters(CONFIG)
print(f"per attention block 4·(d²+d) = {expected['attention']:,}; per FFN "
      f"2·d·d_ff + d_ff + d = {expected['ffn']:,}")
print(f"encoder layer = attention + FFN + 2 LayerNorms = {expected['encoder_layer']:,}; "
      f"decoder layer = 2 attentions + FFN + 3 LayerNorms = {expected['decoder_layer']:,}")

# %%
total = sum(p.size for p in model.parameters())
check(total == expected["total"], "the parameter count matches the paper's shapes",
      f"{total:,} parameters")

# %% [markdown]
# ## The two stacks
#
# The encoder and the decoder each stack `n_layers` layers. Only decoder layers have
# cross-attention: its queries come from the decoder, its keys and values from the
# encoder's output (the *memory*). The last Linear turns each target position into scores
# over the target vocabulary.

# %%
enc, dec = model.encoder.layers, model.decoder.layers
check(len(enc) == len(dec) == CONFIG["n_layers"],
      f"{CONFIG['n_layers']} encoder layers and {CONFIG['n_layers']} decoder layers", "")
check(all(hasattr(layer, "cross_attn") for layer in dec)
      and not any(hasattr(layer, "cross_attn") for layer in enc),
      "decoder layers add cross-attention over the encoder's output (memory)", "")
check(logits.shape == (1, 4, CONFIG["tgt_vocab"]),
      "the output is one distribution over the target vocabulary per target position",
      f"logits {logits.shape}")

# %% [markdown]
# ## Residual connections and layer normalisation
#
# An encoder layer, post-LN as in the paper:
#
#     h   = LayerNorm(x + MultiHeadAttention(x))
#     out = LayerNorm(h + FFN(h))
#
# The `x +` and `h +` are the residual connections. We recompute encoder layer 0 from its
# parts, on the input the hook recorded, and compare with what the layer returned.

# %%
layer = enc[0]
x_in, x_out = seen["encoder.layers.0"]
with mt.no_grad():
    h = layer.norm1(x_in + layer.self_attn(x_in))
    by_parts = layer.norm2(h + layer.ffn(h))
residual_error = float(np.abs(by_parts.data - x_out.data).max())
check(residual_error < 1e-5, "encoder layer = LayerNorm(x + Attn(x)) then "
      "LayerNorm(h + FFN(h)): residual connections and layer normalisation",
      f"max diff {residual_error:.1e}")

# %% [markdown]
# LayerNorm normalises each position's vector over its d_model features, then scales by a
# gain and shifts by a bias. At initialisation the gain is 1 and the bias 0, so every row
# of h has mean 0 and standard deviation 1.

# %%
h_mean = h.data.mean(axis=-1)
h_std = h.data.std(axis=-1)
print(f"mean of each position of h: {np.abs(h_mean).max():.1e} at most; "
      f"std: {h_std.min():.4f} to {h_std.max():.4f}")
check(np.allclose(h_mean, 0, atol=1e-5) and np.allclose(h_std, 1, atol=1e-3),
      "after LayerNorm every position has mean 0 and std 1 (gain 1, bias 0 at init)", "")

# %% [markdown]
# An untrained model has no preference yet: its predictions are close to uniform over the
# vocabulary, and the cross-entropy of a uniform guess over V tokens is log V.

# %%
vocab = CONFIG["tgt_vocab"]
check(np.isfinite(loss.item()) and abs(loss.item() - np.log(vocab)) < 1.5,
      "an untrained model's loss is near log(vocab) (no preference yet)",
      f"loss {loss.item():.3f}, log {vocab} = {np.log(vocab):.3f}")

# %% [markdown]
# ## 3. One forward pass as a graph, modules folded into boxes
#
# `viz.draw` draws the graph of the loss. With `collapse=`, each encoder and decoder layer
# is folded into one box; the embeddings, the residual adds, the output projection and
# the loss stay drawn op by op.

# %%
layers = [f"{stack}.layers.{i}" for stack in ("encoder", "decoder")
          for i in range(CONFIG["n_layers"])]
graph = viz.draw(loss, params=model, collapse=layers, show=("shape",),
                 title="Transformer forward pass: each layer folded into one box")
folded = list(plan_layout(loss, model, collapse=layers).folded)
print("folded into boxes: " + ", ".join(folded) + "; embeddings, residual adds, the "
      "output projection and the loss are drawn op by op")
check(folded == layers, "the graph shows every encoder and decoder layer as one box", "")

# %%
picture = viz.render(graph, out / "architecture-graph.svg")
print(f"wrote {picture}  (open it in a browser; {laid_out_by()})")
numbers = {"total_params": total, "expected_params": expected["total"],
           "residual_error": residual_error, "logits_shape": logits.shape,
           "loss": loss.item(), "folded": folded, "files": [str(picture)]}
