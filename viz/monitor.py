"""Watch a model learn: per-step statistics recorded through hooks while it trains.

A `TrainingMonitor` attaches to a model (and the optimizer that trains it) and, for each
step it records, keeps what the diagnostics of Karpathy's "Building makemore" lecture 4
look at:

- for each watched module, the mean and std of its output and of the gradient arriving
  there, and how saturated it is: for tanh the fraction of outputs with |y| > 0.97 (where
  tanh's derivative 1 - y^2 is below 0.06, so almost no gradient passes); for ReLU and
  GELU the fraction of dead units, whose output or whose gradient is exactly 0 for every
  example in the batch (such a unit does not learn from this batch at all);
- for each attention module (anything that keeps `last_weights`, as MultiHeadAttention
  does), the entropy of its attention weights per head, over the batch's first 8
  sequences: near 0 a head looks at one key, near ln(T) it averages over all of them;
- for each parameter, the norm of its gradient and the update-to-data ratio
  log10(||w_after - w_before|| / ||w_before||): about -3 is the usual sign of a sane
  learning rate for that layer;
- the first non-finite value (NaN or inf): the step, the phase (forward, backward or the
  optimizer's update), the module and, in the forward pass, the op that made it.

It uses only the library's own hooks: forward hooks on the watched modules
(`Module.register_forward_hook`), gradient hooks on their outputs and inputs and on the
parameters (`Tensor.register_hook`). The modules' hooks are attached when a recorded step
begins and taken off when it ends; the parameters' stay from the first step to `close()`
and return at once in a step not recorded (see `every`). A model the monitor has closed
on runs exactly as if it had never been there.

    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> monitor = TrainingMonitor(model, opt)
    >>> for step in range(1, 4):
    ...     monitor.begin_step(step)
    ...     loss = (model(mt.randn(8, 4)) ** 2).mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     record = monitor.end_step(loss)
    >>> sorted(record.modules)
    ['0', '1', '2']
    >>> monitor.close()
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from microtensor import Tensor, nn
from microtensor.errors import op_error

from .labels import norm as float64_norm

TANH_SATURATED = 0.97     # |tanh| above this passes less than 6% of the gradient
HISTOGRAM_BINS = 40
ENTROPY_SEQUENCES = 8     # attention entropy is averaged over the batch's first 8 sequences
ACTIVATIONS = ("ReLU", "GELU", "Tanh", "Sigmoid")   # module class names watched by default


class Histogram(NamedTuple):
    """`counts` of values in the bins between consecutive `edges` (np.histogram's pair)."""
    counts: np.ndarray
    edges: np.ndarray


@dataclass
class ModuleStats:
    """What one module's output looked like in one step.

    `kind` is the op that made the output ("tanh", "relu", "gelu", "linear", ...).
    `saturated` is for tanh the fraction of outputs with |y| > 0.97, for ReLU and GELU the
    fraction of dead units (`dead_output`: output exactly 0 across the batch, or
    `dead_gradient`: gradient at the output exactly 0 across the batch, so the loss does
    not depend on the unit); None otherwise.
    `grad_rms` is the root mean square of the gradient arriving at the output (None
    until a backward pass reaches it): a gradient's mean over a layer is all but 0, so
    this is its spread, from one pass over it instead of two. A unit is a position on
    the last axis.
    """
    kind: str
    mean: float
    std: float
    saturated: float | None = None
    dead_output: float | None = None
    dead_gradient: float | None = None
    grad_rms: float | None = None


@dataclass
class StepRecord:
    """Everything recorded in one step: its number, the loss, per module `ModuleStats`,
    per attention module the mean entropy of each head's weights (nats, shape (h,), over
    the batch's first `ENTROPY_SEQUENCES` sequences), per
    parameter the gradient norm and log10 update-to-data ratio, and histograms of outputs
    and of the gradients arriving at them (only at the monitor's `histogram_steps`)."""
    step: int
    loss: float | None = None
    modules: dict[str, ModuleStats] = field(default_factory=dict)
    attention_entropy: dict[str, np.ndarray] = field(default_factory=dict)
    grad_norm: dict[str, float] = field(default_factory=dict)
    update_ratio: dict[str, float] = field(default_factory=dict)
    activation_histograms: dict[str, Histogram] = field(default_factory=dict)
    gradient_histograms: dict[str, Histogram] = field(default_factory=dict)


@dataclass
class NonFinite:
    """Where the first NaN or inf appeared: the `step`, the `phase` ("forward",
    "backward" or "update"), the `module` (dotted name; "" is the model itself, None if
    unknown), the `op` that made it (forward pass only; None when it is not known),
    `value` ("nan" or "inf") and a sentence for people (`str()`)."""
    step: int
    phase: str
    module: str | None
    op: str | None
    value: str
    detail: str

    def __str__(self):
        return f"step {self.step}: {self.detail}"


def default_watched(model: nn.Module) -> list[str]:
    """The modules a monitor watches unless told otherwise, as dotted names: the layers
    (the items of every ModuleList and Sequential: a network's layers, a Transformer's
    blocks) and the activation functions (ReLU, GELU, Tanh, Sigmoid, by class name).

    Not the Linear layers inside attention or the LayerNorms: a forward hook on those
    would keep the fast forms from fusing them (`microtensor.nn.watched`), and the monitor
    must not change how the model runs.

        >>> default_watched(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
        ['0', '1']
    """
    in_a_list = {id(child) for module in model.modules() if isinstance(module, nn.ModuleList)
                 for child in module}
    return [name for name, module in model.named_modules()
            if name and (id(module) in in_a_list or type(module).__name__ in ACTIVATIONS)]


class TrainingMonitor:
    """Records, for each recorded step, module, attention, parameter and non-finite
    statistics of `model` while `optimizer` trains it (see the module docstring).

    Call `begin_step(step)` before the forward pass and `end_step(loss)` after the
    optimizer's step; `history` holds a `StepRecord` per recorded step, `non_finite` the
    first NaN or inf (a `NonFinite`, or None). `report()` draws it all as an HTML page.

    `modules`: dotted names of the modules to watch (default `default_watched(model)`).
    `every`: record steps 1, 1 + every, 1 + 2 every, ... (the others cost nothing).
    `histogram_steps`: steps at which histograms are kept (default 1, 10, 100, 1000, ...).
    Without an optimizer, every parameter of the model is followed.
    """

    def __init__(self, model: nn.Module, optimizer=None, *, modules: Iterable[str] | None = None,
                 every: int = 1, histogram_steps: Iterable[int] | None = None):
        if not isinstance(model, nn.Module):
            raise op_error("TrainingMonitor", f"expected a Module, got {type(model).__name__}",
                           TypeError)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise op_error("TrainingMonitor", f"every must be a whole number >= 1, got "
                           f"{every!r}")
        self.model, self.optimizer, self.every = model, optimizer, every
        by_name = dict(model.named_modules())
        names = default_watched(model) if modules is None else list(modules)
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise op_error("TrainingMonitor", f"the model has no module named {unknown}",
                           fix=f"choose among {list(by_name)[:12]}")
        self.watched = [(name, by_name[name]) for name in names]
        self.attention = [(name, module) for name, module in by_name.items()
                          if hasattr(module, "last_weights")]
        self.module_names = {id(module): name for name, module in by_name.items()}
        param_names = {id(param): name for name, param in model.named_parameters()}
        params = list(optimizer.params if optimizer is not None else model.parameters())
        self.parameters = [(param_names.get(id(param), f"param{i}"), param)
                           for i, param in enumerate(params)]
        self.parameter_names = {id(param): name for name, param in self.parameters}
        # A range stays a range: `in` on it is arithmetic, so range(1, 10**9) costs nothing.
        self.histogram_steps = (histogram_steps if histogram_steps is None
                                or isinstance(histogram_steps, range)
                                else {int(step) for step in histogram_steps})
        self.history: list[StepRecord] = []
        self.non_finite: NonFinite | None = None
        self._record: StepRecord | None = None
        self._last_step = 0
        self._snapshot = ParameterSnapshot([param for _, param in self.parameters])
        self._handles = []              # this step's hooks
        self._parameter_handles = None  # the parameters' hooks, from the first step to close()

    # ------------------------------------------------------------------ steps
    def begin_step(self, step: int | None = None) -> None:
        """Start step `step` (default: one after the last): if it is one to record,
        attach the hooks and remember the parameters' values."""
        if self._record is not None:
            self.end_step()      # the previous step was never ended: keep what it saw
        step = self._last_step + 1 if step is None else int(step)
        self._last_step = step
        if self._parameter_handles is None:
            # Attached once, not each step: a hook costs microtensor a few microseconds to
            # register, and these return at once in a step not recorded.
            self._parameter_handles = [param.register_hook(self._parameter_hook(name, param))
                                       for name, param in self.parameters
                                       if param.requires_grad]
        if (step - 1) % self.every:
            return
        self._record = StepRecord(step)
        self._keep_histograms = (step in self.histogram_steps if self.histogram_steps
                                 is not None else _is_power_of_ten(step))
        self._weights_before = {name: module.last_weights for name, module in self.attention}
        self._snapshot.take()
        self._consumer = {}   # id(tensor) -> the watched module that took it as input
        self._outputs = set()  # ids of the watched modules' outputs in this step
        for name, module in self.watched:
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))

    def end_step(self, loss=None) -> StepRecord | None:
        """Finish the step: take the hooks off and record the loss, the attention
        entropies, the gradient norms and the update-to-data ratios (so call it after the
        optimizer's step). Returns the step's `StepRecord` (None for a step not recorded)."""
        record = self._record
        if record is None:
            return None
        self._detach()
        self._record = None
        if loss is not None:
            record.loss = float(loss.item() if isinstance(loss, Tensor) else loss)
            if not math.isfinite(record.loss) and isinstance(loss, Tensor):
                self._found_in_forward(record.step, None, loss)
        for name, module in self.attention:
            weights = module.last_weights
            if weights is not None and weights is not self._weights_before[name]:
                # the batch's first sequences: a mean over hundreds of query rows, at a
                # cost that does not grow with the batch
                record.attention_entropy[name] = attention_entropy(
                    weights.data[:ENTROPY_SEQUENCES])
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is measured here
            self._parameter_measures(record)
        self._consumer = self._outputs = None
        self.history.append(record)
        return record

    def _parameter_measures(self, record: StepRecord) -> None:
        updates = self._snapshot.updates()
        for (name, param), (size, change) in zip(self.parameters, updates):
            grad_norm = record.grad_norm.get(name)
            if grad_norm is not None and not math.isfinite(grad_norm):
                self._found(record.step, "backward", self._owner(name), None, grad_norm,
                            f"the gradient of parameter {name} is non-finite")
            record.update_ratio[name] = log_ratio(change, size)
            if not math.isfinite(change) and not np.isfinite(param.data).all():
                self._found(record.step, "update", self._owner(name), None, param.data,
                            f"the optimizer's update made parameter {name} non-finite")

    def close(self) -> None:
        """Take every hook off (ending a step still open); the model then runs as if
        the monitor had never been attached. Also what leaving a `with` block does."""
        if self._record is not None:
            self.end_step()
        self._detach()
        for handle in self._parameter_handles or ():
            handle.remove()
        self._parameter_handles = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------------------ hooks
    def _forward_hook(self, name: str):
        def hook(module, args, output):
            self._saw_output(name, module, args, output)
        return hook

    def _saw_output(self, name, module, args, output) -> None:
        record = self._record
        if record is None or not isinstance(output, Tensor) or output.dtype.kind != "f":
            return
        y = output.data
        summary = summarize(y)
        stats = ModuleStats(_kind(module, output), summary.mean, summary.std)
        record.modules[name] = stats
        if not summary.finite:
            self._found_in_forward(record.step, name, output)
            return
        if stats.kind == "tanh":
            stats.saturated = float(np.mean(np.abs(y) > TANH_SATURATED))
        zero_units = None
        if stats.kind in ("relu", "gelu"):
            zero_units = summary.zero_units
            stats.dead_output = stats.saturated = float(zero_units.mean())
        if self._keep_histograms:
            record.activation_histograms[name] = histogram(y)
        if output.requires_grad:
            self._outputs.add(id(output))
            self._handles.append(output.register_hook(
                self._output_grad_hook(name, stats, id(output), zero_units)))
        x = args[0] if args else None
        if isinstance(x, Tensor) and x.requires_grad:
            self._consumer[id(x)] = name
            # The gradient at a watched module's output is looked at there already (and
            # its hook names this module if it is not finite); others need a look.
            if id(x) not in self._outputs:
                self._handles.append(x.register_hook(self._input_grad_hook(name)))

    def _output_grad_hook(self, name: str, stats: ModuleStats, output_id: int, zero_units):
        def hook(grad):
            summary = summarize(grad, with_mean=False)
            stats.grad_rms = summary.rms
            if zero_units is not None and summary.finite:
                stats.dead_gradient = float(summary.zero_units.mean())
                stats.saturated = float((zero_units | summary.zero_units).mean())
            if not summary.finite:
                # The watched module that read this output made it, in its backward pass;
                # with none, it came from what follows this module.
                consumer = self._consumer.get(output_id)
                if consumer is not None:
                    self._backward_made_non_finite(consumer, grad)
                elif self._record is not None:
                    self._found(self._record.step, "backward", name, None, grad,
                                f"the gradient arriving at the output of {name} is "
                                f"non-finite (made by what comes after it)")
            elif self._keep_histograms and self._record is not None:
                self._record.gradient_histograms[name] = histogram(grad)
        return hook

    def _input_grad_hook(self, name: str):
        def hook(grad):
            if not summarize(grad, with_mean=False).finite:
                self._backward_made_non_finite(name, grad)
        return hook

    def _backward_made_non_finite(self, name: str, grad) -> None:
        if self._record is not None:
            self._found(self._record.step, "backward", name, None, grad,
                        f"the backward pass of {name or 'the model'} sent a non-finite "
                        f"gradient to its input")

    def _parameter_hook(self, name: str, param: Tensor):
        def hook(grad):
            record = self._record
            if record is None:
                return
            # Measured now, while the gradient is fresh in the cache, and not kept: held
            # until the step ends, every gradient's memory would be new memory next step.
            # A second backward pass in the step (accumulation) adds to what .grad holds.
            if name in record.grad_norm and param.grad is not None:
                grad = param.grad + grad
            record.grad_norm[name] = norm(grad)
        return hook

    # ------------------------------------------------------------------ non-finite values
    def _found_in_forward(self, step: int, name: str | None, output: Tensor) -> None:
        """A forward output holds NaN or inf: follow it back through the graph to the op
        that made it from finite inputs, and name the module whose forward ran that op."""
        if self.non_finite is not None:
            return       # only the first is news; the walk below is not free
        node, made = origin(output)
        if node is not None:
            module = self.module_names.get(id(node.modules[-1])) if node.modules else ""
            where = f"in {module}" if module else "outside every module"
            detail = f"{node.name} {where} made {_kind_of(made)} in the forward pass"
            self._found(step, "forward", module, node.name, made, detail)
        else:
            what = self.parameter_names.get(id(made), "an input")
            self._found(step, "forward", name, None, made,
                        f"{what} was already non-finite when {name or 'the model'} read it")

    def _found(self, step, phase, module, op, array, detail) -> None:
        if self.non_finite is None:
            self.non_finite = NonFinite(step, phase, module, op, _kind_of(array), detail)

    def _owner(self, parameter_name: str) -> str:
        return parameter_name.rpartition(".")[0]

    # ------------------------------------------------------------------ summaries
    def layer_of(self, parameter_name: str) -> str:
        """The layer a parameter belongs to: the deepest watched module whose name
        prefixes it (`blocks.0.ffn.W_1.weight` -> `blocks.0`), else its first name part."""
        owners = [name for name, _ in self.watched if parameter_name.startswith(name + ".")]
        return max(owners, key=len) if owners else parameter_name.split(".")[0]

    def layer_grad_norms(self, record: StepRecord) -> dict[str, float]:
        """The gradient norm of each layer (`layer_of`) in `record`: the norm of all its
        parameters' gradients together, sqrt(sum of their squared norms)."""
        squares: dict[str, float] = {}
        for name, value in record.grad_norm.items():
            layer = self.layer_of(name)
            squares[layer] = squares.get(layer, 0.0) + value * value
        return {layer: math.sqrt(total) for layer, total in squares.items()}

    def report(self, title: str = "Training monitor"):
        """The recorded history drawn as a `viz.report.Report`: a self-contained HTML
        page (`save(path)`), shown inline in Jupyter."""
        from .report import monitor_report
        return monitor_report(self, title)

    def _repr_html_(self) -> str:
        return self.report()._repr_html_()


