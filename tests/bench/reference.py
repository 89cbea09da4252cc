"""The reference configuration and its PyTorch twin, for side-by-side benchmarks.

The PyTorch model mirrors `transformer.DecoderLM` op for op: token + learned position
embeddings, pre-LN blocks (LayerNorm -> causal multi-head attention written out as
matmul, scale, mask, softmax, matmul -> residual; LayerNorm -> Linear, GELU (tanh), Linear
-> residual), a final LayerNorm and a Linear head.
"""
import numpy as np
from common import torch

CONFIG = {"vocab": 96, "d_model": 128, "n_heads": 4, "n_layers": 4, "d_ff": 512, "seq": 64, "batch": 16}
# A lesson-sized model, where per-op overhead rather than arithmetic sets the pace.
SMALL_CONFIG = dict(CONFIG, d_model=32, n_layers=2, d_ff=128, seq=32, batch=8)


def reference_model(config=CONFIG, max_len=None):
    """Our DecoderLM of `config` (GPT style), drawn from seed 0, positions up to
    `max_len` (default: the sequence length)."""
    import microtensor as mt
    from transformer import DecoderLM, LMConfig
    mt.manual_seed(0)
    return DecoderLM(LMConfig.gpt2(config["vocab"], d_model=config["d_model"],
                                   n_heads=config["n_heads"], n_layers=config["n_layers"],
                                   d_ff=config["d_ff"], max_len=max_len or config["seq"]))


def batch(config=CONFIG, seed=0):
    """Random token ids and next-token targets, (batch, seq) int64."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config["vocab"], (config["batch"], config["seq"] + 1))
    return ids[:, :-1], ids[:, 1:]


def gemm_shapes(config=CONFIG):
    """(A shape, B shape) of every matrix product in one forward pass of the model."""
    B, T, d, h = config["batch"], config["seq"], config["d_model"], config["n_heads"]
    N, dk, ff, V = B * T, d // h, config["d_ff"], config["vocab"]
    per_layer = [((N, d), (d, 3 * d)),          # Q, K, V in one product
                 ((B * h, T, dk), (B * h, dk, T)),  # scores = Q K^T
                 ((B * h, T, T), (B * h, T, dk)),   # weights @ V
                 ((N, d), (d, d)),              # W_o
                 ((N, d), (d, ff)),             # FFN in
                 ((N, ff), (ff, d))]            # FFN out
    return per_layer * config["n_layers"] + [((N, d), (d, V))]


def numpy_gemm_floor_step(config=CONFIG, dtype=np.float32):
    """A function doing exactly the matrix products of forward + backward in NumPy:
    for each Y = A @ B, the forward product and dA = dY @ B^T, dB = A^T @ dY."""
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal(a).astype(dtype), rng.standard_normal(b).astype(dtype))
                for a, b in gemm_shapes(config)]
    grads = [np.ones(np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, 1))[:-1]
                     + (b.shape[-1],), dtype) for a, b in operands]

    def step():
        for (a, b), g in zip(operands, grads):
            a @ b
            g @ np.swapaxes(b, -1, -2)
            np.swapaxes(a, -1, -2) @ g
    return step


if torch is not None:
    nn = torch.nn
    F = torch.nn.functional

    class TorchBlock(nn.Module):
        def __init__(self, d_model, n_heads, d_ff):
            super().__init__()
            self.n_heads = n_heads
            self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
            self.W_qkv = nn.Linear(d_model, 3 * d_model)
            self.W_o = nn.Linear(d_model, d_model)
            self.ff_in, self.ff_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

        def forward(self, x, causal_mask, past=None):
            """`past` is a list [K, V] of earlier keys/values, grown by concatenation
            (the usual eager-PyTorch cache)."""
            B, T, d = x.shape
            h = self.n_heads
            q, k, v = self.W_qkv(self.ln1(x)).split(d, dim=-1)
            q, k, v = (t.view(B, T, h, d // h).transpose(1, 2) for t in (q, k, v))
            if past is not None:
                if past:
                    k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
                past[:] = [k, v]
            scores = (q @ k.transpose(-1, -2)) * (1.0 / (d // h) ** 0.5)
            weights = scores.masked_fill(~causal_mask, float("-inf")).softmax(dim=-1)
            attended = (weights @ v).transpose(1, 2).reshape(B, T, d)
            x = x + self.W_o(attended)
            return x + self.ff_out(F.gelu(self.ff_in(self.ln2(x)), approximate="tanh"))

    class TorchDecoderLM(nn.Module):
        def __init__(self, vocab, d_model, n_heads, n_layers, d_ff, max_len):
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Embedding(max_len, d_model)
            self.blocks = nn.ModuleList(TorchBlock(d_model, n_heads, d_ff)
                                        for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)
            mask = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool))
            self.register_buffer("causal", mask)

        def forward(self, ids, cache=None, start=0):
            T = ids.shape[1]
            x = self.tok(ids) + self.pos(torch.arange(start, start + T))
            mask = self.causal[start:start + T, :start + T]
            for i, block in enumerate(self.blocks):
                x = block(x, mask, None if cache is None else cache[i])
            return self.head(self.ln_f(x))

        @torch.no_grad()
        def greedy(self, ids, new_tokens, use_cache=True):
            cache = [[] for _ in self.blocks] if use_cache else None
            logits = self(ids, cache)
            for _ in range(new_tokens):
                next_id = logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, next_id], dim=1)
                if use_cache:
                    logits = self(next_id, cache, start=ids.shape[1] - 1)
                else:
                    logits = self(ids)
            return ids
