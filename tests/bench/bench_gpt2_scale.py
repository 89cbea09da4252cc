"""Performance at the size of a real model: GPT-2 124M (`GPT2Config()`'s shape) and a
Llama-shaped ~135M (SmolLM-135M's published config), random weights, side by side with
`transformers` (PyTorch) in one run.

Each model is written as a Hugging Face directory (by `transformers` when installed, else
by our `save_pretrained`) and then measured, per model:

- **load**: `DecoderLM.from_pretrained` in a fresh process that only imports and loads:
  seconds, the RSS before loading (interpreter and libraries) and the process's peak RSS,
  against `AutoModelForCausalLM.from_pretrained` the same way;
- **greedy decode**: tokens/s of `generate(..., temperature=0)` (a PROMPT-token prompt,
  NEW_TOKENS new ones) against `transformers`' `generate`, the tokens checked equal, and
  as a share of the memory-bandwidth limit measured in the same run: a token reads every
  weight once, so bytes per token x tokens/s over the bandwidth. The bandwidth is NumPy
  summing a 1 GB float32 array, on one thread and on two (each thread its own 1 GB);
  the same over a GEMV (`rows @ ones`, what decoding does) is reported beside it;
- **prefill** of a 512-token prompt into an empty cache, against `transformers`;
- **training step**: forward + backward + AdamW at batch 4, length 128 (dropout off on
  both sides), against PyTorch, and the peak RSS of a fresh process that loads and runs
  two steps (ours and PyTorch's apart);
- **write_player** of the model's loss (batch 1, 16 tokens): seconds and MB written.

The contenders take turns (`common.side_by_side`, a pause before each turn) and the
figures are medians; the load average is recorded at the start and at the end, because a
busy shared machine moves every figure. Slow (minutes): `tests/bench/run.py` runs it
only with `--scale`.

    python tests/bench/bench_gpt2_scale.py [--model gpt2|llama|both] [--quick]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from common import emit, environment, paired_ratio, side_by_side, torch


@functools.cache
def hf_transformers():
    """`transformers`, or None when it is not installed; imported when first needed (it
    takes seconds, and run.py imports this module for every run)."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers

# SmolLM-135M's published config.json (HuggingFaceTB/SmolLM-135M): the Llama-shaped row.
SMOLLM_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
               "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
               "tie_word_embeddings": True, "hidden_act": "silu"}
MODELS = ("gpt2", "llama")
PROMPT, NEW_TOKENS, PREFILL = 16, 64, 512
BATCH, LENGTH = 4, 128
PLAYER_LENGTH = 16
GB = 1 << 30


# ---------------------------------------------------------------------- checkpoints
def write_checkpoint(kind: str, path: str) -> str:
    """Write a random-weight model of `kind` ("gpt2" or "llama") as a Hugging Face
    directory at `path`; returns which library wrote it."""
    transformers = hf_transformers()
    if transformers is not None:
        torch.manual_seed(0)
        if kind == "gpt2":
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        else:
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM_135M))
        model.save_pretrained(path)
        return f"transformers {transformers.__version__}"
    import microtensor as mt
    from transformer import DecoderLM, LMConfig
    mt.manual_seed(0)
    if kind == "gpt2":
        config = LMConfig.gpt2(50257, d_model=768, n_heads=12, n_layers=12, d_ff=3072,
                               max_len=1024, tie_weights=True)
    else:
        c = SMOLLM_135M
        config = LMConfig.llama(c["vocab_size"], d_model=c["hidden_size"],
                                n_heads=c["num_attention_heads"],
                                n_layers=c["num_hidden_layers"], d_ff=c["intermediate_size"],
                                n_kv_heads=c["num_key_value_heads"],
                                max_len=c["max_position_embeddings"],
                                rope_theta=c["rope_theta"], norm_eps=c["rms_norm_eps"],
                                tie_weights=True)
    DecoderLM(config).save_pretrained(path)
    return "microtensor save_pretrained"