# ---------------------------------------------------------------------- measures
def attention_entropy(weights) -> np.ndarray:
    """Mean entropy (nats) of each head's attention rows: weights (B, h, Tq, Tk) -> (h,).
    H = -sum_k w_k ln w_k per query row, 0 ln 0 counted as 0; rows with no key left
    (all weights 0, as for a fully masked query) are left out of the mean.

        >>> attention_entropy(np.full((1, 2, 3, 4), 0.25)).round(4)     # ln 4 for both heads
        array([1.3863, 1.3863])
    """
    weights = np.asarray(weights)
    # ln(w + tiny) is ln w for every weight above ~1e-38 and finite at w = 0, where the
    # product w ln(...) is then exactly 0: no masked log (twice as slow) needed.
    logs = weights + np.finfo(weights.dtype).tiny
    np.log(logs, out=logs)
    entropy = -np.einsum("...k,...k->...", weights, logs)       # (B, h, Tq)
    real_rows = np.einsum("...k->...", weights) > 0
    counted = real_rows.sum(axis=(0, 2))
    return (entropy * real_rows).sum(axis=(0, 2), dtype=np.float64) / np.maximum(counted, 1)


def update_ratio(before: np.ndarray, after: np.ndarray) -> float:
    """log10(||after - before|| / ||before||): how large one step's update is next to the
    values it changed. -inf for no change, NaN where `before` is all zeros (a bias at
    its first step) or anything is non-finite."""
    return log_ratio(norm(np.subtract(after, before)), norm(before))


