"""One training step (forward + backward + AdamW) of the reference DecoderLM, side by side
with the same model in PyTorch (if installed) and with the bare-NumPy GEMM floor: the time
of just the matrix products that forward + backward must do, which no NumPy framework can
beat.

    python tests/bench/bench_train.py
"""

from common import best_of, emit, torch
from reference import CONFIG, batch, numpy_gemm_floor_step

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


def run(repeat: int = 7) -> dict:
    results = {"config": CONFIG,
               "microtensor_ms": 1e3 * best_of(microtensor_step(), repeat=repeat, warmup=2),
               "numpy_gemm_floor_ms": 1e3 * best_of(numpy_gemm_floor_step(), repeat=repeat)}
    results["ratio_vs_floor"] = results["microtensor_ms"] / results["numpy_gemm_floor_ms"]
    if torch is not None:
        results["torch_ms"] = 1e3 * best_of(torch_step(), repeat=repeat, warmup=2)
        results["ratio_vs_torch"] = results["microtensor_ms"] / results["torch_ms"]
    return emit("train_step", results)


if __name__ == "__main__":
    run()
