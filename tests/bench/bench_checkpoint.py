"""Full training checkpoints (model, AdamW moments, step, generator state): `mt.save`'s
.npz against safetensors with the nesting kept as JSON in its metadata, by size and by
save and load time. Both round-trip exactly (checked here); the figures decide whether
training checkpoints should move to safetensors.

    python tests/bench/bench_checkpoint.py
"""
import json
import os
import sys
import tempfile

import numpy as np
from common import emit, side_by_side

import microtensor as mt
import microtensor.functional as F
from microtensor import optim
from microtensor.safetensors_io import load_safetensors, save_safetensors
from transformer import DecoderLM, LMConfig

MODELS = {"charlm_357k": {"vocab": 79, "d_model": 96, "n_heads": 4, "n_layers": 3,
                          "d_ff": 384, "max_len": 64},
          "d512_6_layers_19M": {"vocab": 1000, "d_model": 512, "n_heads": 8, "n_layers": 6,
                                "max_len": 256}}


def training_checkpoint(options: dict) -> dict:
    """What `python -m transformer train` saves, after one AdamW step."""
    model = DecoderLM(LMConfig(**options))
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, options["vocab"], (2, 17))
    F.cross_entropy(model(ids[:, :-1]).reshape(-1, options["vocab"]),
                    ids[:, 1:].reshape(-1)).backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1,
            "rng": json.dumps(mt.generator().bit_generator.state)}


def flatten(value, path: str, arrays: dict):
    """The nesting as JSON, arrays by path: what safetensors would need for a checkpoint."""
    if isinstance(value, dict):
        return {"dict": [[key, flatten(child, f"{path}/{key}", arrays)]
                         for key, child in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [flatten(child, f"{path}/{i}", arrays)
                                       for i, child in enumerate(value)]}
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {"array": path}
    return {"json": value}


def rebuild(node, arrays):
    kind, content = next(iter(node.items()))
    if kind == "dict":
        return {key: rebuild(child, arrays) for key, child in content}
    if kind in ("list", "tuple"):
        items = [rebuild(child, arrays) for child in content]
        return items if kind == "list" else tuple(items)
    return arrays[content] if kind == "array" else content


def save_as_safetensors(checkpoint: dict, path: str) -> None:
    arrays = {}
    tree = flatten(checkpoint, "", arrays)
    save_safetensors(arrays, path, metadata={"tree": json.dumps(tree)})


def load_from_safetensors(path: str) -> dict:
    from safetensors import safe_open
    with safe_open(path, framework="np") as file:
        tree = json.loads(file.metadata()["tree"])
    return rebuild(tree, load_safetensors(path))


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b and type(a) is type(b)


def run() -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        npz, st = os.path.join(folder, "c.npz"), os.path.join(folder, "c.safetensors")
        for name, options in MODELS.items():
            checkpoint = training_checkpoint(options)
            times = side_by_side({
                "npz_save": lambda c=checkpoint: mt.save(c, npz),
                "safetensors_save": lambda c=checkpoint: save_as_safetensors(c, st),
                "npz_load": lambda: mt.load(npz),
                "safetensors_load": lambda: load_from_safetensors(st)})
            results[name] = {
                "npz_mb": os.path.getsize(npz) / 1e6,
                "safetensors_mb": os.path.getsize(st) / 1e6,
                **{f"{key}_ms": seconds * 1e3 for key, seconds in times.items()},
                "npz_exact": same(checkpoint, mt.load(npz)),
                # safetensors keeps arrays exactly; Python ints in step counts come back as
                # ints only because JSON holds them (the optimizer's steps, the step)
                "safetensors_exact": same(checkpoint, load_from_safetensors(st))}
    return emit("checkpoint_formats", results)


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
