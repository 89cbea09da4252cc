"""One training step (forward + backward + AdamW) of the reference DecoderLM, side by side
with the same model in PyTorch (if installed) and with the bare-NumPy GEMM floor: the time
of just the matrix products that forward + backward must do, which no NumPy framework can
beat. Our step runs twice: as a user's own loop gets it (the default: the modules' fast
forms, `transformer.fast`) and with every module's textbook forward (`mt.fast_paths(False)`).
Then the same for a lesson-sized model (SMALL_CONFIG), where overhead dominates.

The yardstick for the engine's own cost is the same step written by hand in NumPy
(forward, backward and AdamW in closed form, `numpy_manual.py`, kept outside the project
in a `shared/bench/` folder beside the repository). When that file is found, or named by
the environment variable MICROTENSOR_NUMPY_MANUAL, it is imported and its `ManualGPT`
step, built with the same sizes, takes turns with ours; otherwise that row is skipped
with a note. The NumPy-based steps (ours, the floor, the hand-written one) alternate
single calls, PAIRS each, and a ratio is the median of neighbouring calls' ratios, with
a 90% interval; PyTorch takes ROUNDS turns (with a pause) beside ours, and that ratio is
the median over rounds of the ratio within a round. A third contender of ours,
`ops_only_step`, calls the fast step's primitives with no engine: the fast step over it
is what the engine itself costs. Last, one step is run under `mt.profile()` for the
per-op table.

    python tests/bench/bench_train.py
"""
from __future__ import annotations

import importlib.util
import math
import os
import statistics

import numpy as np
from common import (
    alternating_calls,
    emit,
    paired_ratio,
    ratio_with_interval,
    side_by_side,
    torch,
)
from reference import CONFIG, SMALL_CONFIG, batch, numpy_gemm_floor_step, reference_model

import microtensor as mt
import microtensor.functional as F
from microtensor.optim import AdamW
from transformer.attention import causal_mask
from transformer.fast import fused_feed_forward, fused_self_attention
from transformer.layers import positions_from_valid

ROUNDS = 9  # turns per contender beside PyTorch; on a drifting VM more rounds steady ratios
PAIRS = 40  # alternating single calls per NumPy-based contender (common.alternating_calls)


def microtensor_step(config=CONFIG, fast: bool = True, flat_adamw: bool = True):
    """Our step as a user's loop runs it; `fast=False` inside `mt.fast_paths(False)` (every
    module's textbook forward); `flat_adamw=False` runs AdamW's per-parameter update."""
    model = reference_model(config)
    optimizer = AdamW(model.parameters(), lr=1e-3, flat=flat_adamw)
    ids, targets = batch(config)

    def step():
        with mt.fast_paths(fast):
            logits = model(ids)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    step.model = model   # for the test that holds ops_only_step to this step
    return step


