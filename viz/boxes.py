"""Folded modules drawn as one box each, and the gradient that flows between the boxes.

A folded box (`viz.draw(..., depth=, expand=, collapse=)`) says what its module holds:
how many ops and tensors, its parameters' shapes grouped by the module that owns them, and
after backward their gradients' norms, largest first. With the recorded steps of a backward
pass it also says how large the gradient arriving at it is and how large what it sends on,
and the edges between boxes carry that norm: a model's overview then shows where the
gradient grows or shrinks through depth.
"""
from __future__ import annotations

import graphviz
import numpy as np

from microtensor.tensor import Tensor

from .labels import dot_string, fmt, norm, room_for, shorten
from .layout import Layout


class Box:
    """What a folded module holds: counts, its parameters (shape and gradient), and
    whether the highlighted route runs through it."""

    def __init__(self):
        self.tensors, self.ops, self.params, self.lit = 0, 0, [], False

    def count(self, tensor, look) -> None:
        """Take in one tensor of the module (and the op that made it)."""
        self.tensors += 1
        self.ops += tensor.op is not None
        name = look.layout.names[id(tensor)]
        if tensor.op is None and name:
            step = look.recorded.get(id(tensor))
            grad = step.grad_out if step is not None else tensor.grad
            self.params.append((name, tuple(tensor.shape), grad))
        self.lit |= id(tensor) in look.on_path


def box_node(path: str, box: Box, look, node_id: str) -> tuple[dict, bool]:
    """A module drawn as one box: its path, how much is inside, the gradient that arrives
    at it and leaves it (with recorded steps), and its parameters' shapes, grouped by the
    module inside the box that owns them, with their gradients' norm once there is one
    (largest first: where the gradient is, at a glance)."""
    lines = [path, f"{box.ops} ops, {box.tensors} tensors"]
    flow = look.flow.get(path)
    if flow is not None:
        lines.append(f"|g| arriving {fmt(flow.arriving)}" + (
            "" if flow.leaving is None else f", leaving {fmt(flow.leaving)}"))
    owners = {}   # the module inside the box that owns them -> [(shape, grad)]
    for name, shape, grad in box.params:
        inner = name[len(path) + 1:] if name.startswith(path + ".") else name
        owners.setdefault(inner.split(".")[0] if "." in inner else "own", []).append(
            (shape, grad))
    rows = []
    for owner, owned in owners.items():
        shapes = [shape for shape, _ in owned]
        counted = {shape: shapes.count(shape) for shape in shapes}
        text = f"{owner}: " + ", ".join(f"{n}×{shape}" if n > 1 else f"{shape}"
                                        for shape, n in counted.items())
        grads = [grad for _, grad in owned if grad is not None]
        size = float(np.sqrt(sum(norm(g) ** 2 for g in grads))) if grads else None
        rows.append((text if size is None else f"{text}  |g| {fmt(size)}", size))
    if any(size is not None for _, size in rows):
        rows.sort(key=lambda row: -(row[1] or 0.0))     # stable: ties keep forward order
    lines = [shorten(line) for line in lines + [text for text, _ in rows]]
    label = graphviz.nohtml("\\l".join(dot_string(line) for line in lines) + "\\l")
    return dict(label=label, **room_for([(line, 10, False) for line in lines]),
                shape="box3d", style="filled", id=node_id,
                **look.emphasis(box.lit, "#e8e8f4", "#444466")), box.lit


class Flow:
    """The gradient a folded box receives from outside it and sends out of it."""

    def __init__(self):
        self.arriving, self.leaving = 0.0, None    # None: it sends nothing out (tok_embed)


def gradient_flow(layout: Layout, recorded: dict) -> tuple[dict, dict]:
    """With recorded steps: for each folded box, the norm of the gradient arriving at it
    and of what it sends on ({fold: Flow}); and every gradient that crosses into a
    box, summed per receiving tensor ({(sending fold or None, id(tensor)): array}), which
    labels the edges between boxes."""
    crossing = {}
    for k, tensor in enumerate(layout.order):
        step = recorded.get(id(tensor))
        if tensor.op is None or step is None:
            continue
        fold = layout.fold_of(k)
        for inp, sent in zip(tensor.op.inputs, step.grads_in):
            if isinstance(inp, Tensor) and sent is not None and \
                    layout.fold_of(layout.index[id(inp)]) != fold:
                key = (fold, id(inp))
                crossing[key] = sent if key not in crossing else crossing[key] + sent
    flows = {fold: Flow() for fold in layout.folded}
    for (sender, receiver), sent in crossing.items():
        size = norm(sent) ** 2
        if sender is not None:
            flows[sender].leaving = (flows[sender].leaving or 0.0) + size
        receiving = layout.fold_of(layout.index[receiver])
        if receiving is not None:
            flows[receiving].arriving += size
    for flow in flows.values():
        flow.arriving = np.sqrt(flow.arriving)
        flow.leaving = None if flow.leaving is None else np.sqrt(flow.leaving)
    return (flows if recorded else {}), crossing


class FedBack:
    """Whether an input of a folded box was computed from that box's own outputs. A
    module called twice with an outside op between the calls, f(g(f(x))), drawn as one
    box, has an edge from g's output back up into the box: that edge is left out of the
    ranking (the box ranks after x). The walk back from the input stops at tensors made
    before the box's first op, so it stays short."""

    def __init__(self, layout: Layout):
        self.layout, self.first = layout, {}   # box -> its earliest op's k (the largest)
        for k, tensor in enumerate(layout.order):
            fold = layout.fold_of(k)
            if fold is not None and tensor.op is not None:
                self.first[fold] = k

    def __call__(self, tensor, fold) -> bool:
        """Whether `tensor`, an input of the box `fold`, was computed from the box."""
        layout, first = self.layout, self.first.get(fold)
        if first is None or layout.fold_of(layout.index[id(tensor)]) == fold:
            return False
        stack, seen = [tensor], set()
        while stack:
            current = stack.pop()
            k = layout.index[id(current)]
            if id(current) in seen or k > first:
                continue
            seen.add(id(current))
            if layout.fold_of(k) == fold:
                return True
            if current.op is not None:
                stack.extend(t for t in current.op.inputs if isinstance(t, Tensor))
        return False
