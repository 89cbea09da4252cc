"""optimizer.step() of AdamW over the reference DecoderLM's parameters and over the
lesson-sized one's: over flat buffers (the default, `optim/flat.py`) against the textbook
per-parameter update (`flat=False`), and torch.optim.AdamW (its default, `foreach`) on
parameters of the same shapes. Then the whole training step with each of our two.

Each optimizer gets its own model, trained two steps first so that the gradients sit where
backward puts them in training (for the flat optimizer, in its flat buffer); then only
`step()` is timed, our two taking turns, PyTorch's after them.

    python tests/bench/bench_optim.py
"""
from __future__ import annotations

import time

import numpy as np
from bench_train import microtensor_step
from common import emit, side_by_side, torch
from reference import CONFIG, SMALL_CONFIG, batch, reference_model

import microtensor.functional as F
from microtensor.optim import AdamW


def trained_optimizer(config: dict, flat: bool) -> AdamW:
    """AdamW on a fresh DecoderLM after two training steps, gradients left in place."""
    model = reference_model(config)
    optimizer = AdamW(model.parameters(), lr=1e-3, flat=flat)
    ids, targets = batch(config)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(ids), targets).backward()
        optimizer.step()
    return optimizer


def torch_optimizer(ours: AdamW):
    """torch.optim.AdamW over parameters shaped like `ours`', with random gradients."""
    rng = np.random.default_rng(0)
    params = []
    for param in ours.params:
        tensor = torch.nn.Parameter(torch.from_numpy(param.data.copy()))
        tensor.grad = torch.from_numpy(rng.standard_normal(param.shape).astype(np.float32))
        params.append(tensor)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.step()
    return optimizer


def measure(config: dict, repeat: int) -> dict:
    flat, per_parameter = trained_optimizer(config, True), trained_optimizer(config, False)
    seconds = side_by_side({"flat": flat.step, "per_parameter": per_parameter.step},
                           rounds=5, repeat=repeat, number=10, warmup=3)
    results = {"parameters": len(flat.params),
               "numbers": int(sum(param.size for param in flat.params)),
               "adamw_step_flat_ms": 1e3 * seconds["flat"],
               "adamw_step_per_parameter_ms": 1e3 * seconds["per_parameter"]}
    if torch is not None:
        # Apart, not in turns: PyTorch's idle threads keep spinning for a while after
        # its step and slowed our (1 ms) steps that came next by a third.
        results["torch_adamw_step_ms"] = 1e3 * side_by_side(
            {"torch": torch_optimizer(flat).step}, rounds=3, repeat=repeat, number=10,
            warmup=3)["torch"]
        time.sleep(0.5)
    steps = side_by_side({"flat": microtensor_step(config, flat_adamw=True),
                          "per_parameter": microtensor_step(config, flat_adamw=False)},
                         rounds=5, repeat=max(2, repeat // 2), warmup=2)
    results["train_step_flat_ms"] = 1e3 * steps["flat"]
    results["train_step_per_parameter_ms"] = 1e3 * steps["per_parameter"]
    return results


def run(repeat: int = 7) -> dict:
    return emit("optimizer_step", {"reference": measure(CONFIG, repeat),
                                   "small_model": measure(SMALL_CONFIG, repeat)})


if __name__ == "__main__":
    run()
