"""viz: see how gradients flow through a microtensor graph.

    >>> import microtensor as mt, viz
    >>> W_q = mt.randn(4, 2, requires_grad=True, name="W_q")
    >>> loss = (mt.randn(3, 4) @ W_q).softmax().sum()
    >>> graph = viz.draw(loss, highlight=W_q)        # graphviz.Digraph, inline in Jupyter
    >>> viz.render(graph, "out/loss.svg")             # needs Graphviz's `dot`
    >>> steps = viz.step_through(loss, pause=True)    # runs the backward pass, printing it
    >>> graph = viz.draw(loss, steps=steps)           # every gradient, |g| on every edge
    >>> viz.write_player(new_loss, "out/backprop.html")  # backward of a fresh graph, in HTML

`viz` needs only `microtensor` (and the `graphviz` Python package; `dot` for pictures).
The lessons in `viz.lessons` build on the `transformer` package as well.
"""
from .graph import DotNotFoundError, Graph, draw, render
from .player import write_player
from .stepper import step_through

__all__ = ["DotNotFoundError", "Graph", "draw", "render", "step_through", "write_player"]
