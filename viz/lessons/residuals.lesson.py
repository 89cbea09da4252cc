"""Why deep networks need residual connections and normalisation: a literate lesson (see
viz.lessons.literate).

Run it: `python -m viz lesson residuals`; as a notebook: `python -m viz lesson residuals
--notebook`.
"""
SUMMARY = ("why residuals and normalisation: a 24-layer tanh stack's gradient vanishes "
           "layer by layer; x + f(x) keeps it; LayerNorm keeps tanh out of saturation")

# %% [markdown]
# # Why residuals and normalisation
#
# Every Transformer layer wraps its sublayers in a residual connection and a LayerNorm:
# `LayerNorm(x + f(x))` in the 2017 paper (the architecture lesson), `x + f(LayerNorm(x))`
# in GPT-2 and the models since. Why? Backpropagation multiplies the gradient by one layer's Jacobian per layer. Stack 24
# layers whose Jacobians each shrink a vector by a factor of about 0.6, and the gradient
# that reaches the first layer has been multiplied by 0.6²³ ≈ 10⁻⁵. That layer learns
# nothing. A residual layer's Jacobian is `I + J_f`, so the identity always carries the
# gradient through, however small `J_f` is.
#
# This lesson builds a stack of 24 layers of Linear + tanh three ways, trains each briefly
# on the same small task with plain SGD, and watches every layer with the training monitor
# (`viz.monitor.TrainingMonitor`): the gradient norm of each layer's parameters, how far
# each step moves them, and how many tanh units are saturated. Every claim below is checked
# against the numbers it measures. Change a number and run the cells again.

# %% tags=["parameters"]
out_dir = None     # where the plots go (default: lesson-output/residuals/)
step = False       # this lesson has no backward graph to step through
html = False

# %%
import math
import time

import numpy as np

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim
from viz.lessons.common import check, no_player, output_dir, table
from viz.monitor import TrainingMonitor
from viz.plots import line_plot_svg

out = output_dir("residuals", out_dir)
no_player("residuals", step, html, print)

DEPTH, WIDTH = 24, 32          # 24 layers of 32 units
GAIN = 1 / math.sqrt(3)        # weight std = GAIN / √fan_in (see below)
STEPS, LR, BATCH = 40, 0.1, 64
SEED = 0                       # the data, the weights and the batches
N_INPUTS, N_CLASSES = 8, 4

# %% [markdown]
# ## The task and the layers
#
# Points in 8 dimensions, each labelled by which of 4 random directions it lies furthest
# along: an easy task, so that what is hard here is the depth alone.
#
# One layer is `tanh(x W + b)`. Its weights are drawn uniform with standard deviation
# GAIN/√fan_in. GAIN = 1/√3 is what `torch.nn.Linear` starts with (uniform in ±1/√fan_in).
# Xavier's GAIN = 1, which microtensor's `nn.Linear` uses, puts a tanh stack on the edge
# between vanishing and exploding; try GAIN = 1 below and see how much less the plain
# stack suffers.

# %%
data = np.random.default_rng([SEED, 1])
inputs = data.standard_normal((512, N_INPUTS)).astype(np.float32)
labels = (inputs @ data.standard_normal((N_INPUTS, N_CLASSES))).argmax(axis=-1)


class Layer(nn.Module):
    """tanh(x W + b); with `residual`, x + tanh(...); with `norm`, LayerNorm(x) goes in."""

    def __init__(self, width: int, residual: bool, norm: bool):
        super().__init__()
        self.residual = residual
        self.norm = nn.LayerNorm(width) if norm else None
        self.linear = nn.Linear(width, width)
        self.act = nn.Tanh()

    def forward(self, x):
        h = x if self.norm is None else self.norm(x)
        y = self.act(self.linear(h))
        return x + y if self.residual else y


class Stack(nn.Module):
    """Inputs -> width, DEPTH layers, (a final LayerNorm with `norm`), -> class scores."""

    def __init__(self, residual: bool, norm: bool):
        super().__init__()
        self.embed = nn.Linear(N_INPUTS, WIDTH)
        self.layers = nn.ModuleList(Layer(WIDTH, residual, norm) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH) if norm else None
        self.head = nn.Linear(WIDTH, N_CLASSES)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x if self.norm is None else self.norm(x))