def log_ratio(change: float, size: float) -> float:
    """log10(change / size) for `update_ratio`: NaN for a size of 0 or a non-finite
    number, -inf for no change."""
    if not (math.isfinite(size) and math.isfinite(change)) or size == 0:
        return math.nan
    return math.log10(change / size) if change > 0 else -math.inf


class ParameterSnapshot:
    """The parameters' values at the start of a step, side by side in one flat array:
    taking them, and measuring each parameter's update after the step, are then one
    NumPy call over all of them plus one dot product per parameter, rather than a copy,
    a subtraction and two norms per parameter (for a model of 69 parameters, Python's
    cost per call outweighed the arithmetic)."""

    def __init__(self, params: list):
        self.params = params
        self.layout = None

    def take(self) -> None:
        """Copy the parameters' values in (making room when their sizes changed)."""
        layout = [(param.size, param.dtype) for param in self.params]
        if layout != self.layout:
            self.layout = layout
            dtype = np.result_type(*[d for _, d in layout]) if layout else np.float32
            self.before = np.empty(sum(size for size, _ in layout), dtype)
            self.after = np.empty_like(self.before)
            ends = np.cumsum([size for size, _ in layout])
            self.parts = [self.before[end - size:end] for end, (size, _) in zip(ends, layout)]
        if self.params:
            np.concatenate([param.data.ravel() for param in self.params], out=self.before,
                           casting="same_kind")

    def updates(self) -> list[tuple[float, float]]:
        """(||before||, ||after - before||) of each parameter, now that it has stepped.
        (Uses up the snapshot: the differences are written over it.)"""
        if not self.params:
            return []
        sizes = [norm(part) for part in self.parts]
        np.concatenate([param.data.ravel() for param in self.params], out=self.after,
                       casting="same_kind")
        np.subtract(self.after, self.before, out=self.before)
        return list(zip(sizes, [norm(part) for part in self.parts]))


