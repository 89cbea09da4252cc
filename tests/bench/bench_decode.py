"""Greedy decoding of 256 new tokens with the reference DecoderLM: with the preallocated
KV cache, without a cache (recomputing the prefix every step), and PyTorch eager with the
usual concatenating cache, in one run. "cached" is the graph-free FastDecoder (the
DecoderLM's fast form); "cached_own_forward" the same model with blocks of a type that has
no registered decoding step (a subclass), which FastDecoder runs through their own
forwards and the cached steps of their attention and feed-forward; "cached_composed" the
cache through the model's own forward (a forward hook on the model selects it). PyTorch
runs on its default threads and on one. Also counts what one cached token
costs: ops (primitive calls, from `mt.profile()`) and Python function calls (from
cProfile), each over a whole `generate` call (prefill included) divided by the new tokens.

    python tests/bench/bench_decode.py
"""
import copy
import cProfile
import pstats

import numpy as np
from common import emit, paired_ratio, side_by_side, torch
from reference import CONFIG, reference_model

import microtensor as mt

NEW_TOKENS, PROMPT = 256, 16
MAX_LEN = PROMPT + NEW_TOKENS


def per_token_counts(generate, prefix: str) -> dict:
    """Ops and Python function calls of one `generate()` call, per new token."""
    with mt.profile() as prof:
        generate()
    ops = sum(row["forward_calls"] for row in prof.rows.values())
    profiler = cProfile.Profile()
    profiler.enable()
    generate()
    profiler.disable()
    calls = pstats.Stats(profiler).total_calls
    return {f"{prefix}_ops_per_token": ops / NEW_TOKENS,
            f"{prefix}_python_calls_per_token": calls / NEW_TOKENS}


def composed(model, generate):
    """`generate` with a do-nothing forward hook on the model, which makes a cached step
    run through the blocks instead of the graph-free FastDecoder."""
    def run():
        with model.register_forward_hook(lambda module, args, output: None):
            return generate()
    return run


def with_unregistered_blocks(model):
    """A copy of `model` whose blocks are of a subclass no decoding step is registered
    for, as a block a user writes would be."""
    twin = copy.deepcopy(model)
    for block in twin.blocks:
        block.__class__ = type("Own" + type(block).__name__, (type(block),), {})
    return twin


def one_thread(generate):
    """`generate` on one PyTorch thread: on a busy machine PyTorch's second thread waits
    for a core, and its figure then says more about the machine than about PyTorch."""
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return generate()
        finally:
            torch.set_num_threads(threads)
    return run


def run(repeat: int = 3) -> dict:
    c = CONFIG
    model = reference_model(c, max_len=MAX_LEN).eval()
    prompt = np.random.default_rng(0).integers(0, c["vocab"], (1, PROMPT))

    def decode(use_cache, model=model):
        return lambda: model.generate(prompt, NEW_TOKENS, temperature=0, use_cache=use_cache)

    contenders = {"cached": decode(True), "cached_composed": composed(model, decode(True)),
                  "cached_own_forward": decode(True, with_unregistered_blocks(model))}
    if torch is not None:
        from reference import TorchDecoderLM
        torch.manual_seed(0)
        twin = TorchDecoderLM(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"],
                              c["d_ff"], MAX_LEN).eval()
        torch_prompt = torch.from_numpy(prompt)
        contenders["torch"] = lambda: twin.greedy(torch_prompt, NEW_TOKENS)
        contenders["torch_1_thread"] = one_thread(contenders["torch"])
    rounds = {}
    seconds = side_by_side(contenders, rounds=3 * repeat, per_round=rounds)
    uncached = side_by_side({"uncached": decode(False)}, rounds=1, warmup=0)["uncached"]
    results = {"new_tokens": NEW_TOKENS, "prompt": PROMPT,
               "cached_tokens_per_s": NEW_TOKENS / seconds["cached"],
               "uncached_tokens_per_s": NEW_TOKENS / uncached,
               "cached_over_uncached": uncached / seconds["cached"],
               "cached_composed_tokens_per_s": NEW_TOKENS / seconds["cached_composed"],
               "cached_over_composed": seconds["cached_composed"] / seconds["cached"],
               "cached_own_forward_tokens_per_s": NEW_TOKENS / seconds["cached_own_forward"],
               "own_forward_over_cached": seconds["cached_own_forward"] / seconds["cached"],
               **per_token_counts(contenders["cached"], "cached"),
               **per_token_counts(contenders["cached_composed"], "cached_composed"),
               **per_token_counts(contenders["cached_own_forward"], "cached_own_forward")}
    if torch is not None:
        results["torch_concat_cache_tokens_per_s"] = NEW_TOKENS / seconds["torch"]
        # Medians of the ratios within each round, as in bench_train.
        results["ratio_vs_torch"] = paired_ratio(rounds, "torch", "cached")
        results["torch_1_thread_tokens_per_s"] = NEW_TOKENS / seconds["torch_1_thread"]
        results["ratio_vs_torch_1_thread"] = paired_ratio(rounds, "torch_1_thread", "cached")
    return emit("decode", results)


if __name__ == "__main__":
    run()
