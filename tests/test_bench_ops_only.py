"""The benchmark's engine-free step (`tests/bench/bench_train.py: ops_only_step`) calls the
fast step's primitives in order without the engine, to measure what the engine costs. That
measure means something only while both compute the same thing: checked here on a small
model, over steps (so the gradients and AdamW's updates are compared too), and on the
benchmark's own configurations, which its run also checks."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "bench"))
import bench_train


@pytest.mark.parametrize("config", [dict(bench_train.SMALL_CONFIG, seq=8, batch=2),
                                    dict(bench_train.SMALL_CONFIG, n_heads=2, n_layers=1)])
def test_the_engine_free_step_follows_the_fast_step(config):
    fast = bench_train.microtensor_step(config, fused_attention=True)
    ops_only = bench_train.ops_only_step(config)
    losses = [(float(fast().data), ops_only()) for _ in range(3)]
    np.testing.assert_allclose([b for _, b in losses], [a for a, _ in losses], rtol=1e-6)
    assert losses[0][0] != losses[2][0]   # the weights moved: the steps were compared
