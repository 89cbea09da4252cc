"""Walk the backward pass in the terminal, one node at a time.

Each step is one `BackwardStep` of `microtensor.autograd.backward_steps`: the engine's own
backward pass, paused after every node. For an op you see its derivative rule, the gradient
that arrived at its output, and what it sends to each input; for a leaf, what is added to
its `.grad`.

    >>> import microtensor as mt
    >>> from viz.stepper import step_through
    >>> W = mt.tensor([[1.0, 2.0]], requires_grad=True, name="W")
    >>> steps = step_through((W * W).sum())
    backward pass from t0 (): 3 steps, root first, each tensor after every use of it
    step 1/3  sum   rule: dx = broadcast(g) over the summed axes
    ...

`python -m viz step` runs it on a small attention example; `pause=True` waits for Enter.
"""
from __future__ import annotations

import sys
from typing import TextIO

from microtensor.autograd import BackwardStep, backward_steps
from microtensor.errors import op_error
from microtensor.tensor import Tensor

from .fused import as_drawn
from .labels import format_config
from .labels import preview as _preview
from .layout import Layout, plan_layout


def preview(array, max_values: int) -> str:
    """Values (or shape and statistics); a matrix starts on its own, indented, line."""
    text = _preview(array, max_values)
    if "\n" not in text:
        return text
    shape, _, values = text.partition(" [")
    return shape + "\n      [" + values.replace("\n", "\n      ")


def describe_step(step: BackwardStep, layout: Layout, total: int,
                  max_values: int = 16) -> str:
    """The text of one step: 'step k/N', the op and its rule, the gradient arriving, and
    what goes to each input (values when at most `max_values`, else shape and norm)."""
    k = step.index + 1
    out_name = layout.describe(step.tensor)
    if step.node is None:
        return (f"step {k}/{total}  leaf {out_name} {tuple(step.tensor.shape)}\n"
                f"  {out_name}.grad += {preview(step.grad_out, max_values)}")
    config = format_config(step.node.config)
    op = f"{step.node.name}({config})" if config else step.node.name
    lines = [f"step {k}/{total}  {op}   rule: {step.node.rule}",
             f"  gradient arriving at {out_name}: {preview(step.grad_out, max_values)}"]
    for position, (inp, sent) in enumerate(zip(step.node.inputs, step.grads_in)):
        if not isinstance(inp, Tensor):
            continue  # a number or array argument: not part of the graph
        name = layout.describe(inp)
        if sent is None:
            lines.append(f"  input {position} ({name}): no gradient (constant)")
        else:
            lines.append(f"  sends to {name}: {preview(sent, max_values)}")
    return "\n".join(lines)


def step_through(root: Tensor, grad=None, *, pause: bool = False, file: TextIO | None = None,
                 params=None, max_values: int = 16, retain_graph: bool = False,
                 textbook: bool = True) -> list[BackwardStep]:
    """Run the backward pass of `root`, printing each step; returns the steps.

    This *is* the backward pass (leaves' `.grad` fill up as it goes), so call it instead of
    `root.backward()`, not after. With `pause=True` it waits for Enter between steps
    (type q and Enter to run the rest without pausing). `params=model` names parameters.
    Fused nodes are stepped through as their textbook form (`viz.fused.as_drawn`; the
    leaves are the same tensors and get the same gradients); `textbook=False` steps
    through the graph as it ran. `viz.draw(root, steps=steps)` then draws the same graph.

    >>> steps = step_through(loss, params=model, pause=True)
    """
    if not isinstance(root, Tensor):
        raise op_error("step_through", f"expected the Tensor to backpropagate from, got "
                       f"{type(root).__name__}", TypeError, "pass e.g. step_through(loss)")
    file = sys.stdout if file is None else file
    root, note = as_drawn(root, textbook)
    layout = plan_layout(root, params)
    # Steps are numbered by their place in the engine's own order (the tensors that need
    # gradients), so "k/N" here matches `BackwardStep.index` exactly.
    total = sum(1 for t in layout.order if t.requires_grad)
    print(f"backward pass from {layout.label_of(root)} {tuple(root.shape)}: "
          f"{total} steps, root first, each tensor after every use of it", file=file)
    if note:
        print(note, file=file)
    steps = []
    for step in backward_steps(root, grad, retain_graph=retain_graph):
        if pause and steps:
            answer = input("  [Enter: next step, q: run to the end] ")
            pause = answer.strip().lower() != "q"
        print(describe_step(step, layout, total, max_values), file=file)
        steps.append(step)
    print(f"done: {len(steps)} steps", file=file)
    return steps
