"""The one seam for speed: everything that makes the Transformer fast, and nothing else.

The modules in `transformer/` hold only the textbook forward. This package registers a
fast form for some of them (`microtensor.nn.fast_form`); calling such a module runs its
fast form, which gives the same numbers from fewer, fused ops, while fast paths are on
(the default; `mt.fast_paths(False)` runs the textbook forwards). Each fused primitive
names its textbook form as its reference, and tests hold the two equal, forward and
backward; drawings open every fused node into that reference (`mt.textbook_graph`).

- `attention.py`: attention as one node (`fused_attention`), and self-attention on
  packed Q/K/V with the heads split and merged inside (`fused_self_attention`).
- `feed_forward.py`: a pre-LN block's LayerNorm, W_1, GELU and W_2 as one node
  (`fused_feed_forward`), GELU written over the product it reads.
- `forms.py`: the registered forms: multi-head attention on one packed Q/K/V product,
  pre-LN blocks with each LayerNorm folded into the product after it
  (`F.layer_norm_linear`), and cached decoding of a DecoderLM without a graph.
- `decode.py`: that graph-free decoding step, on the parameters' arrays.
"""
from . import forms
from .attention import attend, fused_attention, fused_self_attention
from .feed_forward import fused_feed_forward

__all__ = ["attend", "forms", "fused_attention", "fused_feed_forward", "fused_self_attention"]
