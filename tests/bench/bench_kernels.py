"""Each speed trick in microtensor/kernels.py against the plain NumPy it replaces, on
the shapes where it is used. The figures behind the comments in the fast primitives
live here, so they can be re-measured on any machine:

    python tests/bench/bench_kernels.py

Each row gives the plain form's time, the trick's time (microseconds per call) and
plain / trick (above 1: the trick is faster).
"""
import numpy as np
from common import emit, side_by_side, torch

import microtensor as mt
from microtensor import kernels, optim
from microtensor.ops import neural as nn_ops
from microtensor.ops.activation import gelu_exact, gelu_exact_reference
from microtensor.ops.elementwise import (
    gelu_tanh,
    gelu_tanh_reference,
    masked_fill,
    masked_fill_reference,
)
from microtensor.ops.neural import (
    cross_entropy,
    cross_entropy_reference,
    embedding,
    embedding_reference,
    layer_norm,
    layer_norm_reference,
    softmax,
    softmax_reference,
)


def compare(plain, trick, number: int) -> dict:
    times = side_by_side({"plain": plain, "trick": trick}, rounds=5, number=number)
    return {"plain_us": 1e6 * times["plain"], "trick_us": 1e6 * times["trick"],
            "speedup": times["plain"] / times["trick"]}


def forward_and_backward(form, *inputs):
    out, backward = form(*inputs)
    backward(np.ones_like(out))


def run(number: int = 20) -> dict:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((8, 4, 64, 64)).astype(np.float32)    # attention
    hidden = rng.standard_normal((8 * 64, 256)).astype(np.float32)     # activations
    wide = rng.standard_normal((16, 64, 512)).astype(np.float32)       # an MLP's middle
    ids = rng.integers(0, 1000, (8, 64))
    table = rng.standard_normal((1000, 256)).astype(np.float32)
    ones = np.ones(256, np.float32)
    logits = rng.standard_normal((16, 64, 96)).astype(np.float32)      # a character LM
    targets = rng.integers(0, 96, (16, 64))
    causal = ~np.tril(np.ones((64, 64), bool))                         # blocked keys
    results = {
        "fmax_vs_max_rows": compare(lambda: np.max(scores, -1), lambda: np.fmax.reduce(
            scores, -1), number),
        "gemv_vs_sum_last_axis": compare(lambda: scores.sum(-1),
                                         lambda: kernels.sum_over_last_axis(scores), number),
        "gemv_vs_sum_rows": compare(lambda: hidden.sum(0),
                                    lambda: kernels.sum_over_rows(hidden), number),
        "averager_vs_mean": compare(lambda: hidden.mean(-1),
                                    lambda: hidden @ kernels.averager(256, np.float32),
                                    number),
        "softmax": compare(lambda: forward_and_backward(softmax_reference, scores),
                           lambda: forward_and_backward(softmax.forward, scores), number),
        "layer_norm": compare(
            lambda: forward_and_backward(layer_norm_reference, hidden, ones, ones),
            lambda: forward_and_backward(layer_norm.forward, hidden, ones, ones), number),
        "gelu_blocked": compare(lambda: forward_and_backward(gelu_tanh_reference, wide),
                                lambda: forward_and_backward(gelu_tanh.forward, wide), number),
        "embedding_backward": compare(
            lambda: forward_and_backward(embedding_reference, ids, table),
            lambda: forward_and_backward(embedding.forward, ids, table), number),
        "gelu_exact": compare(lambda: forward_and_backward(gelu_exact_reference, wide[:2]),
                              lambda: forward_and_backward(gelu_exact.forward, wide[:2]),
                              number),
        "cross_entropy": compare(
            lambda: forward_and_backward(cross_entropy_reference, logits, targets),
            lambda: forward_and_backward(cross_entropy.forward, logits, targets), number),
        "masked_fill": compare(
            lambda: forward_and_backward(masked_fill_reference, scores, causal, -np.inf),
            lambda: forward_and_backward(lambda x, m, v: masked_fill.forward(x, m, value=v),
                                         scores, causal, -np.inf), number),
        "adamw_step_1.3M": compare(*adamw_steps(), number=max(1, number // 4)),
    }
    results.update(embedding_one_hot_crossover(number))
    if torch is not None:
        params = [torch.zeros(1024, 1280, requires_grad=True)]
        params[0].grad = torch.ones(1024, 1280)
        torch_adamw = torch.optim.AdamW(params, lr=1e-3)
        results["adamw_step_1.3M"]["torch_us"] = 1e6 * side_by_side(
            {"torch": torch_adamw.step}, rounds=5, number=max(1, number // 4))["torch"]
    return emit("kernels", results)


def embedding_one_hot_crossover(number: int) -> dict:
    """embedding's backward as a sort + segmented sum ("plain") and as a one-hot GEMM
    ("trick") for tables of 32 to 256 rows, 1024 and 4096 ids of width 128: where the
    GEMM stops winning sets nn.ONE_HOT_MAX_VOCAB."""
    rng = np.random.default_rng(0)
    rows = {}
    for n_ids in (1024, 4096):
        grad = rng.standard_normal((n_ids, 128)).astype(np.float32)
        for vocab in (32, 64, 96, 128, 192, 256):
            ids = rng.integers(0, vocab, n_ids)
            table = rng.standard_normal((vocab, 128)).astype(np.float32)

            def backward_with(max_vocab, ids=ids, table=table, grad=grad):
                def run_backward():
                    saved, nn_ops.ONE_HOT_MAX_VOCAB = nn_ops.ONE_HOT_MAX_VOCAB, max_vocab
                    try:
                        embedding.forward(ids, table)[1](grad)
                    finally:
                        nn_ops.ONE_HOT_MAX_VOCAB = saved
                return run_backward
            rows[f"embedding_one_hot_{n_ids}_ids_vocab_{vocab}"] = compare(
                backward_with(0), backward_with(vocab), number)
    return rows


def adamw_steps():
    """The textbook AdamW update (a new array per term) and optim.AdamW's in-place one."""
    shape, lr, beta1, beta2, eps, decay = (1024, 1280), 1e-3, 0.9, 0.999, 1e-8, 0.01
    p = np.zeros(shape, np.float32)
    g = np.ones(shape, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)

    def textbook():
        nonlocal p, m, v
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1) / (np.sqrt(v / (1 - beta2)) + eps) + decay * p)
    param = mt.nn.Parameter(np.zeros(shape, np.float32))
    param.grad = g
    adamw = optim.AdamW([param], lr=lr, weight_decay=decay)
    return textbook, adamw.step


if __name__ == "__main__":
    for name, row in run().items():
        if isinstance(row, dict):
            print(f"{name:24s} plain {row['plain_us']:9.1f} us   trick {row['trick_us']:9.1f} us"
                  f"   x{row['speedup']:.2f}")
