"""Gradient clipping and learning-rate schedules (which set the lr of every parameter
group of an optimizer)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..errors import check_sizes, op_error
from ..tensor import Tensor
from .optimizers import Optimizer, _check_number


# ---------------------------------------------------------------------- clipping
def clip_grad_norm_(params: Iterable[Tensor], max_norm: float,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients in place so their joint L2 norm is at most `max_norm`
    (PyTorch's rule: scale by max_norm / (norm + 1e-6) when that is below 1). Returns the
    norm before clipping. Parameters without a gradient are skipped.

        >>> model = nn.Linear(4, 2)
        >>> model(mt.ones(1, 4)).sum().backward()    # every gradient entry is 1: norm sqrt(10)
        >>> round(optim.clip_grad_norm_(model.parameters(), max_norm=1.0), 3)
        3.162
        >>> round(optim.clip_grad_norm_(model.parameters(), max_norm=1.0), 3)
        1.0
    """
    _check_number("clip_grad_norm_", "max_norm", max_norm, low=0.0)
    grads = [param.grad for param in params if param.grad is not None]
    total = math.sqrt(sum(float(np.vdot(grad, grad)) for grad in grads))
    if error_if_nonfinite and not math.isfinite(total):
        raise op_error("clip_grad_norm_", f"the gradient norm is {total}", RuntimeError,
                       "find where it starts with mt.detect_anomaly()")
    scale = float(max_norm) / (total + 1e-6)
    if scale < 1:
        for grad in grads:
            grad *= scale
    return total


# ---------------------------------------------------------------------- schedules
class LRSchedule:
    """Sets the lr of every parameter group for each step. `get_lr()` is the rate for the
    next optimizer step (step number `step_num + 1`) of the first group; `step()` advances
    by one and applies it. Other groups keep their ratio to the first group (as
    `base_lrs`, their lrs when the schedule was made, say): a group made with half the lr
    always gets half the scheduled lr."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise op_error(type(self).__name__, f"expected an optimizer, got "
                           f"{type(optimizer).__name__}", TypeError)
        self.optimizer = optimizer
        self.step_num = 0
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self._apply()

    def lr_at(self, step: int) -> float:
        """The first group's lr at optimizer step `step` (counted from 1): the formula each
        schedule defines."""
        raise NotImplementedError

    def get_lr(self) -> float:
        """The first group's lr for the next optimizer step."""
        return self.lr_at(self.step_num + 1)

    def group_lrs(self, step: int) -> list[float]:
        """The lr of each group at `step`: the first group's scheduled lr, scaled by each
        group's base lr relative to the first's."""
        lr, first = self.lr_at(step), self.base_lrs[0]
        return [lr if base == first or not first else lr * (base / first)
                for base in self.base_lrs]

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.group_lrs(self.step_num + 1)):
            group["lr"] = lr

    def step(self) -> float:
        """Advance one step and set every group's lr; returns the first group's."""
        self.step_num += 1
        self._apply()
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """The schedule's settings, base lrs and step count: save it next to the optimizer's
        `state_dict` to resume."""
        return {"schedule": type(self).__name__, "step_num": self.step_num,
                "base_lrs": list(self.base_lrs),
                **{name: getattr(self, name) for name in self.setting_names}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned, and set the optimizer's lrs to match."""
        if not isinstance(state, dict) or state.get("schedule") != type(self).__name__:
            found = state.get("schedule") if isinstance(state, dict) else type(state).__name__
            raise op_error(f"{type(self).__name__}.load_state_dict", f"expected a "
                           f"{type(self).__name__} state_dict, got {found!r}")
        base_lrs = state.get("base_lrs", self.base_lrs)   # older states: one group
        if len(base_lrs) != len(self.base_lrs):
            raise op_error(f"{type(self).__name__}.load_state_dict", f"it was saved for "
                           f"{len(base_lrs)} parameter group(s), the optimizer has "
                           f"{len(self.base_lrs)}")
        for name in ("step_num", *self.setting_names):
            setattr(self, name, state[name])
        self.base_lrs = [float(lr) for lr in base_lrs]
        self._apply()

    setting_names: tuple[str, ...] = ()


class NoamLR(LRSchedule):
    """The Transformer paper's schedule (section 5.3): linear warm-up, then decay with
    the inverse square root of the step:

        lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)

    It sets the absolute lr (the optimizer's own lr is replaced).

        >>> opt = optim.Adam(nn.Linear(4, 2).parameters())
        >>> schedule = optim.NoamLR(opt, d_model=512, warmup=4000)
        >>> round(schedule.lr_at(4000), 6)      # the peak, at the end of warm-up
        0.000699
    """

    setting_names = ("d_model", "warmup", "factor")

    def __init__(self, optimizer: Optimizer, d_model: int, warmup: int, factor: float = 1.0):
        check_sizes("NoamLR", d_model=d_model, warmup=warmup)
        _check_number("NoamLR", "factor", factor, low=0.0)
        self.d_model, self.warmup, self.factor = int(d_model), int(warmup), float(factor)
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        return self.factor * self.d_model ** -0.5 * min(step ** -0.5,
                                                        step * self.warmup ** -1.5)


class CosineLR(LRSchedule):
    """Linear warm-up from 0 to `max_lr` (the optimizer's lr when the schedule is made)
    over `warmup` steps, then a half cosine down to `min_lr` at step `total`; `min_lr`
    after that. Other parameter groups follow in proportion to their own lr (their floor
    is min_lr scaled alike).

        >>> opt = optim.AdamW(nn.Linear(4, 2).parameters(), lr=3e-4)
        >>> schedule = optim.CosineLR(opt, warmup=100, total=5000, min_lr=1e-5)
        >>> schedule.lr_at(50), schedule.lr_at(100), schedule.lr_at(5000)
        (0.00015, 0.0003, 1e-05)
    """

    setting_names = ("warmup", "total", "min_lr", "max_lr")

    def __init__(self, optimizer: Optimizer, warmup: int, total: int, min_lr: float = 0.0):
        for name, value in (("warmup", warmup), ("total", total)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or value < 0:
                raise op_error("CosineLR", f"{name} must be an integer >= 0, got {value!r}")
        if total <= warmup:
            raise op_error("CosineLR", f"total ({total}) must be larger than warmup "
                           f"({warmup})", ValueError, "count total steps including warm-up")
        max_lr = float(getattr(optimizer, "lr", 0.0))
        _check_number("CosineLR", "min_lr", min_lr, low=0.0, high=max_lr)
        self.warmup, self.total = int(warmup), int(total)
        self.min_lr, self.max_lr = float(min_lr), max_lr
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        if step <= self.warmup:
            return self.max_lr * step / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1 + math.cos(math.pi
                                                                                * progress))
