"""Greedy decoding of 256 new tokens with the reference DecoderLM: with the preallocated
KV cache, without a cache (recomputing the prefix every step), and PyTorch eager with the
usual concatenating cache, in one run. Also counts what one cached token costs: ops
(primitive calls, from `mt.profile()`) and Python function calls (from cProfile), each
over a whole `generate` call (prefill included) divided by the new tokens.

    python tests/bench/bench_decode.py
"""
import cProfile
import pstats

import numpy as np
from common import emit, side_by_side, torch
from reference import CONFIG

import microtensor as mt
from transformer import DecoderLM

NEW_TOKENS, PROMPT = 256, 16
MAX_LEN = PROMPT + NEW_TOKENS


def per_token_counts(generate) -> dict:
    """Ops and Python function calls of one `generate()` call, per new token."""
    with mt.profile() as prof:
        generate()
    ops = sum(row["forward_calls"] for row in prof.rows.values())
    profiler = cProfile.Profile()
    profiler.enable()
    generate()
    profiler.disable()
    calls = pstats.Stats(profiler).total_calls
    return {"cached_ops_per_token": ops / NEW_TOKENS,
            "cached_python_calls_per_token": calls / NEW_TOKENS}


def run(repeat: int = 3) -> dict:
    c = CONFIG
    mt.manual_seed(0)
    model = DecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"], c["d_ff"],
                      max_len=MAX_LEN).eval()
    prompt = np.random.default_rng(0).integers(0, c["vocab"], (1, PROMPT))

    def decode(use_cache):
        return lambda: model.generate(prompt, NEW_TOKENS, temperature=0, use_cache=use_cache)

    contenders = {"cached": decode(True)}
    if torch is not None:
        from reference import TorchDecoderLM
        torch.manual_seed(0)
        twin = TorchDecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"],
                              c["d_ff"], MAX_LEN).eval()
        torch_prompt = torch.from_numpy(prompt)
        contenders["torch"] = lambda: twin.greedy(torch_prompt, NEW_TOKENS)
    seconds = side_by_side(contenders, rounds=repeat)
    uncached = side_by_side({"uncached": decode(False)}, rounds=1, warmup=0)["uncached"]
    results = {"new_tokens": NEW_TOKENS, "prompt": PROMPT,
               "cached_tokens_per_s": NEW_TOKENS / seconds["cached"],
               "uncached_tokens_per_s": NEW_TOKENS / uncached,
               "cached_over_uncached": uncached / seconds["cached"],
               **per_token_counts(contenders["cached"])}
    if torch is not None:
        results["torch_concat_cache_tokens_per_s"] = NEW_TOKENS / seconds["torch"]
        results["ratio_vs_torch"] = seconds["torch"] / seconds["cached"]
    return emit("decode", results)


if __name__ == "__main__":
    run()
