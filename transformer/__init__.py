"""A Transformer built on microtensor: attention, the encoder-decoder of "Attention Is All
You Need", a GPT-style decoder-only language model, a KV cache, tokenizers and a training
command line (`python -m transformer train ...`).

    >>> from transformer import DecoderLM
    >>> lm = DecoderLM(vocab=96, d_model=64, n_heads=4, n_layers=2, max_len=128)
    >>> lm.generate([[5, 6, 7]], max_new_tokens=10, temperature=0)
"""
from .attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .bpe import BPETokenizer
from .cache import KVCache
from .layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    PositionalEncoding,
    sinusoidal_table,
)
from .lm import DecoderLM
from .model import Transformer
from .tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_dict

__all__ = ["BPETokenizer", "ByteTokenizer", "CharTokenizer", "Decoder", "DecoderLM", "DecoderLayer",
           "Encoder", "EncoderLayer", "FeedForward", "KVCache", "MultiHeadAttention",
           "PositionalEncoding", "Transformer", "causal_mask", "scaled_dot_product_attention",
           "sinusoidal_table", "tokenizer_from_dict"]
