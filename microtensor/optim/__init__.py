"""Optimizers, gradient clipping and learning-rate schedules.

Each optimizer updates `param.data` in place from `param.grad`, skipping parameters whose
grad is None, and follows PyTorch's formulation of its rule (so results match
`torch.optim` to float32 rounding). `state_dict()` / `load_state_dict()` capture
everything needed to resume exactly: hyper-parameters, step counts and moment arrays.
Adam, AdamW and SGD with momentum keep every gradient and moment of a parameter group in
flat buffers and update them all with one NumPy call per operation (`flat.py`).

    >>> import microtensor as mt
    >>> from microtensor import nn, optim
    >>> model = nn.Linear(4, 2)
    >>> opt = optim.AdamW(model.parameters(), lr=1e-3)
    >>> schedule = optim.CosineLR(opt, warmup=100, total=1000)
    >>> loss = model(mt.randn(8, 4)).sum()
    >>> loss.backward(); opt.step(); schedule.step(); opt.zero_grad()

A schedule sets `opt.lr` for the next optimizer step: call `schedule.step()` once after
each `opt.step()`.
"""
from .optimizers import SGD, Adam, AdamW, Optimizer
from .schedules import CosineLR, LRSchedule, NoamLR, clip_grad_norm_

__all__ = ["SGD", "Adam", "AdamW", "CosineLR", "LRSchedule", "NoamLR", "Optimizer",
           "clip_grad_norm_"]
