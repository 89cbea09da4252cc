"""viz: see how gradients flow through a microtensor graph.

    >>> import microtensor as mt, viz
    >>> W_q = mt.randn(4, 2, requires_grad=True, name="W_q")
    >>> loss = (mt.randn(3, 4) @ W_q).softmax().sum()
    >>> graph = viz.draw(loss, highlight=W_q)        # graphviz.Digraph, inline in Jupyter
    >>> viz.render(graph, "out/loss.svg")             # system `dot` or bundled graphviz-pure
    >>> steps = viz.step_through(loss, pause=True)    # runs the backward pass, printing it
    >>> graph = viz.draw(loss, steps=steps)           # every gradient, |g| on every edge
    >>> viz.write_player(new_loss, "out/backprop.html")  # backward of a fresh graph, in HTML
    >>> viz.play(another_loss)                        # the same player inline in Jupyter
    >>> monitor = viz.TrainingMonitor(nn.Linear(2, 2))  # watches training: see viz.monitor

`viz` needs only `microtensor`, the `graphviz` Python package (to build DOT source) and a
layout engine: Graphviz's `dot` if installed, else graphviz-pure, which pip installs with
microtensor (`viz.find_engine` says which; MICROTENSOR_DOT chooses). The lessons in
`viz.lessons` build on the `transformer` package as well.
"""
from .attention_view import AttentionView, view_attention
from .attribution import Attribution, input_x_gradient, integrated_gradients, saliency
from .engine import DotNotFoundError, Engine, find_engine
from .graph import Graph, draw, render
from .monitor import TrainingMonitor
from .player import Player, play, write_player
from .report import Report
from .stepper import step_through

__all__ = ["AttentionView", "Attribution", "DotNotFoundError", "Engine", "Graph", "Player", "Report",
           "TrainingMonitor", "draw", "find_engine", "input_x_gradient", "integrated_gradients",
           "play", "render", "saliency", "step_through", "view_attention", "write_player"]