def bytes_per_token(model) -> int:
    """What one decoding step must read: every weight once, the token table once (as the
    tied head, or the head itself; a looked-up row of a table is negligible)."""
    total = 0
    for name, param in model.named_parameters():
        if name.startswith("position."):
            continue
        if name.startswith("tok_embed.") and model.head is not None:
            continue
        total += param.data.nbytes
    return total


# ---------------------------------------------------------------------- bandwidth
class Bandwidth:
    """Memory bandwidth as NumPy reaches it: a sum over a 1 GB float32 array on one
    thread, and on two threads at once (each its own 1 GB; NumPy releases the GIL).
    `gemv_*` read the same arrays as `rows @ ones`, one BLAS matrix-vector product."""

    def __init__(self):
        self.arrays = [np.ones(GB // 4, np.float32) for _ in range(2)]
        self.ones = np.ones(4096, np.float32)

    def _sum(self, array):
        array.sum()

    def _gemv(self, array):
        array.reshape(-1, len(self.ones)) @ self.ones

    def one(self, kernel):
        return lambda: kernel(self.arrays[0])

    def two(self, kernel):
        def run():
            threads = [threading.Thread(target=kernel, args=(a,)) for a in self.arrays]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return run

    def contenders(self) -> dict:
        return {"sum_1_thread": self.one(self._sum), "sum_2_threads": self.two(self._sum),
                "gemv_1_thread": self.one(self._gemv), "gemv_2_threads": self.two(self._gemv)}

    @staticmethod
    def rates(seconds: dict) -> dict:
        """GB/s (10^9 bytes) from the median seconds of each contender."""
        return {f"{name}_gb_s": (2 if name.endswith("2_threads") else 1) * GB / seconds[name]
                / 1e9 for name in ("sum_1_thread", "sum_2_threads", "gemv_1_thread",
                                   "gemv_2_threads")}


# ---------------------------------------------------------------------- children
# Peak RSS is VmHWM, the high-water mark of this process's own memory: getrusage's
# ru_maxrss survives exec, so a child would report its parent's peak if that was higher.
CHILD_LOAD = """
import json, os, sys, time
def rss_mb(field="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field)) / 1024
library, path = sys.argv[1], sys.argv[2]
if library == "microtensor":
    from transformer import DecoderLM
    load = DecoderLM.from_pretrained
else:
    import torch, transformers
    load = transformers.AutoModelForCausalLM.from_pretrained
before = rss_mb()
start = time.perf_counter()
model = load(path)
seconds = time.perf_counter() - start
print(json.dumps({"load_s": seconds, "rss_before_mb": before, "rss_after_mb": rss_mb(),
                  "peak_rss_mb": rss_mb("VmHWM")}))
"""

CHILD_TRAIN = """
import json, os, sys
sys.path.insert(0, {bench!r})
import bench_gpt2_scale as bench
def rss_mb(field="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field)) / 1024
library, path = sys.argv[1], sys.argv[2]
step = (bench.our_train_step if library == "microtensor" else bench.torch_train_step)(path)
loaded = rss_mb()
for _ in range(2):
    step()
print(json.dumps({{"rss_after_load_mb": loaded, "rss_after_steps_mb": rss_mb(),
                  "peak_rss_mb": rss_mb("VmHWM")}}))
"""


def child(script: str, library: str, path: str) -> dict:
    """Run `script` in a fresh Python process and return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", script, library, path], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- contenders
def training_batch(vocab: int, seed: int = 0):
    ids = np.random.default_rng(seed).integers(0, vocab, (BATCH, LENGTH + 1))
    return ids[:, :-1], ids[:, 1:]


def our_train_step(path: str, model=None):
    """Our forward + backward + AdamW step as a user's loop runs it (dropout off)."""
    import microtensor as mt
    import microtensor.functional as F
    from microtensor.optim import AdamW
    from transformer import DecoderLM
    model = model or DecoderLM.from_pretrained(path)
    model.train()
    optimizer = AdamW(model.parameters(), lr=1e-4)
    ids, targets = training_batch(model.config.vocab)

    def step():
        with mt.dropout_off():
            logits = model(ids)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.item())
    return step


def torch_train_step(path: str, model=None):
    """The same step in PyTorch on `transformers`' model (eval(): dropout off, gradients
    on), the loss computed as ours is."""
    model = model or hf_transformers().AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, targets = (torch.from_numpy(a) for a in training_batch(model.config.vocab_size))

    def step():
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.item())
    return step


