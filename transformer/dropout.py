"""Dropout that generation can switch off for its own thread only.

`model.eval()` flips `training` on modules shared by every thread: generating from a model
another thread is training would turn that thread's dropout off, and two generate calls
overlapping would leave the model in eval mode. Instead, generation runs its forward passes
inside `dropout_off()`, which holds per thread, and leaves `training` alone.

    >>> from transformer import DecoderLM
    >>> model, ids = DecoderLM(vocab=16, d_model=8, n_heads=2, n_layers=1), np.array([[1, 2]])
    >>> with dropout_off():
    ...     logits = model(ids)          # no dropout here, model.training unchanged
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from microtensor import nn


class _ThreadState(threading.local):
    off = False


_state = _ThreadState()


@contextmanager
def dropout_off() -> Iterator[None]:
    """No dropout in this thread's forward passes, whatever the modules' `training`."""
    before = _state.off
    _state.off = True
    try:
        yield
    finally:
        _state.off = before


def dropout_active(module: nn.Module) -> bool:
    """True when `module` should drop: in training mode and not inside `dropout_off()`."""
    return module.training and not _state.off


class Dropout(nn.Dropout):
    """`microtensor.nn.Dropout` that also honours `dropout_off()`."""

    def forward(self, x):
        return x if _state.off else super().forward(x)
