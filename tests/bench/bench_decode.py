"""Greedy decoding of 256 new tokens with the reference DecoderLM: with the preallocated
KV cache, without a cache (recomputing the prefix every step), and PyTorch eager with the
usual concatenating cache, in one run.

    python tests/bench/bench_decode.py
"""
import numpy as np
from common import best_of, emit, torch
from reference import CONFIG

import microtensor as mt
from transformer import DecoderLM

NEW_TOKENS, PROMPT = 256, 16
MAX_LEN = PROMPT + NEW_TOKENS


def run(repeat: int = 3) -> dict:
    c = CONFIG
    mt.manual_seed(0)
    model = DecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"], c["d_ff"],
                      max_len=MAX_LEN).eval()
    prompt = np.random.default_rng(0).integers(0, c["vocab"], (1, PROMPT))

    def decode(use_cache):
        return lambda: model.generate(prompt, NEW_TOKENS, temperature=0, use_cache=use_cache)

    cached = best_of(decode(True), repeat=repeat)
    uncached = best_of(decode(False), repeat=1)
    results = {"new_tokens": NEW_TOKENS, "prompt": PROMPT,
               "cached_tokens_per_s": NEW_TOKENS / cached,
               "uncached_tokens_per_s": NEW_TOKENS / uncached,
               "cached_over_uncached": uncached / cached}
    if torch is not None:
        from reference import TorchDecoderLM
        torch.manual_seed(0)
        twin = TorchDecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"],
                              c["d_ff"], MAX_LEN).eval()
        torch_prompt = torch.from_numpy(prompt)
        seconds = best_of(lambda: twin.greedy(torch_prompt, NEW_TOKENS), repeat=repeat)
        results["torch_concat_cache_tokens_per_s"] = NEW_TOKENS / seconds
        results["ratio_vs_torch"] = results["cached_tokens_per_s"] / (NEW_TOKENS / seconds)
    return emit("decode", results)


if __name__ == "__main__":
    run()
