"""The benchmark's engine-free step (`tests/bench/bench_train.py: ops_only_step`) calls the
fast step's primitives in order without the engine, to measure what the engine costs. That
measure means something only while both compute the same thing: checked here on small
models, loss and every gradient over three steps (so AdamW's updates count too); the
benchmark's run checks its own configurations' first loss."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "bench"))
import bench_train


@pytest.mark.parametrize("config", [dict(bench_train.SMALL_CONFIG, seq=8, batch=2),
                                    dict(bench_train.SMALL_CONFIG, n_heads=2, n_layers=1)])
def test_the_engine_free_step_follows_the_fast_step(config):
    fast = bench_train.microtensor_step(config)
    ops_only = bench_train.ops_only_step(config)
    for _ in range(3):
        assert ops_only() == pytest.approx(float(fast().data), rel=1e-6)
        # Every gradient, not only the loss: AdamW's update would hide a gradient off by a
        # constant factor (it divides by the gradient's own scale).
        for (name, a), (_, b) in zip(fast.model.named_parameters(),
                                     ops_only.model.named_parameters()):
            np.testing.assert_allclose(b.grad, a.grad, rtol=1e-5, atol=1e-7, err_msg=name)
