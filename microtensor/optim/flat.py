"""Flat buffers: the gradients and the optimizer state of many parameters, each in one
array, with every parameter's share a view into it.

Why: an Adam step is about ten elementwise passes. Done parameter by parameter, each pass
is one NumPy call per parameter; a lesson-sized Transformer (2 layers, d_model 32) has 37
parameters of a few hundred numbers each, so the step is ~400 calls that cost more to
make than to run. Over flat buffers each pass is one call over every number at once
(PyTorch's `foreach`/`fused` optimizers do the same on their side).

What is flat, and what is not (chosen by timing AdamW's step, medians of alternating runs
on a shared 2-core machine; `tests/bench/bench_optim.py` re-measures the result):

- gradients: the optimizer gives each parameter a view of its flat gradient buffer
  (`param._grad_storage`), and backward copies the gradient straight into it
  (`Tensor._accumulate_grad`) instead of allocating a new array. `zero_grad()` still sets
  `.grad` to None (PyTorch's default), the view stays for the next backward (so a
  gradient array kept from before `zero_grad()` is overwritten by it: copy to keep).
- optimizer state (Adam's exp_avg and exp_avg_sq, SGD's momentum_buffer): flat;
  `opt.state[i]["exp_avg"]` is the parameter's view, so `state_dict()`, checkpoints and
  the per-parameter update all see the same numbers.
- the passes: block by block (`FlatBuffers.blocks`, cut between parameters), all of
  Adam's passes over one block before the next, so that the block stays in the CPU's
  cache; pass after pass over whole arrays of a model's size read them from memory
  each time.
- parameters: not flat. `param.data` stays the array the model made; the update, computed
  flat, is applied with two calls per parameter. Making the parameters views of a flat
  buffer as well would save those calls, about 1% of a step, but it swaps every
  parameter's array behind the user's back: arrays taken from the model before stop
  being its weights, and `param.data = new` must be detected.

`tests/bench/bench_optim.py` times the flat step against the per-parameter one
(docs/performance.md gives the figures).

The buffers are made at a group's first step with gradients, for the parameters that have
one then; the others (frozen ones, say) stay outside and take the textbook update. The
flat step applies when every parameter of the buffers has a gradient and all have taken
the same number of steps (the usual case); otherwise that step runs the textbook
per-parameter update on the same views, which skips parameters without a gradient and
keeps per-parameter step counts, as PyTorch does.
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor

BLOCK_SIZE = 1 << 16   # numbers per block of a step: Adam's four arrays of it fit in L2


class FlatBuffers:
    """The flat gradient and state buffers of some parameters sharing one dtype.

    `grad` (n,) holds every gradient and `grads[k]` is the k-th parameter's view of it,
    shaped like the parameter; `state[name]` and `state_views[name][k]` likewise for each
    state array (e.g. "exp_avg"); `scratch` and `scratches[k]` are a work area. `indices[k]`
    is the parameter's index in the optimizer's `params` (its key in `opt.state`). With
    `count_steps` (Adam) each parameter's state holds its step count, "step", which a flat
    step needs to be the same for all.

        >>> from microtensor.optim.flat import FlatBuffers
        >>> W, b = nn.Parameter(np.ones((2, 3))), nn.Parameter(np.ones(3))
        >>> buffers = FlatBuffers([(0, W), (1, b)], state_names=("exp_avg",))
        >>> buffers.grad.shape, buffers.grads[1] is b._grad_storage
        ((9,), True)
    """

    def __init__(self, indexed_params: list[tuple[int, Tensor]], state_names: tuple[str, ...],
                 count_steps: bool = True):
        self.count_steps = count_steps
        self.indices = [index for index, _ in indexed_params]
        self.params = [param for _, param in indexed_params]
        self.shapes = [param.shape for param in self.params]
        self.dtype = self.params[0].dtype
        self.bounds = np.cumsum([0] + [param.size for param in self.params]).tolist()
        size = self.bounds[-1]
        self.grad = np.zeros(size, self.dtype)
        self.grads = self.views(self.grad)
        for param, view in zip(self.params, self.grads):
            param._grad_storage = view
        self.scratch = np.empty(size, self.dtype)
        self.scratches = self.views(self.scratch)
        self.blocks = self.parameter_blocks(BLOCK_SIZE)
        self.state = {name: np.zeros(size, self.dtype) for name in state_names}
        self.state_views = {name: self.views(flat) for name, flat in self.state.items()}
        # The optimizer's state dict of each parameter once it holds our views (None
        # before); a different dict there means the state was replaced since.
        self.entries: list[dict | None] = [None] * len(self.params)
        self._per_param = [(param, index, shape, grad_view,
                            [(name, views[k]) for name, views in self.state_views.items()])
                           for k, (param, index, shape, grad_view) in enumerate(
                               zip(self.params, self.indices, self.shapes, self.grads))]

    def parameter_blocks(self, size: int) -> list[tuple[slice, range]]:
        """The flat arrays cut, between parameters, into blocks of about `size` numbers
        (a parameter larger than that is a block of its own): (the block's slice of the
        flat arrays, the indices k of its parameters). A step that makes all its passes
        over one block before the next keeps that block in the CPU's cache, where pass
        after pass over the whole arrays reads them from memory each time."""
        blocks, first = [], 0
        for k in range(len(self.params)):
            if self.bounds[k + 1] - self.bounds[first] >= size or k == len(self.params) - 1:
                blocks.append((slice(self.bounds[first], self.bounds[k + 1]),
                               range(first, k + 1)))
                first = k + 1
        return blocks

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Each parameter's share of `flat`, shaped like the parameter."""
        return [flat[start:stop].reshape(shape) for start, stop, shape in
                zip(self.bounds[:-1], self.bounds[1:], self.shapes)]

    def prepare(self, state: dict[int, dict]) -> int | None:
        """Make the flat buffers current for one step: every gradient in `grad`, every
        parameter's state in `state` (the optimizer's; entries are created, with zeros, or
        moved into the flat buffers as needed). Returns the step count all parameters
        share (0 without `count_steps`), or None when the flat step does not apply: a
        gradient is None or mis-shaped, a parameter's array changed shape or dtype, or the
        step counts differ."""
        dtype, entries = self.dtype, self.entries
        steps = None if self.count_steps else 0
        # The checks run every step for every parameter, so they are written for speed:
        # identity before equality, no generators.
        for k, (param, index, shape, grad_view, state_views) in enumerate(self._per_param):
            grad, data = param.grad, param.data
            if (grad is None or grad.shape != shape or data.shape != shape
                    or (data.dtype is not dtype and data.dtype != dtype)):
                return None
            entry = entries[k]
            if entry is None or state.get(index) is not entry:
                entry = self._adopt(k, state)
            else:
                for name, view in state_views:
                    if entry[name] is not view:   # replaced by hand since the last step
                        entry = self._adopt(k, state)
                        break
            if steps is None:
                steps = entry["step"]
            elif self.count_steps and entry["step"] != steps:
                return None
            if grad is not grad_view:  # set by hand, or by backward before we existed
                np.copyto(grad_view, grad, casting="unsafe")
        return steps

    def count_step(self) -> None:
        """Add one to every parameter's step count (after a flat step)."""
        for entry in self.entries:
            entry["step"] += 1

    def _adopt(self, k: int, state: dict[int, dict]) -> dict:
        """Move parameter k's state into the flat buffers (zeros, and step 0, if it has
        none yet) and make its entry in the optimizer's `state` hold the views."""
        entry = state.setdefault(self.indices[k], {"step": 0} if self.count_steps else {})
        for name, views in self.state_views.items():
            held = entry.get(name)
            if held is None:
                views[k].fill(0)
            elif held is not views[k]:
                np.copyto(views[k], held)
            entry[name] = views[k]
        self.entries[k] = entry
        return entry


def flat_buffers_by_dtype(indexed_params: list[tuple[int, Tensor]],
                          state_names: tuple[str, ...],
                          count_steps: bool = True) -> list[FlatBuffers]:
    """One FlatBuffers per dtype among `indexed_params` ((index in the optimizer,
    parameter) pairs), in order of first appearance."""
    by_dtype: dict[np.dtype, list[tuple[int, Tensor]]] = {}
    for index, param in indexed_params:
        by_dtype.setdefault(param.dtype, []).append((index, param))
    return [FlatBuffers(indexed, state_names, count_steps) for indexed in by_dtype.values()]
