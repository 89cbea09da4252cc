"""The Transformer as a whole: encoder and decoder stacks of attention + FFN, each wrapped
in a residual connection and LayerNorm.

Notes: "Transformer follows an encoder–decoder architecture, where each layer consists of
multi-head attention, feed-forward networks, residual connections, and layer normalization."
"""
from __future__ import annotations

import numpy as np

import microtensor as mt
import microtensor.functional as F
import viz
from transformer import Transformer
from viz.layout import plan_layout

from .common import check, heading, laid_out_by, no_player, output_dir

NAME = "architecture"
SUMMARY = "encoder-decoder: module tree with shapes and parameter counts, residual + LayerNorm, the collapsed graph"

CONFIG = {"src_vocab": 20, "tgt_vocab": 20, "d_model": 16, "n_heads": 2, "n_layers": 2,
          "d_ff": 32, "dropout": 0.0, "max_len": 32}


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


def run(out_dir=None, step: bool = False, html: bool = False, echo=print) -> dict:
    out = output_dir(NAME, out_dir)
    no_player(NAME, step, html, echo)
    mt.manual_seed(0)
    model = Transformer(**CONFIG)
    model.name_parameters()
    src = np.array([[3, 5, 7, 9, 11]])          # a 5-token source sentence (no padding)
    tgt_in = np.array([[1, 4, 6, 8]])           # <bos> + the first 3 target tokens
    tgt_out = np.array([[4, 6, 8, 2]])          # the next tokens, ending with <eos>
    echo("Encoder-decoder; each layer = multi-head attention + feed-forward network, each")
    echo("wrapped in a residual connection and LayerNorm. A small model, built and checked:")
    echo("Transformer(" + ", ".join(f"{k}={v}" for k, v in CONFIG.items()) + ")")

    seen, handles = record_outputs(model)
    logits = model(src, tgt_in)
    for handle in handles:
        handle.remove()
    loss = F.cross_entropy(logits, tgt_out)

    heading(echo, "1. the module tree: output shapes for src (1, 5), tgt (1, 4); parameters")
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
    echo(f"{'module':<44}{'output':<14}{'params':>7}  own parameters")
    echo("\n".join(rows))

    heading(echo, "2. checks on the structure")
    total = sum(p.size for p in model.parameters())
    expected = expected_parameters(CONFIG)
    echo(f"per attention block 4·(d²+d) = {expected['attention']:,}; per FFN "
         f"2·d·d_ff + d_ff + d = {expected['ffn']:,}")
    echo(f"encoder layer = attention + FFN + 2 LayerNorms = {expected['encoder_layer']:,}; "
         f"decoder layer = 2 attentions + FFN + 3 LayerNorms = {expected['decoder_layer']:,}")
    check(total == expected["total"], "the parameter count matches the paper's shapes",
          f"{total:,} parameters", echo)
    enc, dec = model.encoder.layers, model.decoder.layers
    check(len(enc) == len(dec) == CONFIG["n_layers"],
          f"{CONFIG['n_layers']} encoder layers and {CONFIG['n_layers']} decoder layers", "",
          echo)
    check(all(hasattr(layer, "cross_attn") for layer in dec)
          and not any(hasattr(layer, "cross_attn") for layer in enc),
          "decoder layers add cross-attention over the encoder's output (memory)", "", echo)
    check(logits.shape == (1, 4, CONFIG["tgt_vocab"]),
          "the output is one distribution over the target vocabulary per target position",
          f"logits {logits.shape}", echo)

    # Recompute encoder layer 0 from its parts: post-LN as in the paper,
    # h = LayerNorm(x + MultiHeadAttention(x)),  out = LayerNorm(h + FFN(h)).
    layer = enc[0]
    x_in, x_out = seen["encoder.layers.0"]
    with mt.no_grad():
        h = layer.norm1(x_in + layer.self_attn(x_in))
        by_parts = layer.norm2(h + layer.ffn(h))
    residual_error = float(np.abs(by_parts.data - x_out.data).max())
    check(residual_error < 1e-5, "encoder layer = LayerNorm(x + Attn(x)) then "
          "LayerNorm(h + FFN(h)): residual connections and layer normalisation",
          f"max diff {residual_error:.1e}", echo)
    h_mean = h.data.mean(axis=-1)
    h_std = h.data.std(axis=-1)
    check(np.allclose(h_mean, 0, atol=1e-5) and np.allclose(h_std, 1, atol=1e-3),
          "after LayerNorm every position has mean 0 and std 1 (gain 1, bias 0 at init)",
          "", echo)
    check(np.isfinite(loss.item()) and abs(loss.item() - np.log(CONFIG["tgt_vocab"])) < 1.5,
          "an untrained model's loss is near log(vocab) (no preference yet)",
          f"loss {loss.item():.3f}, log 20 = {np.log(20):.3f}", echo)

    heading(echo, "3. one forward pass as a graph, modules folded into boxes")
    layers = [f"{stack}.layers.{i}" for stack in ("encoder", "decoder")
              for i in range(CONFIG["n_layers"])]
    graph = viz.draw(loss, params=model, collapse=layers, show=("shape",),
                     title="Transformer forward pass: each layer folded into one box")
    folded = list(plan_layout(loss, model, collapse=layers).folded)
    echo("folded into boxes: " + ", ".join(folded) + "; embeddings, residual adds, the "
         "output projection and the loss are drawn op by op")
    check(folded == layers, "the graph shows every encoder and decoder layer as one box",
          "", echo)
    picture = viz.render(graph, out / "architecture-graph.svg")
    echo(f"wrote {picture}  (open it in a browser; {laid_out_by()})")
    return {"total_params": total, "expected_params": expected["total"],
            "residual_error": residual_error, "logits_shape": logits.shape,
            "loss": loss.item(), "folded": folded, "files": [str(picture)]}
