"""A Transformer built on microtensor: attention, the encoder-decoder of "Attention Is All
You Need", a decoder-only language model (GPT-style, or Llama-style with RMSNorm, rotary
positions, SwiGLU and grouped-query attention), a KV cache, Llama checkpoint conversion,
tokenizers and a training command line (`python -m transformer train ...`).

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=96, d_model=64, n_heads=4, n_layers=2, max_len=128))
    >>> lm.generate([[5, 6, 7]], max_new_tokens=10, temperature=0)
"""
from microtensor.nn import RMSNorm  # beside LayerNorm; here too, as before

# Two packages hook themselves onto the modules they import: `fast` registers each
# module's fast form, `hub` gives DecoderLM its from_pretrained and save_pretrained.
from . import hub
from .attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .bpe import BPETokenizer
from .cache import KVCache
from .config import LMConfig
from .encoder_decoder import Transformer
from .fast import fused_attention
from .layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    GPTBlock,
    PositionalEncoding,
    sinusoidal_table,
)
from .llama import LlamaBlock, SwiGLU
from .lm import DecoderLM
from .rope import RotaryEmbedding, apply_rotary
from .tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_dict

__all__ = ["BPETokenizer", "ByteTokenizer", "CharTokenizer", "Decoder", "DecoderLM", "DecoderLayer",
           "Encoder", "EncoderLayer", "FeedForward", "GPTBlock", "KVCache", "LMConfig", "LlamaBlock",
           "MultiHeadAttention", "PositionalEncoding", "RMSNorm", "RotaryEmbedding", "SwiGLU",
           "Transformer", "apply_rotary", "causal_mask", "fused_attention", "hub",
           "scaled_dot_product_attention",
           "sinusoidal_table", "tokenizer_from_dict"]