# %% [markdown]
# ## Three stacks
#
# - **plain**: `x ← tanh(x W + b)`, 24 times;
# - **residual**: `x ← x + tanh(x W + b)`;
# - **residual + LayerNorm**: `x ← x + tanh(LayerNorm(x) W + b)`, and a LayerNorm before
#   the head: GPT-2's "pre-LN" arrangement.
#
# All three start from the same weights.

# %%
VARIANTS = {"plain": (False, False), "residual": (True, False),
            "residual + LayerNorm": (True, True)}


def build(residual: bool, norm: bool, seed: int = SEED) -> Stack:
    """A stack whose 24 layers start from the same weights whatever the variant."""
    mt.manual_seed(seed)
    model = Stack(residual, norm)
    weights = np.random.default_rng(seed)
    bound = GAIN * math.sqrt(3 / WIDTH)      # uniform in ±bound has std GAIN / √WIDTH
    for layer in model.layers:
        layer.linear.weight.data[...] = weights.uniform(-bound, bound, (WIDTH, WIDTH))
    return model

# %% [markdown]
# ## Training, watched
#
# Each stack takes STEPS steps of SGD on batches of 64 points. The monitor's hooks record,
# at every step, each layer's parameter-gradient norm (its weights, bias and LayerNorm
# together: `monitor.layer_grad_norms`), the update-to-data ratio log10(‖Δw‖/‖w‖) of each
# weight, and, for each tanh, the fraction of its outputs with |y| > 0.97, where tanh's
# slope 1 − y² is below 0.06.

