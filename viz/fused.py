"""Fused nodes: what the pictures show where the fast path ran one node for several ops.

By default a model runs its fast forms, so a loss's graph holds fused nodes: attention as
one `self_attention` node, LayerNorm and the next Linear as one `layer_norm_linear`. A
learner wants to see matmul, scale, mask, softmax, matmul. Each fused node names its
textbook form (`node.reference`), and `mt.textbook_graph(root)` opens every fused node into
it, on the same parameters. `draw`, `step_through`, `write_player` and `play` all start
here, with `textbook=True` by default:

    >>> root, note = as_drawn(loss)    # the opened graph, and a note saying what was opened
    >>> root, note = as_drawn(loss, textbook=False)    # the graph as it ran: fused nodes

The opened graph is remembered for as long as `loss` lives, so `step_through(loss)` and a
later `draw(loss, steps=steps)` see the same tensors (the steps name them).
"""
from __future__ import annotations

import weakref

import microtensor as mt
from microtensor.autograd import topological_order
from microtensor.tensor import Tensor

__all__ = ["as_drawn", "fused_label", "fused_nodes"]

# id(root) -> (a weak reference to root, its opened root). Opening twice would give new
# tensors each time, and steps recorded on the first could not be drawn on the second.
_OPENED: dict[int, tuple[weakref.ref, Tensor]] = {}


def fused_nodes(root: Tensor) -> dict[str, str]:
    """The fused ops in the graph behind `root`: {op name: its reference's name}."""
    return {t.op.name: t.op.reference.__name__
            for t in reversed(topological_order(root, every_input=True))
            if t.op is not None and t.op.reference is not None}


def as_drawn(root: Tensor, textbook: bool = True) -> tuple[Tensor, str]:
    """The root whose graph to draw or step through, and a note for the title.

    textbook=True: every fused node opened into its textbook form (`mt.textbook_graph`);
    the leaves (parameters, inputs) are the same tensors, so stepping through the opened
    graph fills the same `.grad`s. textbook=False: the graph as it ran. The note says
    which fused nodes were opened, or which are shown fused ("" when there are none)."""
    fused = fused_nodes(root)
    if not fused:
        return root, ""
    if not textbook:
        return root, "fused nodes as they ran: " + ", ".join(fused) + \
            " (textbook=True draws their textbook form)"
    cached = _OPENED.get(id(root))
    if cached is not None and cached[0]() is root:
        opened = cached[1]
    else:
        opened = mt.textbook_graph(root)
        key = id(root)
        # Forget the opened graph when root goes: its id may then be reused.
        _OPENED[key] = (weakref.ref(root, lambda _, key=key: _OPENED.pop(key, None)), opened)
    return opened, "\n".join(f"{name}: fused node, drawn as its textbook form ({reference})"
                             for name, reference in fused.items())


def fused_label(node) -> str | None:
    """The line an op's label adds when the node is fused: what it stands for."""
    if node.reference is None:
        return None
    return f"fused: one node for {node.reference.__name__}"