def ops_only_step(config=CONFIG):
    """The fast step's own primitives called in order with no engine: each op's NumPy
    forward (`op.forward`), then the backward closures they returned, in reverse, the
    gradients summed and accumulated as backward() does, then the same AdamW. What the
    real step costs beyond this is the engine's and the modules' own work: recording
    nodes, the topological walk, routing gradients, module calls and hook checks.
    It follows `microtensor_step(config)` on the reference model's
    structure (GPT style, learned positions, pre-LN, GELU, untied head). `measure` checks
    its first loss equal to that step's, and tests/test_bench_ops_only.py every gradient,
    so the two cannot drift apart unnoticed."""
    model = reference_model(config)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids, targets = batch(config)
    positions = positions_from_valid(np.ones(ids.shape, dtype=bool))
    allowed = causal_mask(ids.shape[1], ids.shape[1])
    embedding, layer_norm_linear = F.embedding.forward, F.layer_norm_linear.forward
    layer_norm = F.layer_norm.forward
    linear, feed_forward = F.linear.forward, fused_feed_forward.forward
    cross_entropy = mt.ops.neural.cross_entropy.forward     # the fused op F.cross_entropy runs
    token, position = model.tok_embed.weight, model.position.table.weight

    def accumulate(params, grads):
        for param, grad in zip(params, grads):
            param._accumulate_grad(grad)

    def step():
        optimizer.zero_grad()
        tokens, token_backward = embedding(ids, token.data)
        positioned, position_backward = embedding(positions, position.data)
        x = tokens + positioned
        saved = []
        for block in model.blocks:
            attention, norm1, norm2, ffn = block.self_attn, block.norm1, block.norm2, block.ffn
            projections = (attention.W_q, attention.W_k, attention.W_v)
            scale = 1 / math.sqrt(attention.d_k)       # folded into W_q, as the model does
            weight = np.concatenate([projections[0].weight.data * scale,
                                     *(p.weight.data for p in projections[1:])], axis=1)
            bias = np.concatenate([projections[0].bias.data * scale,
                                   *(p.bias.data for p in projections[1:])])
            qkv, qkv_backward = layer_norm_linear(x, norm1.weight.data, norm1.bias.data,
                                                  weight, bias, eps=norm1.eps)
            heads, attention_backward = fused_self_attention.forward(
                qkv, None, n_heads=attention.n_heads, n_kv_heads=attention.n_kv_heads,
                allowed=allowed, scale=1.0)
            out, out_backward = linear(heads, attention.W_o.weight.data,
                                       attention.W_o.bias.data)
            x = x + out
            out, ffn_backward = feed_forward(
                x, norm2.weight.data, norm2.bias.data, ffn.W_1.weight.data,
                ffn.W_1.bias.data, ffn.W_2.weight.data, ffn.W_2.bias.data, eps=norm2.eps)
            x = x + out
            saved.append((block, scale, qkv_backward, attention_backward, out_backward,
                          ffn_backward))
        norm, head = model.norm, model.head
        normed, norm_backward = layer_norm(x, norm.weight.data, norm.bias.data, eps=norm.eps)
        logits, head_backward = linear(normed, head.weight.data, None)
        loss, loss_backward = cross_entropy(logits, targets)

        grad_normed, grad_head, _ = head_backward(loss_backward(np.ones((), loss.dtype))[0])
        accumulate([head.weight], [grad_head])
        grad_x, *grads = norm_backward(grad_normed)
        accumulate([norm.weight, norm.bias], grads)
        for (block, scale, qkv_backward, attention_backward, out_backward,
             ffn_backward) in reversed(saved):
            attention, ffn = block.self_attn, block.ffn
            grad_inner, *grads = ffn_backward(grad_x)
            accumulate([block.norm2.weight, block.norm2.bias, ffn.W_1.weight, ffn.W_1.bias,
                        ffn.W_2.weight, ffn.W_2.bias], grads)
            grad_x = np.add(grad_inner, grad_x, out=grad_inner)   # the residual's two paths
            grad_heads, *grads = out_backward(grad_x)
            accumulate([attention.W_o.weight, attention.W_o.bias], grads)
            grad_qkv = attention_backward(grad_heads)[0]
            grad_inner, grad_norm_weight, grad_norm_bias, grad_weight, grad_bias = \
                qkv_backward(grad_qkv)
            accumulate([block.norm1.weight, block.norm1.bias],
                       [grad_norm_weight, grad_norm_bias])
            start = 0
            for i, p in enumerate((attention.W_q, attention.W_k, attention.W_v)):
                part = slice(start, start + p.weight.shape[1])
                start = part.stop
                accumulate([p.weight, p.bias], [grad_weight[:, part] * (scale, 1, 1)[i],
                                                grad_bias[part] * (scale, 1, 1)[i]])
            grad_x = np.add(grad_inner, grad_x, out=grad_inner)
        accumulate([token, position], [token_backward(grad_x)[1], position_backward(grad_x)[1]])
        optimizer.step()
        return float(loss)
    step.model = model
    return step


def find_numpy_manual() -> str | None:
    """The hand-written step's file: $MICROTENSOR_NUMPY_MANUAL, else numpy_manual.py in a
    shared/bench/ folder next to the repository's folder. None if neither exists (a plain
    clone has neither: the benchmark then skips that row)."""
    named = os.environ.get("MICROTENSOR_NUMPY_MANUAL")
    if named:
        return named if os.path.isfile(named) else None
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    beside = os.path.join(os.path.dirname(repo), "shared", "bench", "numpy_manual.py")
    return beside if os.path.isfile(beside) else None