class Summary(NamedTuple):
    """What `summarize` finds: the `mean`, `std` and root mean square `rms`, which units
    (positions on the last axis) are 0 for every row (`zero_units`, bool), and whether
    all was `finite`."""
    mean: float | None
    std: float | None
    rms: float
    zero_units: np.ndarray
    finite: bool


def summarize(values: np.ndarray, with_mean: bool = True) -> Summary:
    """Mean, std, root mean square and zero units of `values`, from each unit's sum of
    squares (one pass) and each unit's sum (a second, skipped with `with_mean=False`,
    which leaves `mean` and `std` None), in the values' own dtype; the variance is
    mean(x^2) - mean^2. A unit is zero when its squares sum to 0: every value exactly 0
    (or, in float32, below 4e-23, whose square is 0). NaN or inf makes the sum of
    squares non-finite, so it is also the check for them; float32 sums that overflowed
    on finite values are redone in float64, and where the mean dwarfs the spread
    (mean(x^2) - mean^2 would cancel more than 6 bits) the std takes two passes.

        >>> summarize(np.array([[0.0, 1.0], [0.0, 3.0]]))
        Summary(mean=1.0, std=1.224744871391589, rms=1.5811388300841898, zero_units=array([ True, False]), finite=True)
    """
    rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
    count = max(rows.size, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->j", rows, rows)                  # (units,)
        mean_square = float(squares.sum(dtype=np.float64)) / count
        if not math.isfinite(mean_square):
            if not np.isfinite(rows).all():
                return Summary(math.nan, math.nan, math.nan, squares == 0, False)
            rows = rows.astype(np.float64)            # finite, but float32 sums overflowed
            squares = np.einsum("ij,ij->j", rows, rows)
            mean_square = float(squares.sum()) / count
        rms = math.sqrt(mean_square)
        if not with_mean:
            return Summary(None, None, rms, squares == 0, True)
        sums = np.ones(len(rows), rows.dtype) @ rows     # (units,): BLAS, faster than sum
        mean = float(sums.sum(dtype=np.float64)) / count
    variance = mean_square - mean * mean
    std = math.sqrt(variance) if variance >= mean_square / 64 else float(rows.std())
    return Summary(mean, std, rms, squares == 0, True)


def norm(values: np.ndarray) -> float:
    """The Euclidean norm, sqrt(x . x) in one BLAS dot in the values' own dtype, again in
    float64 (`labels.norm`) if the squares overflowed it (the monitor silences NumPy's
    overflow warning around its calls)."""
    flat = values.ravel()
    squares = float(np.dot(flat, flat))
    return math.sqrt(squares) if math.isfinite(squares) else float64_norm(values)


def histogram(values, bins: int = HISTOGRAM_BINS) -> Histogram:
    """`bins` equal bins between the smallest and the largest of `values`."""
    counts, edges = np.histogram(np.asarray(values).ravel(), bins=bins)
    return Histogram(counts, edges)


def origin(tensor: Tensor):
    """(node, tensor it made) for the op where `tensor`'s NaN or inf first appeared: follow
    inputs that hold NaN or inf back through the graph until an op's tensor inputs are
    all finite. That op made them, unless it was handed them (a -inf fill value, as an
    attention mask's `masked_fill`, or a constant array): then the op after it, which
    turned the intended infs into the trouble, is named, as `detect_anomaly` would.
    (None, leaf) when a leaf (a parameter, an input) already held them."""
    after = None
    while tensor.op is not None:
        node = tensor.op
        carried = next((x for x in node.inputs if isinstance(x, Tensor)
                        and x.dtype.kind == "f" and not np.isfinite(x.data).all()), None)
        if carried is None:
            handed = [x for x in node.inputs if not isinstance(x, Tensor)]
            handed += list(node.config.values())
            if after is not None and _nonfinite_among(handed):
                return after
            return node, tensor
        after, tensor = (node, tensor), carried
    return None, tensor


def _nonfinite_among(values) -> bool:
    for value in values:
        is_float = isinstance(value, (float, np.floating)) or (
            isinstance(value, np.ndarray) and value.dtype.kind == "f")
        if is_float and not np.isfinite(value).all():
            return True
    return False


def _kind_of(array) -> str:
    array = array.data if isinstance(array, Tensor) else array
    return "nan" if np.isnan(array).any() else "inf"


def _kind(module, output: Tensor) -> str:
    """The op that made a module's output, which says what the module is: "tanh",
    "relu", "gelu", "linear", ... (the class name when no graph was recorded)."""
    return output.op.name if output.op is not None else type(module).__name__.lower()


def _is_power_of_ten(step: int) -> bool:
    while step > 1 and step % 10 == 0:
        step //= 10
    return step == 1
