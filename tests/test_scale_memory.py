"""What a large model's training step may allocate (issue 31, item 3): cross-entropy over
many classes makes one (N, C) array beside the logits, forward and backward together, and
still gives its gradient twice with retain_graph=True; a float32 model's step keeps no
float64 array anywhere (graph, gradients, optimizer state)."""
import tracemalloc

import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor.autograd import topological_order
from microtensor.ops.neural import cross_entropy, cross_entropy_reference
from microtensor.optim import AdamW
from transformer import DecoderLM, LMConfig


def logits_and_targets(rows=128, classes=5000, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes), dtype=np.float32) * 3
    targets = rng.integers(0, classes, rows)
    targets[::7] = -100                                  # some ignored positions
    return logits, targets


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_makes_one_class_sized_array_forward_and_backward(label_smoothing):
    logits, targets = logits_and_targets()
    cross_entropy.forward(logits, targets)                # warm caches of kernels
    tracemalloc.start()
    try:
        loss, backward = cross_entropy.forward(logits, targets,
                                               label_smoothing=label_smoothing)
        grad, _ = backward(np.ones((), np.float32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * logits.nbytes, peak / logits.nbytes
    expected_loss, expected_backward = cross_entropy_reference(
        logits.astype(np.float64), targets, label_smoothing=label_smoothing)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_backward(1.0)[0], atol=1e-8)


def test_cross_entropy_gives_its_gradient_again_with_retain_graph():
    logits, targets = logits_and_targets(rows=16, classes=50)
    leaf = mt.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(leaf, targets)
    loss.backward(retain_graph=True)
    first = leaf.grad.copy()
    loss.backward()
    np.testing.assert_allclose(leaf.grad, 2 * first, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("style", ["gpt", "llama"])
@pytest.mark.parametrize("tied", [False, True])
def test_a_float32_training_step_keeps_no_float64_array(style, tied):
    mt.manual_seed(0)
    config = (LMConfig.gpt2 if style == "gpt" else LMConfig.llama)(
        vocab=50, d_model=32, n_heads=4, n_layers=2, max_len=16, tie_weights=tied)
    model = DecoderLM(config).train()
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, 50, (2, 13))
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits, ids[:, 1:])
    assert logits.dtype == loss.dtype == np.float32
    saved = [(tensor.op.name, name, value)
             for tensor in topological_order(loss) if tensor.op is not None
             for name, value in tensor.op.saved.items()]
    float64 = [(op, name) for op, name, value in saved
               if isinstance(value, np.ndarray) and value.dtype == np.float64]
    assert not float64
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    state = [value for value in vars(optimizer).values() if isinstance(value, np.ndarray)]
    assert all(value.dtype != np.float64 for value in state)