def numpy_manual_step(path: str, config=CONFIG):
    """The hand-written NumPy training step (its own AdamW, lr 3e-3) on our batch sizes."""
    spec = importlib.util.spec_from_file_location("numpy_manual", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ManualGPT(vocab=config["vocab"], d=config["d_model"],
                             heads=config["n_heads"], layers=config["n_layers"],
                             d_ff=config["d_ff"], T=config["seq"], B=config["batch"]).init(seed=0)
    ids, targets = batch(config)

    def step():
        model.train_step(ids, targets)
    return step


def profile_step(config=CONFIG, steps: int = 3) -> dict:
    """Per-op forward/backward ms, calls and output MB of one training step as a user's
    loop runs it (the mean of `steps` profiled steps after one warm-up). AdamW's in-place
    updates are not ops."""
    step = microtensor_step(config)
    step()
    with mt.profile() as prof:
        for _ in range(steps):
            step()
    table = {name: {"forward_ms": 1e3 * r["forward_s"] / steps,
                    "backward_ms": 1e3 * r["backward_s"] / steps,
                    "forward_calls": r["forward_calls"] // steps,
                    "backward_calls": r["backward_calls"] // steps,
                    "forward_mb": r["forward_bytes"] / steps / 1e6,
                    "backward_mb": r["backward_bytes"] / steps / 1e6}
             for name, r in prof.sorted_rows()}
    print(prof.table(per=steps), flush=True)
    return table


def torch_step(config=CONFIG):
    from reference import TorchDecoderLM
    torch.manual_seed(0)
    model = TorchDecoderLM(config["vocab"], config["d_model"], config["n_heads"],
                           config["n_layers"], config["d_ff"], config["seq"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, targets = (torch.from_numpy(a) for a in batch(config))

    def step():
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config["vocab"]),
                                                 targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def measure(config: dict, repeat: int) -> dict:
    """Our step (default and textbook), the GEMM floor and the hand-written step in
    alternating single calls (`alternating_calls`: their ratios to about 1%), then ours
    and PyTorch's in rounds with a pause (`side_by_side`)."""
    steps = {"microtensor": microtensor_step(config),
             "textbook": microtensor_step(config, fast=False),
             "ops_only": ops_only_step(config),
             "floor": numpy_gemm_floor_step(config)}
    first, again = float(steps["microtensor"]().data), steps["ops_only"]()
    if abs(first - again) > 1e-6 * abs(first):   # the same weights and batch: the same loss
        raise RuntimeError(f"bench_train: ops_only_step's loss {again} is not the fast "
                           f"step's {first}: make it follow the model again")
    manual = find_numpy_manual()
    if manual is not None:
        steps["numpy_manual"] = numpy_manual_step(manual, config)
    calls = alternating_calls(steps, pairs=PAIRS)
    ms = {name: 1e3 * statistics.median(times) for name, times in calls.items()}
    results = {"config": config, "pairs": PAIRS, "rounds": ROUNDS,
               "microtensor_ms": ms["microtensor"], "numpy_gemm_floor_ms": ms["floor"],
               "textbook_ms": ms["textbook"]}
    results["ratio_vs_floor"] = results["microtensor_ms"] / results["numpy_gemm_floor_ms"]
    # The engine's own cost: the fast step against its primitives called with no engine.
    results["ops_only_ms"] = ms["ops_only"]
    engine = ratio_with_interval(calls, "microtensor", "ops_only")
    results["ratio_vs_ops_only"] = engine["ratio"]
    results["ratio_vs_ops_only_interval_90"] = engine["interval_90"]
    if manual is None:
        results["numpy_manual_note"] = ("skipped: numpy_manual.py not found (set "
                                        "MICROTENSOR_NUMPY_MANUAL to its path)")
    else:
        results["numpy_manual_ms"] = ms["numpy_manual"]
        for name, prefix in (("microtensor", ""), ("textbook", "textbook_"),
                             ("ops_only", "ops_only_")):
            paired = ratio_with_interval(calls, name, "numpy_manual")
            results[f"{prefix}ratio_vs_numpy_manual"] = paired["ratio"]
            results[f"{prefix}ratio_vs_numpy_manual_interval_90"] = paired["interval_90"]
    if torch is not None:
        rounds = {}
        seconds = side_by_side({"microtensor": steps["microtensor"],
                                "textbook": steps["textbook"],
                                "torch": torch_step(config)},
                               rounds=ROUNDS, repeat=repeat, warmup=2, per_round=rounds)
        results["torch_ms"] = 1e3 * seconds["torch"]
        # Ratios are medians of the ratios within each round (common.paired_ratio).
        results["ratio_vs_torch"] = paired_ratio(rounds, "microtensor", "torch")
        results["textbook_ratio_vs_torch"] = paired_ratio(rounds, "textbook", "torch")
    return results


def run(repeat: int = 7) -> dict:
    """The reference model (the targets), then a lesson-sized one for comparison."""
    results = measure(CONFIG, repeat)
    results["small_model"] = measure(SMALL_CONFIG, repeat)
    results["per_op"] = profile_step(CONFIG)
    return emit("train_step", results)


if __name__ == "__main__":
    run()
