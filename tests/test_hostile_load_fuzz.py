"""from_pretrained over mutated config.json files and safetensors headers (issue 29):
every example either loads the model the mutated files describe (each config value it
reads back is the one written, with its type, and each weight the file's) or raises our
error, within a time limit per example and a 1 GiB address-space cap on the process.

The examples run in a child process (this file run as a script), so the memory cap
never touches the test session. HOSTILE_FUZZ_EXAMPLES=2000 fuzzes longer.
"""
from __future__ import annotations

import json
import math
import os
import resource
import struct
import subprocess
import sys
import time

EXAMPLES = int(os.environ.get("HOSTILE_FUZZ_EXAMPLES", "150"))
MEMORY = 2**30
SECONDS_PER_EXAMPLE = 10


def test_from_pretrained_loads_the_intended_model_or_raises_our_error(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True,
                          text=True, timeout=60 + 2 * EXAMPLES, env=env, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "examples passed" in done.stdout, done.stdout


# ---------------------------------------------------------------------- the child
def child(folder: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import microtensor as mt
    from microtensor.safetensors_io import load_safetensors
    from transformer import DecoderLM, LMConfig
    from transformer.hub import from_pretrained
    from transformer.hub.gpt2 import gpt2_to_hf
    from transformer.hub.llama import llama_to_hf

    mt.manual_seed(0)
    models = {"gpt2": DecoderLM(LMConfig.gpt2(vocab=29, d_model=8, n_heads=2, n_layers=2,
                                              max_len=8)),
              "llama": DecoderLM(LMConfig.llama(vocab=29, d_model=8, n_heads=2,
                                                n_kv_heads=1, n_layers=2, max_len=8))}
    originals = {}
    for kind, model in models.items():
        path = os.path.join(folder, kind)
        model.save_pretrained(path)
        with open(os.path.join(path, "config.json")) as file:
            config = json.load(file)
        with open(os.path.join(path, "model.safetensors"), "rb") as file:
            raw = file.read()
        length = struct.unpack("<Q", raw[:8])[0]
        originals[kind] = (config, json.loads(raw[8:8 + length]), raw[8 + length:])

    numbers = st.one_of(st.integers(-3, 70), st.integers(-2**63, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0, 1, 2, 4, 8, 16, 29, 0.0, 1e-5, 0.1, 1.0]))
    leaves = st.one_of(numbers, st.booleans(), st.none(),
                       st.sampled_from(["gpt2", "llama", "gelu_new", "relu", "silu", "true",
                                        "false", "8", "", "default", "linear"]))
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["rope_type", "type",
                                                             "rope_theta", "factor"]),
                                            inner, max_size=3), max_leaves=5)
    config_edit = st.tuples(st.just("config"), st.text(max_size=0), st.integers(0, 40),
                            values)
    header_edit = st.tuples(st.just("header"),
                            st.sampled_from(["dtype", "shape", "data_offsets", "drop",
                                             "extra"]),
                            st.integers(0, 40),
                            st.one_of(values, st.sampled_from(
                                ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"]),
                                st.lists(st.integers(0, 2**40), max_size=3)))

    def write(kind, edits):
        config, header, data = originals[kind]
        config, header = json.loads(json.dumps(config)), json.loads(json.dumps(header))
        names = sorted(name for name in header if name != "__metadata__")
        total = len(data)
        for target, field, index, value in edits:
            if target == "config":
                key = sorted(config)[index % len(config)] if index < 35 else "n_inner"
                config[key] = value
            elif field == "drop":
                header.pop(names[index % len(names)], None)
            elif field == "extra":
                shape = value if isinstance(value, list) else [2**20]
                count = math.prod(shape) if all(isinstance(n, int) for n in shape) else 0
                header["extra"] = {"dtype": "F32", "shape": shape,
                                   "data_offsets": [total, total + 4 * count]}
                total += 4 * count if 0 <= 4 * count < 2**33 else 0
            else:
                header.setdefault(names[index % len(names)], {})[field] = value
        path = os.path.join(folder, f"mutated-{kind}")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as file:
            file.write(json.dumps(config))           # NaN and Infinity as JSON5 literals
        text = json.dumps(header).encode()
        with open(os.path.join(path, "model.safetensors"), "wb") as file:
            file.write(struct.pack("<Q", len(text)) + text + data)
            file.truncate(8 + len(text) + total)     # a sparse tail for an extra tensor
        return path, config

    def check_intended(kind, model, config):
        """The loaded model is what the mutated files say: every config value read back
        equals the one written (a bool a bool), and every weight the file's."""
        to_hf = gpt2_to_hf if kind == "gpt2" else llama_to_hf
        written, tensors = to_hf(model)
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                    "layer_norm_epsilon", "tie_word_embeddings", "hidden_size",
                    "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "rms_norm_eps", "num_key_value_heads"):
            if key in config and key in written and config[key] is not None:
                assert written[key] == config[key] and type(written[key]) in (
                    type(config[key]), float), (key, config[key], written[key])
        original = load_safetensors(os.path.join(folder, f"mutated-{kind}",
                                                 "model.safetensors"))
        for name, array in tensors.items():
            if name in original:
                np.testing.assert_array_equal(array, original[name].astype(array.dtype))

    passed = {"loaded": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(["gpt2", "llama"]),
           edits=st.lists(st.one_of(config_edit, header_edit), min_size=1, max_size=3))
    def fuzz(kind, edits):
        path, config = write(kind, edits)
        began = time.perf_counter()
        try:
            model = from_pretrained(path)
        except Exception as error:  # noqa: BLE001 (any error: it must be ours)
            assert getattr(error, "microtensor", False), f"raw {type(error).__name__}: {error}"
            passed["refused"] += 1
        else:
            check_intended(kind, model, config)
            passed["loaded"] += 1
        seconds = time.perf_counter() - began
        assert seconds < SECONDS_PER_EXAMPLE, f"{seconds:.1f} s for {edits}"

    fuzz()
    print(f"{EXAMPLES} examples passed: {passed}")


if __name__ == "__main__":
    child(sys.argv[1])
