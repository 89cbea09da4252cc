"""One training step (forward + backward + AdamW) of the reference DecoderLM, side by side
with the same model in PyTorch (if installed) and with the bare-NumPy GEMM floor: the time
of just the matrix products that forward + backward must do, which no NumPy framework can
beat. Then the same for a lesson-sized model (SMALL_CONFIG), where overhead dominates.

    python tests/bench/bench_train.py
"""

from common import emit, side_by_side, torch
from reference import CONFIG, SMALL_CONFIG, batch, numpy_gemm_floor_step

import microtensor as mt
import microtensor.functional as F
from microtensor.optim import AdamW
from transformer import DecoderLM


def microtensor_step(config=CONFIG):
    mt.manual_seed(0)
    model = DecoderLM(config["vocab"], config["d_model"], config["n_heads"],
                      config["n_layers"], config["d_ff"], max_len=config["seq"])
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids, targets = batch(config)

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    return step


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
    contenders = {"microtensor": microtensor_step(config),
                  "floor": numpy_gemm_floor_step(config)}
    if torch is not None:
        contenders["torch"] = torch_step(config)
    seconds = side_by_side(contenders, rounds=3, repeat=repeat, warmup=2)
    results = {"config": config, "microtensor_ms": 1e3 * seconds["microtensor"],
               "numpy_gemm_floor_ms": 1e3 * seconds["floor"]}
    results["ratio_vs_floor"] = results["microtensor_ms"] / results["numpy_gemm_floor_ms"]
    if torch is not None:
        results["torch_ms"] = 1e3 * seconds["torch"]
        results["ratio_vs_torch"] = results["microtensor_ms"] / results["torch_ms"]
    return results


def run(repeat: int = 7) -> dict:
    """The reference model (the targets), then a lesson-sized one for comparison."""
    results = measure(CONFIG, repeat)
    results["small_model"] = measure(SMALL_CONFIG, repeat)
    return emit("train_step", results)


if __name__ == "__main__":
    run()