def reference_torch_step(config):
    """Without `transformers`: the step of tests/bench/reference.py's PyTorch GPT of the
    same sizes (random weights; its head is a Linear of its own, not the tied table)."""
    from reference import TorchDecoderLM
    torch.manual_seed(0)
    model = TorchDecoderLM(config.vocab, config.d_model, config.n_heads, config.n_layers,
                           config.d_ff, config.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, targets = (torch.from_numpy(a) for a in training_batch(config.vocab))

    def step():
        loss = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.item())
    return step


def hf_generate(model, prompt: np.ndarray, new_tokens: int):
    from transformers import GenerationConfig
    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    ids = torch.from_numpy(prompt)
    mask = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, generation_config=config).numpy()
    return run


def measure_model(kind: str, folder: str, rounds: int, new_tokens: int) -> dict:
    import microtensor as mt
    from transformer import DecoderLM

    transformers = hf_transformers()
    path = os.path.join(folder, kind)
    record = {"checkpoint_by": write_checkpoint(kind, path)}
    libraries = ["microtensor"] + (["transformers"] if transformers is not None else [])
    # Fresh processes first, while this one holds nothing big.
    for library in libraries:
        record[f"load_{library}"] = statistics_of(
            [child(CHILD_LOAD, library, path) for _ in range(max(1, rounds // 2))])
    model = DecoderLM.from_pretrained(path)
    weights = sum(p.data.nbytes for p in model.parameters())
    record.update(parameters=sum(p.data.size for p in model.parameters()),
                  weights_mb=weights / 1e6, bytes_per_token_mb=bytes_per_token(model) / 1e6)
    load = record["load_microtensor"]
    record["load_goal_mb"] = load["rss_before_mb"] + 1.3 * weights / 2**20
    record["load_peak_over_goal"] = load["peak_rss_mb"] / record["load_goal_mb"]
    hf = None
    if transformers is not None:
        hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()

    # Greedy decode, beside the bandwidth measured in the same turns.
    vocab = model.config.vocab
    prompt = np.random.default_rng(1).integers(0, vocab, (1, PROMPT))
    bandwidth = Bandwidth()
    contenders = {"decode_microtensor": lambda: model.generate(prompt, new_tokens,
                                                               temperature=0)}
    if hf is not None:
        contenders["decode_transformers"] = hf_generate(hf, prompt, new_tokens)
    contenders.update(bandwidth.contenders())
    per_round = {}
    seconds = side_by_side(contenders, rounds=rounds, per_round=per_round)
    rates = Bandwidth.rates(seconds)
    del bandwidth
    ours_per_s = new_tokens / seconds["decode_microtensor"]
    read_per_s = ours_per_s * record["bytes_per_token_mb"] * 1e6 / 1e9     # GB/s
    record["decode"] = {
        "prompt": PROMPT, "new_tokens": new_tokens, **rates,
        "microtensor_tokens_per_s": ours_per_s,
        "microtensor_reads_gb_s": read_per_s,
        "share_of_sum_2_threads": read_per_s / rates["sum_2_threads_gb_s"],
        "share_of_sum_1_thread": read_per_s / rates["sum_1_thread_gb_s"],
        "share_of_gemv_2_threads": read_per_s / rates["gemv_2_threads_gb_s"]}
    if hf is not None:
        ours, theirs = contenders["decode_microtensor"](), contenders["decode_transformers"]()
        theirs_per_s = new_tokens / seconds["decode_transformers"]
        record["decode"].update(
            transformers_tokens_per_s=theirs_per_s,
            transformers_share_of_sum_2_threads=(theirs_per_s * record["bytes_per_token_mb"]
                                                 / 1e3 / rates["sum_2_threads_gb_s"]),
            ratio_vs_transformers=paired_ratio(per_round, "decode_transformers",
                                               "decode_microtensor"),
            same_tokens=bool((ours == theirs).all()),
            tokens_equal_before_first_difference=int(np.argmin(
                np.append(ours[0] == theirs[0], False))) - PROMPT)

    # Prefill of a 512-token prompt into an empty cache.
    long_prompt = np.random.default_rng(2).integers(0, vocab, (1, PREFILL))

    def our_prefill():
        with mt.no_grad():
            model(long_prompt, cache=model.new_cache(1, PREFILL))
    contenders = {"prefill_microtensor": our_prefill}
    if hf is not None:
        torch_prompt = torch.from_numpy(long_prompt)

        def torch_prefill():
            with torch.no_grad():
                hf(input_ids=torch_prompt, use_cache=True)
        contenders["prefill_transformers"] = torch_prefill
    per_round = {}
    seconds = side_by_side(contenders, rounds=rounds, per_round=per_round)
    record["prefill"] = {"tokens": PREFILL, "microtensor_s": seconds["prefill_microtensor"]}
    if hf is not None:
        record["prefill"].update(transformers_s=seconds["prefill_transformers"],
                                 ratio_vs_transformers=paired_ratio(
                                     per_round, "prefill_microtensor", "prefill_transformers"))

    # The training step (the model is trained from here on: decoding is done).
    train = our_train_step(path, model)
    contenders = {"train_microtensor": train}
    if hf is not None:
        contenders["train_torch"] = torch_train_step(path, hf)
    elif torch is not None and kind == "gpt2":
        contenders["train_torch"] = reference_torch_step(model.config)
        record["train_step_torch_model"] = "reference.TorchDecoderLM (untied head)"
    per_round = {}
    seconds = side_by_side(contenders, rounds=rounds, per_round=per_round)
    record["train_step"] = {"batch": BATCH, "length": LENGTH,
                            "microtensor_s": seconds["train_microtensor"]}
    if hf is not None:
        record["train_step"].update(torch_s=seconds["train_torch"],
                                    ratio_vs_torch=paired_ratio(per_round, "train_microtensor",
                                                                "train_torch"))
    hf = contenders = None   # freed before the profile and the children
    record["train_step"]["per_op"] = profile_rows(train)
    record["decode"]["per_op"] = decode_profile(model, prompt)

    for library in libraries:
        if library == "transformers" and torch is None:
            continue
        record["train_step"][f"rss_{library}"] = child(
            CHILD_TRAIN.format(bench=os.path.dirname(os.path.abspath(__file__))),
            library, path)
    record["write_player"] = player(model, os.path.join(folder, f"{kind}-player.html"))
    return record


def statistics_of(runs: list[dict]) -> dict:
    """The median of each figure over runs of a child."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def profile_rows(step) -> dict:
    """Per-op table of one training step, ms and MB."""
    import microtensor as mt
    with mt.profile() as prof:
        step()
    return rows_of(prof)


def decode_profile(model, prompt) -> dict:
    """Per-op table of greedy decoding (FastDecoder runs no ops: an empty table says so)
    and where its Python time goes, from cProfile: the functions with the most own time
    per token."""
    import cProfile
    import pstats

    import microtensor as mt
    with mt.profile() as prof:
        model.generate(prompt, 8, temperature=0)
    profiler = cProfile.Profile()
    profiler.enable()
    model.generate(prompt, 8, temperature=0)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    top = sorted(stats.items(), key=lambda item: -item[1][2])[:12]
    return {"ops": rows_of(prof),
            "python_top_own_ms_per_token": {f"{os.path.basename(f)}:{line}({name})":
                                            1e3 * row[2] / 8
                                            for (f, line, name), row in top}}


def rows_of(prof) -> dict:
    return {name: {"forward_ms": 1e3 * r["forward_s"], "backward_ms": 1e3 * r["backward_s"],
                   "forward_calls": r["forward_calls"], "backward_calls": r["backward_calls"],
                   "forward_mb": r["forward_bytes"] / 1e6,
                   "backward_mb": r["backward_bytes"] / 1e6}
            for name, r in prof.sorted_rows()}


def player(model, path: str) -> dict:
    """write_player of the model's loss on one short row: seconds and MB."""
    import microtensor as mt
    import microtensor.functional as F
    import viz
    ids = np.random.default_rng(3).integers(0, model.config.vocab, (1, PLAYER_LENGTH + 1))
    with mt.dropout_off():
        loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
    start = time.perf_counter()
    viz.write_player(loss, path, params=model)
    return {"seconds": time.perf_counter() - start, "mb": os.path.getsize(path) / 1e6,
            "tokens": PLAYER_LENGTH}


def run(models=MODELS, quick: bool = False) -> dict:
    rounds = 3 if quick else 5
    new_tokens = 32 if quick else NEW_TOKENS
    transformers = hf_transformers()
    results = {"environment": environment(), "quick": quick,
               "transformers": None if transformers is None else transformers.__version__}
    folder = tempfile.mkdtemp(prefix="bench-gpt2-scale-")
    try:
        for kind in models:
            results[kind] = measure_model(kind, folder, rounds, new_tokens)
            for row in summary_rows({kind: results[kind]}):      # progress, as it goes
                print(" | ".join(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["load_average_1m_at_end"] = os.getloadavg()[0]
    return emit("gpt2_scale", results)


def summary_rows(results: dict) -> list:
    """(benchmark, microtensor, torch, numpy floor, ratio) rows for run.py's table."""
    rows = []
    for kind in MODELS:
        if kind not in results:
            continue
        r = results[kind]
        name = "GPT-2 124M" if kind == "gpt2" else "Llama 135M"
        d, p, t = r["decode"], r["prefill"], r["train_step"]
        load, hf_load = r["load_microtensor"], r.get("load_transformers", {})
        rows += [
            (f"{name} load (s; peak RSS MB)",
             f"{load['load_s']:.2f}; {load['peak_rss_mb']:.0f}",
             (f"{hf_load.get('load_s', float('nan')):.2f}; "
              f"{hf_load.get('peak_rss_mb', float('nan')):.0f}"), "",
             (f"peak / (before {load['rss_before_mb']:.0f} + 1.3 x {r['weights_mb']:.0f}) "
              f"{r['load_peak_over_goal']:.2f} (goal <= 1.0)")),
            (f"{name} greedy decode (tokens/s)", f"{d['microtensor_tokens_per_s']:.1f}",
             f"{d.get('transformers_tokens_per_s', float('nan')):.1f}", "",
             (f"vs transformers {d.get('ratio_vs_transformers', float('nan')):.2f} "
              f"(goal >= 1.0); {100 * d['share_of_sum_2_threads']:.0f}% of "
              f"{d['sum_2_threads_gb_s']:.1f} GB/s (aim 70%)")),
            (f"{name} prefill {p['tokens']} tokens (s)", f"{p['microtensor_s']:.2f}",
             f"{p.get('transformers_s', float('nan')):.2f}", "",
             f"vs transformers {p.get('ratio_vs_transformers', float('nan')):.2f}"),
            (f"{name} train step B{t['batch']} T{t['length']} (s)", f"{t['microtensor_s']:.2f}",
             f"{t.get('torch_s', float('nan')):.2f}", "",
             f"vs torch {t.get('ratio_vs_torch', float('nan')):.2f} (goal <= 1.15); peak RSS "
             f"{t['rss_microtensor']['peak_rss_mb']:.0f} MB"
             + (f" (torch {t['rss_transformers']['peak_rss_mb']:.0f})"
                if "rss_transformers" in t else "")),
            (f"{name} write_player (s; MB)", (f"{r['write_player']['seconds']:.2f}; "
                                              f"{r['write_player']['mb']:.1f}"),
             "", "", "goal < 3 s"),
        ]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tokens")
    args = parser.parse_args()
    results = run(MODELS if args.model == "both" else (args.model,), args.quick)
    for row in summary_rows(results):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