# %%
def train(residual: bool, norm: bool) -> tuple[TrainingMonitor, list[float]]:
    """Train one stack; returns its monitor (one StepRecord per step) and its losses."""
    model = build(residual, norm)
    opt = optim.SGD(model.parameters(), lr=LR)
    losses = []
    with TrainingMonitor(model, opt) as monitor:     # watches each layer and each tanh
        for step in range(1, STEPS + 1):
            batch = np.random.default_rng([SEED, step]).integers(0, len(inputs), BATCH)
            monitor.begin_step(step)
            loss = F.cross_entropy(model(mt.tensor(inputs[batch])), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.end_step(loss)
            losses.append(loss.item())
    return monitor, losses


def per_layer(monitor: TrainingMonitor, record) -> np.ndarray:
    """The gradient norm of layers 1..DEPTH in one step's record."""
    norms = monitor.layer_grad_norms(record)
    return np.array([norms[f"layers.{i}"] for i in range(DEPTH)])


started = time.perf_counter()
runs = {name: train(*flags) for name, flags in VARIANTS.items()}
seconds = time.perf_counter() - started
grads = {name: np.array([per_layer(monitor, record) for record in monitor.history])
         for name, (monitor, _) in runs.items()}                    # (STEPS, DEPTH) each
print(f"trained {len(runs)} stacks of {DEPTH} layers for {STEPS} steps each in "
      f"{seconds:.1f} s")
shown = [0, 5, 11, 17, 23]
print("gradient norm of each layer's parameters at step 1:")
print(table([[name, *grads[name][0, shown]] for name in runs],
            ["stack", *(f"layer {i + 1}" for i in shown)]))

# %% [markdown]
# ## The plain stack: the gradient vanishes on the way down
#
# Layer 24 gets a gradient of a usual size; layer 1 gets about 10⁻⁵ of it, and it stays
# that way while the stack trains. The backward pass multiplies by W_lᵀ diag(1 − y²) at
# each layer. With small activations 1 − y² ≈ 1, and a random W of std GAIN/√WIDTH shrinks
# a vector by about GAIN, so 23 layers shrink it by about GAIN²³. The per-layer factor
# measured, (layer 1 / layer 24)^(1/23), is close to GAIN.

# %%
plain = grads["plain"]
first_over_last = plain[:, 0] / plain[:, -1]        # at every step
factor = first_over_last[0] ** (1 / (DEPTH - 1))
check(first_over_last[0] < 1e-3,
      "plain: layer 1's gradient is orders of magnitude below layer 24's",
      f"layer 1 / layer 24 = {first_over_last[0]:.1e} at step 1")
check(first_over_last.max() < 1e-2,
      "plain: training does not mend it: below 1/100 at every step",
      f"at most {first_over_last.max():.1e} over {STEPS} steps")
check(abs(factor - GAIN) < 0.15,
      "plain: each layer shrinks the gradient by about GAIN",
      f"per-layer factor {factor:.3f}, GAIN = {GAIN:.3f}")

# %% [markdown]
# ## With residual connections it stays within a small factor
#
# The Jacobian of x + f(x) is I + J_f: whatever f does, the gradient arriving at a layer's
# output reaches its input unchanged through the identity, and adds to what comes through
# f. Every layer sees a gradient of about the same size, at the first step and on average
# over the run, with or without LayerNorm. (Single steps are noisier: the table shows the
# worst.)

# %%
def spread_of(norms: np.ndarray) -> float:
    """Largest over smallest of the layers' gradient norms."""
    return float(norms.max() / norms.min())


spread = {name: {"step 1": spread_of(grads[name][0]),
                 "run mean": spread_of(grads[name].mean(axis=0)),
                 "worst step": max(spread_of(norms) for norms in grads[name])}
          for name in runs}
print("largest / smallest layer gradient norm:")
print(table([[name, *spread[name].values()] for name in runs],
            ["stack", *spread["plain"]]))
for name in ("residual", "residual + LayerNorm"):
    check(max(spread[name]["step 1"], spread[name]["run mean"]) < 10,
          f"{name}: every layer's gradient is within a factor of 10 of every other's",
          f"{spread[name]['step 1']:.1f} at step 1, {spread[name]['run mean']:.1f} averaged "
          f"over the run")
check(min(spread["plain"].values()) > 1000, "plain: more than a factor of 1000",
      f"{spread['plain']['step 1']:.0e} at step 1")

# %% [markdown]
# With LayerNorm the first layers get somewhat more than the last. LayerNorm's backward
# divides by the std of what it reads, and a residual stream's std grows with depth
# (see below), so a deep layer's branch gets a smaller share: a gentle slope, set by the
# stream's growth, nothing like the plain stack's cliff.

# %%
mean_with_norm = grads["residual + LayerNorm"].mean(axis=0)
check(mean_with_norm.argmax() == 0 and mean_with_norm[0] / mean_with_norm[-1] > 2,
      "residual + LayerNorm: layer 1 gets the largest gradient, more than twice layer 24's",
      f"layer 1 / layer 24 = {mean_with_norm[0] / mean_with_norm[-1]:.1f} averaged over "
      f"the run")

# %% [markdown]
# ## A vanished gradient means a layer that does not learn
#
# SGD moves each weight by LR times its gradient. The monitor's update-to-data ratio,
# log10(‖Δw‖/‖w‖) per step, is about −3 for a layer that learns at a sane pace (the
# "1e-3" guide of Karpathy's lecture); far below it a layer is frozen. In the plain stack
# layer 1's weights move by about 10⁻⁷ of their size a step: they stay where they started.
# (The residual stacks sit above the guide: LR = 0.1 is brisk, so that 40 steps suffice.)
# The plain stack's loss barely moves, while the residual stacks learn the task.

# %%
def update_ratios(monitor: TrainingMonitor) -> np.ndarray:
    """log10 ‖Δw‖/‖w‖ of each layer's weight matrix, averaged over the steps."""
    return np.array([np.mean([record.update_ratio[f"layers.{i}.linear.weight"]
                              for record in monitor.history]) for i in range(DEPTH)])


ratios = {name: update_ratios(monitor) for name, (monitor, _) in runs.items()}
losses = {name: run_losses for name, (_, run_losses) in runs.items()}
print(table([[name, ratios[name][0], ratios[name][-1], losses[name][0],
              float(np.mean(losses[name][-5:]))] for name in runs],
            ["stack", "log10 Δw/w layer 1", "layer 24", "loss step 1",
             f"loss steps {STEPS - 4}-{STEPS}"]))
check(ratios["plain"][0] < -5,
      "plain: layer 1's weights barely move, by less than 1e-5 of their size a step",
      f"log10 ratio {ratios['plain'][0]:.1f}")
lowest = min(min(ratios["residual"]), min(ratios["residual + LayerNorm"]))
check(lowest > -3, "residual stacks: every layer's weights move by more than 1e-3 a step",
      f"lowest log10 ratio {lowest:.1f}")
drop = {name: 1 - np.mean(losses[name][-5:]) / losses[name][0] for name in runs}
check(drop["plain"] < 0.2 and drop["residual + LayerNorm"] > 0.6,
      "in the same steps the plain stack's loss falls by under 20%, residual + "
      "LayerNorm's by over 60%",
      f"{drop['plain']:.0%} vs {drop['residual + LayerNorm']:.0%}")

# %% [markdown]
# ## What LayerNorm adds: tanh stays out of saturation
#
# A residual stream only adds: each layer writes one more tanh output into it, so its
# spread grows with depth. Without normalisation the deep layers read that larger x, their
# pre-activations grow, and more of their tanh units saturate (|y| > 0.97: a slope below
# 0.06, almost no gradient through them). LayerNorm hands every layer an input of mean 0
# and variance 1, so each layer's tanh works in the same range however deep it sits.

# %%
def saturation(monitor: TrainingMonitor, step: int = 0) -> np.ndarray:
    """Fraction of each layer's tanh outputs with |y| > 0.97 at one recorded step."""
    record = monitor.history[step]
    return np.array([record.modules[f"layers.{i}.act"].saturated for i in range(DEPTH)])


first_record = runs["residual"][0].history[0]
stream_std = [first_record.modules[f"layers.{i}"].std for i in (0, DEPTH - 1)]
check(stream_std[1] > 2 * stream_std[0],
      "residual: the stream's spread grows with depth, more than twofold over the layers",
      f"std {stream_std[0]:.2f} after layer 1, {stream_std[1]:.2f} after layer {DEPTH}")
saturated = {name: saturation(runs[name][0]) for name in ("residual", "residual + LayerNorm")}
check(saturated["residual"][-1] > 0.1 and saturated["residual"][0] < 0.02,
      "residual without LayerNorm: the deepest tanh saturates, the first does not",
      f"saturated fraction {saturated['residual'][0]:.1%} in layer 1, "
      f"{saturated['residual'][-1]:.1%} in layer {DEPTH}")
check(saturated["residual + LayerNorm"].max() < 0.01,
      "residual + LayerNorm: no layer's tanh is saturated (under 1% of outputs)",
      f"at most {saturated['residual + LayerNorm'].max():.2%}")

# %% [markdown]
# ## The pictures
#
# The gradient norm of each layer at step 1 and at the last step (log scale), the
# update-to-data ratio of each layer with the 1e-3 guide, the fraction of saturated tanh
# outputs per layer, and the three losses.

# %%
layer_numbers = np.arange(1, DEPTH + 1)
files = [
    line_plot_svg({f"{name}, step {s}": (layer_numbers, grads[name][i])
                   for name in runs for s, i in ((1, 0), (STEPS, -1))},
                  out / "residuals-gradient-per-layer.svg", log_y=True, x_label="layer",
                  y_label="gradient norm", title="gradient norm of each layer's parameters"),
    line_plot_svg({name: (layer_numbers, ratios[name]) for name in runs},
                  out / "residuals-update-ratio.svg", x_label="layer", guide=-3,
                  guide_label="1e-3", y_label="log10 ‖Δw‖/‖w‖",
                  title="update-to-data ratio of each layer's weights (mean over steps)"),
    line_plot_svg({name: (layer_numbers, saturated[name]) for name in saturated},
                  out / "residuals-saturation.svg", x_label="layer",
                  y_label="fraction |tanh| > 0.97",
                  title="saturated tanh outputs per layer at step 1"),
    line_plot_svg({name: (np.arange(1, STEPS + 1), losses[name]) for name in runs},
                  out / "residuals-loss.svg", y_label="cross-entropy",
                  title="training loss"),
]
for path in files:
    print(f"wrote {path}")

# %%
numbers = {"first_over_last_plain": float(first_over_last[0]),
           "first_over_last_with_norm": float(mean_with_norm[0] / mean_with_norm[-1]),
           "first_over_last_plain_max": float(first_over_last.max()),
           "per_layer_factor": float(factor), "gain": GAIN, "spread": spread,
           "update_ratio_first": {name: float(r[0]) for name, r in ratios.items()},
           "update_ratio_last": {name: float(r[-1]) for name, r in ratios.items()},
           "loss_drop": {name: float(d) for name, d in drop.items()},
           "stream_std": stream_std,
           "saturated_last": {name: float(s[-1]) for name, s in saturated.items()},
           "saturated_max_with_norm": float(saturated["residual + LayerNorm"].max()),
           "seconds": seconds, "files": [str(path) for path in files]}
