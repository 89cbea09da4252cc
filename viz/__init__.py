"""viz: see how gradients flow through a microtensor graph.

    >>> import microtensor as mt, viz
    >>> W_q = mt.randn(4, 2, requires_grad=True, name="W_q")
    >>> loss = (mt.randn(3, 4) @ W_q).softmax().sum()
    >>> graph = viz.draw(loss, highlight=W_q)        # graphviz.Digraph, inline in Jupyter
    >>> viz.render(graph, "out/loss.svg")             # needs Graphviz's `dot`
    >>> steps = viz.step_through(loss, pause=True)    # the backward pass, in the terminal
    >>> viz.write_player(loss2, "out/backprop.html")  # the same, in a browser page

`viz` needs only `microtensor` (and the `graphviz` Python package; `dot` for pictures).
The lessons in `viz.lessons` build on the `transformer` package as well.
"""
from .graph import DotNotFoundError, Graph, draw, render
from .player import write_player
from .stepper import step_through

__all__ = ["DotNotFoundError", "Graph", "draw", "render", "step_through", "write_player"]
