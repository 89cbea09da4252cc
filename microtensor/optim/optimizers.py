"""Optimizers: parameter groups and the shared state machinery, SGD, Adam and AdamW.
Each updates `param.data` in place from `param.grad`, following PyTorch's formulation.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..errors import op_error
from ..nn import Module
from ..tensor import Tensor
from .flat import FlatBuffers, flat_buffers_by_dtype


# ---------------------------------------------------------------------- shared machinery
class _Hyper:
    """A hyper-parameter read as `opt.lr`: the first group's value; setting it sets every
    group's (with one group, the two are the same thing)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        return optimizer.param_groups[0][self.name]

    def __set__(self, optimizer, value):
        for group in optimizer.param_groups:
            group[self.name] = value


class Optimizer:
    """Base class: holds `param_groups` (each a dict: "params" and its own hyper-parameters,
    by default the constructor's), the flat `params` list, and per-parameter `state`
    (index in `params` -> dict). `opt.lr` (and every name in `hyper_names`) reads the
    first group and sets all groups.

    Groups give parameters their own settings, e.g. no weight decay for biases and
    LayerNorm weights (the 1-D parameters):

        >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        >>> decay = [p for p in model.parameters() if p.ndim >= 2]
        >>> no_decay = [p for p in model.parameters() if p.ndim < 2]
        >>> opt = optim.AdamW([{"params": decay, "weight_decay": 0.1},
        ...                    {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)
        >>> [len(group["params"]) for group in opt.param_groups]
        [1, 3]
    """

    hyper_names: tuple[str, ...] = ("lr",)
    lr = _Hyper()
    # Optimizers that step over flat buffers (optim/flat.py) name their per-parameter
    # state arrays here, say whether that state counts steps, and define `_step_flat`.
    flat_state: tuple[str, ...] = ()
    counts_steps = False

    def __init__(self, params, **hyper):
        where = type(self).__name__
        self._check_hyper(hyper)
        self.defaults = dict(hyper)
        self.param_groups: list[dict] = []
        groups = _as_groups(where, params)
        for i, group in enumerate(groups):
            unknown = sorted(set(group) - {"params", *self.hyper_names})
            if unknown:
                raise op_error(where, f"parameter group {i} has unknown setting(s) "
                               f"{unknown}", ValueError,
                               f"a group may set: {', '.join(self.hyper_names)}")
            settings = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
            self._check_hyper(settings)
            self.param_groups.append({"params": _parameter_list(where, group["params"]),
                                      **settings})
        self.params = [p for group in self.param_groups for p in group["params"]]
        _check_unique(where, self.params)
        self.state: dict[int, dict] = {}
        self._scratch: dict[tuple, np.ndarray] = {}
        # By group start, made at the group's first step with a gradient: its flat buffers
        # (one per dtype) and the parameters left outside them.
        self._flat_buffers: dict[int, tuple[list[FlatBuffers], list[tuple[int, Tensor]]]] = {}

    def _check_hyper(self, hyper: dict) -> None:
        _check_number(type(self).__name__, "lr", hyper["lr"], low=0.0)

    def hyper(self) -> dict:
        """The first group's hyper-parameters by name (lr included)."""
        return {name: self.param_groups[0][name] for name in self.hyper_names}

    def groups(self):
        """Each group with the index (in `params`) of its first parameter."""
        start = 0
        for group in self.param_groups:
            yield start, group
            start += len(group["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient before the next backward."""
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.fill(0)

    def step(self) -> None:
        """Update every parameter from its `.grad` by this optimizer's rule (its class
        docstring gives the formula); a parameter whose `.grad` is None is left alone. Call
        it after `backward()`, then `zero_grad()` before the next one."""
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    def _step_group_flat(self, start: int, group: dict) -> None:
        """One group's step over its flat buffers (one set per dtype); where the flat step
        does not apply this time (a grad is None, step counts differ), the textbook
        `_step_params` runs on the same state."""
        if start not in self._flat_buffers:
            indexed = list(enumerate(group["params"], start))
            if all(param.grad is None for _, param in indexed):
                return   # nothing to do; the buffers wait for a step with gradients
            # Parameters without a gradient now (frozen ones, say) stay outside the flat
            # buffers, so that they do not keep the others from the flat step; they take
            # the textbook update whenever they do get a gradient.
            self._flat_buffers[start] = (
                flat_buffers_by_dtype([(i, p) for i, p in indexed if p.grad is not None],
                                      self.flat_state, self.counts_steps),
                [(i, p) for i, p in indexed if p.grad is None])
        every_buffers, outside = self._flat_buffers[start]
        for buffers in every_buffers:
            steps = buffers.prepare(self.state)
            if steps is None:
                self._step_params(zip(buffers.indices, buffers.params), group)
            else:
                self._step_flat(buffers, steps + 1, group)
                if self.counts_steps:
                    buffers.count_step()
        if outside:
            self._step_params(outside, group)

    def _step_group(self, start: int, group: dict) -> None:
        self._step_params(enumerate(group["params"], start), group)

    def state_dict(self) -> dict:
        """Hyper-parameters (per group) and per-parameter state (arrays copied), keyed by
        parameter index as a string; savable with `mt.save` next to the model's
        state_dict."""
        return {"optimizer": type(self).__name__, "num_params": len(self.params),
                "hyper": self.hyper(),
                "param_groups": [{"num_params": len(group["params"]),
                                  **{name: group[name] for name in self.hyper_names}}
                                 for group in self.param_groups],
                "state": {str(i): {key: value.copy() if isinstance(value, np.ndarray)
                                   else value for key, value in entry.items()}
                          for i, entry in sorted(self.state.items())}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (hyper-parameters of every group included).
        Checks all of it first; one error lists every problem and nothing changes."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or "state" not in state or "hyper" not in state:
            raise op_error(where, f"expected a dict from {type(self).__name__}.state_dict(), "
                           f"got {type(state).__name__}", TypeError)
        problems = []
        if state.get("optimizer") != type(self).__name__:
            problems.append(f"it was saved by {state.get('optimizer')!r}, "
                            f"this is {type(self).__name__!r}")
        if state.get("num_params") != len(self.params):
            problems.append(f"it has {state.get('num_params')} parameters, this optimizer "
                            f"has {len(self.params)}")
        settings = self._checked_settings(state, problems)
        entries = self._checked_entries(state["state"], problems)
        if problems:
            raise op_error(where, f"{len(problems)} problem(s), nothing was loaded:"
                           + "".join(f"\n  - {problem}" for problem in problems))
        for group, hyper in zip(self.param_groups, settings):
            group.update(hyper)
        self._restore_entries(entries)

    def _checked_settings(self, state: dict, problems: list) -> list[dict]:
        """Each group's hyper-parameters as `state` would set them; what does not fit (the
        groups' sizes, a bad value) is added to `problems`."""
        # A state saved before groups existed holds one "hyper" for all parameters.
        saved_groups = state.get("param_groups") or [
            {"num_params": len(group["params"]), **state["hyper"]}
            for group in self.param_groups]
        if [g.get("num_params") for g in saved_groups] != \
                [len(g["params"]) for g in self.param_groups]:
            problems.append(f"its parameter groups hold "
                            f"{[g.get('num_params') for g in saved_groups]} parameters, this "
                            f"optimizer's hold {[len(g['params']) for g in self.param_groups]}")
            saved_groups = saved_groups[:len(self.param_groups)]
        settings = []
        for group, saved in zip(self.param_groups, saved_groups):
            hyper = {**{name: group[name] for name in self.hyper_names},
                     **{k: v for k, v in saved.items() if k in self.hyper_names}}
            try:
                self._check_hyper(hyper)
            except (ValueError, TypeError) as error:
                problems.append(str(error))
            settings.append(hyper)
        return settings

    def _checked_entries(self, saved_state: dict, problems: list) -> dict:
        """The saved per-parameter state by parameter index, arrays copied in each
        parameter's dtype; a missing parameter or a wrong shape is added to `problems`."""
        entries = {}
        for key, entry in saved_state.items():
            if not (str(key).isdigit() and int(key) < len(self.params)):
                problems.append(f"state for parameter {key!r}, which does not exist")
                continue
            param = self.params[int(key)]
            for name, value in entry.items():
                if isinstance(value, np.ndarray) and value.shape != param.shape:
                    problems.append(f"parameter {key} '{name}': saved shape {value.shape}, "
                                    f"parameter shape {param.shape}")
            entries[int(key)] = {name: np.array(value, dtype=param.dtype, order="C")
                                 if isinstance(value, np.ndarray) else value
                                 for name, value in entry.items()}
        return entries

    def _restore_entries(self, entries: dict) -> None:
        """Make `self.state` hold exactly `entries`."""
        # Into the arrays already held, in place: they may be views of flat buffers
        # (optim/flat.py), which stay the state only if they are not replaced.
        for index in [index for index in self.state if index not in entries]:
            del self.state[index]
        for index, loaded in entries.items():
            held = self.state.setdefault(index, {})
            for name in [name for name in held if name not in loaded]:
                del held[name]
            for name, value in loaded.items():
                current = held.get(name)
                if (isinstance(value, np.ndarray) and isinstance(current, np.ndarray)
                        and current.shape == value.shape):
                    np.copyto(current, value)
                else:
                    held[name] = value

    def _buffer(self, array: np.ndarray, slot: int = 0) -> np.ndarray:
        """A reusable scratch array shaped like `array` (no allocation per step)."""
        key = (array.dtype.str, slot)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.size < array.size:
            buffer = self._scratch[key] = np.empty(array.size, array.dtype)
        return buffer[:array.size].reshape(array.shape)

    def __repr__(self):
        settings = ", ".join(f"{name}={value}" for name, value in self.hyper().items())
        if len(self.param_groups) > 1:
            settings += f"; {len(self.param_groups)} groups"
        return f"{type(self).__name__}({len(self.params)} parameters, {settings})"


def _as_groups(where: str, params) -> list[dict]:
    """`params` as a list of group dicts: a list of dicts is taken as groups; anything
    else (tensors, a generator of them) is one group."""
    if isinstance(params, dict):
        raise op_error(where, "got one dict; parameter groups are a list of dicts",
                       TypeError, "wrap it: [{'params': ..., 'lr': ...}]")
    if not isinstance(params, (list, tuple)) or not params or not all(
            isinstance(group, dict) for group in params):
        if isinstance(params, (list, tuple)) and any(isinstance(g, dict) for g in params):
            raise op_error(where, "mixes parameter groups (dicts) with tensors", TypeError,
                           "put every parameter in a group: [{'params': [...]}, ...]")
        return [{"params": params}]
    for i, group in enumerate(params):
        if "params" not in group:
            raise op_error(where, f"parameter group {i} has no 'params'", ValueError,
                           "each group is a dict like {'params': [...], 'weight_decay': 0.0}")
    return list(params)


def _check_unique(where: str, params: list) -> None:
    seen = set()
    for i, param in enumerate(params):
        if id(param) in seen:
            raise op_error(where, f"parameter {i} appears more than once", ValueError,
                           "pass each parameter once (shared weights are one Parameter, and "
                           "a parameter belongs to one group)")
        seen.add(id(param))


def _parameter_list(where: str, params) -> list[Tensor]:
    if isinstance(params, Module):
        raise op_error(where, "got a Module, expected its parameters", TypeError,
                       f"pass model.parameters(): {where}(model.parameters(), ...)")
    if isinstance(params, Tensor):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise op_error(where, f"params must be an iterable of tensors, got "
                       f"{type(params).__name__}", TypeError) from None
    if not params:
        raise op_error(where, "got an empty parameter list", ValueError,
                       "check that the model has parameters (generators can be used once)")
    for i, param in enumerate(params):
        if not isinstance(param, Tensor):
            raise op_error(where, f"parameter {i} is a {type(param).__name__}, not a Tensor",
                           TypeError)
        if param.data.dtype.kind != "f":
            raise op_error(where, f"parameter {i} has dtype {param.data.dtype}; only "
                           f"floating-point tensors can be optimised", TypeError)
    return params


def _check_number(where: str, name: str, value, low: float | None = None,
                  high: float | None = None, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise op_error(where, f"{name} must be a number, got {value!r}", TypeError)
    inside = (low is None or value >= low) and (
        high is None or (value < high if high_open else value <= high))
    if not inside or math.isnan(value):
        bounds = f"[{low}, {high}{')' if high_open else ']'}" if high is not None \
            else f">= {low}"
        raise op_error(where, f"{name} must be {'in ' if high is not None else ''}{bounds}, "
                       f"got {value!r}")


# ---------------------------------------------------------------------- SGD
class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's formulation:

        g = grad + weight_decay * p
        buf = g (first step), else buf = momentum * buf + g
        g = g + momentum * buf (nesterov) or buf (momentum > 0)
        p = p - lr * g

    With momentum and `flat=True` (the default), a group's gradients and momentum buffers
    are flat (`optim/flat.py`) and each step is a few NumPy calls over all of them;
    `flat=False` runs the textbook update parameter by parameter. Both give the same
    numbers (the flat buffer starts at zero, so its first step 0 * momentum + g is g).

        >>> model = nn.Linear(4, 2)
        >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        >>> model(mt.randn(3, 4)).square().mean().backward()
        >>> opt.step()
        >>> opt.zero_grad()
    """

    hyper_names = ("lr", "momentum", "nesterov", "weight_decay")
    momentum, nesterov, weight_decay = _Hyper(), _Hyper(), _Hyper()
    flat_state = ("momentum_buffer",)

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, flat: bool = True):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay)
        self.flat = flat

    def _check_hyper(self, hyper):
        super()._check_hyper(hyper)
        _check_number("SGD", "momentum", hyper["momentum"], low=0.0)
        _check_number("SGD", "weight_decay", hyper["weight_decay"], low=0.0)
        if hyper["nesterov"] and hyper["momentum"] <= 0:
            raise op_error("SGD", f"nesterov=True needs momentum > 0, got momentum="
                           f"{hyper['momentum']}", ValueError, "set momentum, e.g. 0.9")

    def step(self) -> None:
        for start, group in self.groups():
            # Without momentum there is no state: one call per parameter either way.
            if self.flat and group["momentum"]:
                self._step_group_flat(start, group)
            else:
                self._step_group(start, group)

    def _step_params(self, indexed_params: Iterable[tuple[int, Tensor]], group: dict) -> None:
        """The textbook update, one parameter at a time (the reference for `_step_flat`)."""
        # Python floats keep float32 arrays float32 (NEP 50); NumPy float64 scalars would not.
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay, nesterov = float(group["weight_decay"]), group["nesterov"]
        for i, param in indexed_params:
            grad = param.grad
            if grad is None:
                continue
            p = param.data
            if weight_decay:
                direction = np.multiply(p, weight_decay, out=self._buffer(p, 0))
                direction += grad
            else:
                direction = grad
            if momentum:
                state = self.state.setdefault(i, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(direction, order="C")
                else:
                    buf *= momentum
                    buf += direction
                if nesterov:
                    nudge = np.multiply(buf, momentum, out=self._buffer(p, 1))
                    nudge += direction
                    direction = nudge
                else:
                    direction = buf
            update = np.multiply(direction, lr, out=self._buffer(p, 2))
            p -= update

    def _step_flat(self, buffers: FlatBuffers, step: int, group: dict) -> None:
        """`_step_params` (with momentum) for every parameter of `buffers` at once, each
        operation one NumPy call over a block of the flat arrays, block after block."""
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay, nesterov = float(group["weight_decay"]), group["nesterov"]
        with_decay = self._buffer(buffers.grad, 1) if weight_decay else None
        for span, indices in buffers.blocks:
            direction, scratch = buffers.grad[span], buffers.scratch[span]
            if with_decay is not None:
                # The parameters are not flat: gather p * weight_decay, add the gradient.
                for k in indices:
                    np.multiply(buffers.params[k].data, weight_decay, out=buffers.scratches[k])
                direction = np.add(scratch, direction, out=with_decay[span])
            buf = buffers.state["momentum_buffer"][span]
            buf *= momentum
            buf += direction
            if nesterov:
                nudge = np.multiply(buf, momentum, out=scratch)
                nudge += direction
                direction = nudge
            else:
                direction = buf
            np.multiply(direction, lr, out=scratch)
            for k in indices:
                p = buffers.params[k].data
                p -= buffers.scratches[k]


# ---------------------------------------------------------------------- Adam, AdamW
class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's formulation; `weight_decay` is L2 added to the
    gradient (coupled). For decoupled decay use `AdamW`.

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g ;  v = beta2 * v + (1 - beta2) * g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    With `flat=True` (the default) each step is ten passes over flat buffers holding every
    gradient and moment of a group (`optim/flat.py`: why, and what stays per parameter);
    `flat=False` runs the textbook update parameter by parameter. Both give the same
    numbers to the last bit.

        >>> model = nn.Linear(4, 2)
        >>> opt = optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    """

    hyper_names = ("lr", "betas", "eps", "weight_decay")
    betas, eps, weight_decay = _Hyper(), _Hyper(), _Hyper()
    decoupled = False
    flat_state, counts_steps = ("exp_avg", "exp_avg_sq"), True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, flat: bool = True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.flat = flat

    def _check_hyper(self, hyper):
        super()._check_hyper(hyper)
        name = type(self).__name__
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise op_error(name, f"betas must be a pair (beta1, beta2), got {betas!r}",
                           TypeError)
        for i, beta in enumerate(betas):
            _check_number(name, f"betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        _check_number(name, "eps", hyper["eps"], low=0.0)
        _check_number(name, "weight_decay", hyper["weight_decay"], low=0.0)
        hyper["betas"] = tuple(betas)

    def step(self) -> None:
        # Every update is in place with reusable scratch buffers: no array is allocated per
        # step (faster than the textbook update with temporaries, and than
        # torch.optim.AdamW: tests/bench/bench_kernels.py). Splitting the work over two
        # threads made it slower; so did running the flat passes chunk by chunk (runs of
        # parameters sized to stay in cache) instead of one pass each.
        for start, group in self.groups():
            if self.flat:
                self._step_group_flat(start, group)
            else:
                self._step_group(start, group)

    def _step_params(self, indexed_params: Iterable[tuple[int, Tensor]], group: dict) -> None:
        """The textbook update, one parameter at a time (the reference for `_step_flat`)."""
        beta1, beta2 = (float(beta) for beta in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        for i, param in indexed_params:
            grad = param.grad
            if grad is None:
                continue
            p = param.data
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {"step": 0,
                                         "exp_avg": np.zeros_like(p, order="C"),
                                         "exp_avg_sq": np.zeros_like(p, order="C")}
            state["step"] += 1
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            step_size = lr / (1 - beta1 ** state["step"])
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** state["step"])
            if weight_decay and self.decoupled:
                p *= 1 - lr * weight_decay  # AdamW: shrink the weights, apart from m and v
            elif weight_decay:
                coupled = np.multiply(p, weight_decay, out=self._buffer(p, 1))
                coupled += grad
                grad = coupled
            p -= adam_update(grad, exp_avg, exp_avg_sq, self._buffer(p, 0), beta1, beta2,
                             eps, step_size, bias_correction2_sqrt)

    def _step_flat(self, buffers: FlatBuffers, step: int, group: dict) -> None:
        """`_step_params` for every parameter of `buffers` at once: the same operations
        in the same order, each one NumPy call over a block of the flat arrays (so the
        same numbers to the last bit), block after block (`FlatBuffers.blocks`: each
        stays in the cache through its passes). `step` is the step being taken, shared
        by all."""
        beta1, beta2 = (float(beta) for beta in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        # The decoupled decay can wait until the update is applied: m and v never see
        # the parameters.
        shrink = 1 - lr * weight_decay if weight_decay and self.decoupled else None
        coupled = self._buffer(buffers.grad, 1) if weight_decay and not self.decoupled \
            else None
        for span, indices in buffers.blocks:
            grad, scratch = buffers.grad[span], buffers.scratch[span]
            exp_avg = buffers.state["exp_avg"][span]
            exp_avg_sq = buffers.state["exp_avg_sq"][span]
            if coupled is not None:
                # Adam's L2 term needs the parameters, which are not flat: gather p * decay.
                for k in indices:
                    np.multiply(buffers.params[k].data, weight_decay, out=buffers.scratches[k])
                grad = np.add(scratch, grad, out=coupled[span])
            adam_update(grad, exp_avg, exp_avg_sq, scratch, beta1, beta2, eps, step_size,
                        bias_correction2_sqrt)
            # The update is flat, the parameters are not: two calls each to apply it.
            for k in indices:
                p = buffers.params[k].data
                if shrink is not None:
                    p *= shrink
                p -= buffers.scratches[k]


def adam_update(grad, exp_avg, exp_avg_sq, scratch, beta1, beta2, eps, step_size,
                bias_correction2_sqrt) -> np.ndarray:
    """Adam's moments updated in place from `grad`, and the step to subtract from the
    parameters written into `scratch` (returned): the per-parameter and the flat step
    both run these operations, in this order, so they give the same numbers."""
    # m += (1 - beta1) * (g - m) is PyTorch's lerp form of beta1*m + (1-beta1)*g.
    np.subtract(grad, exp_avg, out=scratch)
    scratch *= 1 - beta1
    exp_avg += scratch
    exp_avg_sq *= beta2
    np.multiply(grad, grad, out=scratch)
    scratch *= 1 - beta2
    exp_avg_sq += scratch
    # denominator sqrt(v_hat) + eps, with v_hat = v / (1 - beta2^t)
    np.sqrt(exp_avg_sq, out=scratch)
    scratch /= bias_correction2_sqrt
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= step_size
    return scratch


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's formulation:
    p = p * (1 - lr * weight_decay) before the Adam step; the decay never enters m or v.

        >>> model = nn.Linear(4, 2)
        >>> opt = optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    """

    decoupled = True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, flat: bool = True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         flat=flat)
