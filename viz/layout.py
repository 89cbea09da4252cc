"""Which drawn node stands for each tensor: names, modules, and folded modules.

`plan_layout` walks the graph once, with the one traversal (`topological_order`), and
records for every tensor its name and its module. Drawing, the stepper and the player all
read the same `Layout`, so a tensor called "t7" in the terminal is "t7" in the picture.

With `params=model`, nodes are grouped into one cluster per module path. Each op belongs
to the module whose `forward` made it: every node records the modules running when it
was made (`Module.__call__` keeps that stack), so nothing is guessed. A parameter belongs
to the module that owns it ("layers.0.attn.W_q.weight" to "layers.0.attn.W_q"). Ops made
outside every module (the loss, a user's own arithmetic) and tensors made by no op
(inputs, masks) belong to no module and are drawn outside every cluster. A residual add
sits in the block whose `forward` made it, so folded blocks read as a chain. With a
mapping name -> Tensor as `params`, tensors are named and no module is drawn.

Names: a parameter is named by its path; any other tensor inside a module by that module's
path plus its own `.name` ("blocks.0.self_attn.weights"), else by where it comes from: the
module's "output" when it leaves the module ("blocks.1.ffn output"), else the module path
plus the op that made it ("blocks.1.ffn.gelu"). A tensor made outside every module keeps
its `.name`, else is named by its op ("cross_entropy"); an input with no name is "t{k}",
the node's id.

Folding: `depth=k` draws modules k levels deep (a ModuleList or Sequential is no level) and
folds the next level into one box each; `expand=["blocks.0"]` keeps those modules, and all
inside them, open. Past `max_nodes` nodes, modules fold by default: the graph's title says so
and how to open them.

Every loop here runs over the graph's tensors or its module paths in forward order, never
over a set or a dict of strings: the same graph gives the same picture in every process.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from microtensor.autograd import BackwardStep, topological_order
from microtensor.errors import op_error
from microtensor.tensor import Tensor

DEFAULT_MAX_NODES = 150
CONTAINERS = ("ModuleList", "Sequential")


@dataclass
class Layout:
    """Which drawn node stands for each tensor and op, after folding modules.

    `order` is `topological_order(root, every_input=True)` (root first); tensor k is drawn
    as `t{k}` and the op that made it as `op{k}`, unless its module is folded, in which case
    both are drawn as that module's box `m{j}`, j its place in `folded`."""

    order: list
    index: dict                      # id(tensor) -> k
    names: dict                      # id(tensor) -> parameter name or tensor.name
    modules: dict                    # id(tensor) -> module path, "" for the root module, None
    folded: list = field(default_factory=list)   # module paths drawn as one box
    containers: set = field(default_factory=set)  # ModuleList/Sequential paths (no cluster)
    note: str = ""
    paths: list = field(default_factory=list)     # every module path, in forward order
    fold_by_module: dict = field(default_factory=dict)  # module path -> its box's path

    def fold(self, paths) -> None:
        """Draw the modules `paths` as one box each (outermost first)."""
        self.folded = list(paths)
        boxes = set(self.folded)
        self.fold_by_module = {}
        for path in self.paths:
            parts = path.split(".")
            outer = (".".join(parts[:n]) for n in range(1, len(parts) + 1))
            self.fold_by_module[path] = next((p for p in outer if p in boxes), None)
        self._box_number = {path: j for j, path in enumerate(self.folded)}

    def fold_of(self, k: int) -> str | None:
        """The folded module tensor k is drawn in, or None."""
        return self.fold_by_module.get(self.modules[id(self.order[k])])

    def cluster_parent(self, path: str) -> str:
        """The nearest enclosing module path that is drawn as a cluster ("" for none)."""
        parent = path.rpartition(".")[0]
        while parent and parent in self.containers:
            parent = parent.rpartition(".")[0]
        return parent

    def tensor_node(self, k: int) -> str:
        """The drawn node of tensor k: 't{k}', or the box 'm{j}' of the module folded around it."""
        fold = self.fold_of(k)
        return f"t{k}" if fold is None else f"m{self._box_number[fold]}"

    def op_node(self, k: int) -> str:
        """The drawn node of the op that made tensor k: 'op{k}', or its folded module's box."""
        fold = self.fold_of(k)
        return f"op{k}" if fold is None else f"m{self._box_number[fold]}"

    def step_node(self, step: BackwardStep) -> str:
        """The node a backward step acts at: the op for op outputs, the tensor for leaves."""
        k = self.index[id(step.tensor)]
        return self.tensor_node(k) if step.node is None else self.op_node(k)

    def label_of(self, tensor) -> str:
        """A tensor's name for text: its parameter name, its .name, else 't{k}' (the
        unnamed tensor's header in the drawing shows the same 't{k}')."""
        name = self.names.get(id(tensor))
        return name if name else f"t{self.index[id(tensor)]}"

    def module_depth(self, path: str) -> int:
        """How many modules deep `path` is: "blocks.0.ffn" is 2 (`blocks` is a list)."""
        parts = path.split(".")
        return sum(".".join(parts[:n]) not in self.containers for n in range(1, len(parts) + 1))

    def describe(self, tensor) -> str:
        """Like `label_of`, saying which op made an unnamed tensor: 't3 (softmax output)'."""
        if self.names.get(id(tensor)) or tensor.op is None:
            return self.label_of(tensor)
        return f"{self.label_of(tensor)} ({tensor.op.name} output)"


def named_tensors(params) -> dict:
    """{id(tensor): name} from a Module (named_parameters) or a mapping name -> Tensor."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        return {id(p): name for name, p in params.named_parameters()}
    if isinstance(params, Mapping):
        return {id(t): name for name, t in params.items()}
    raise op_error("draw", f"params must be a Module or a mapping name -> Tensor, got "
                   f"{type(params).__name__}", TypeError, "pass params=model")


def _display_name(path: str | None, own_name: str | None) -> str | None:
    """A parameter's path, or its own .name when that extends the path with a note
    (a loaded checkpoint's name: 'norm.weight (GPT-2: ln_f.weight)')."""
    if path and own_name and own_name.startswith(path + " "):
        return own_name
    return path or own_name


def _module_of_name(name: str) -> str:
    return name.rpartition(".")[0]


def _fold_units(params) -> list:
    """Module paths that collapse=True folds: the root's children, with containers
    (ModuleList, Sequential) replaced by their children, so a stack folds block by block."""
    units, stack = [], [(f"{name}", child) for name, child in params._modules.items()]
    while stack:
        path, module = stack.pop(0)
        if type(module).__name__ in CONTAINERS:
            stack[0:0] = [(f"{path}.{name}", child) for name, child in module._modules.items()]
        else:
            units.append(path)
    return units


def _where_from(layout: Layout) -> None:
    """Name the unnamed tensors inside modules by where they come from (see the module
    docstring), numbering repeats in forward order: "blocks.0.self_attn.matmul 2". An
    op between modules (a residual add) is named after the latest module it reads from:
    "add after blocks.0.self_attn"."""
    order, names, modules, index = layout.order, layout.names, layout.modules, layout.index
    users = {}
    for tensor in order:
        for inp in (tensor.op.inputs if tensor.op else ()):
            if isinstance(inp, Tensor):
                users.setdefault(id(inp), []).append(modules[id(tensor)])
    proposed = {}
    for tensor in reversed(order):                  # forward order
        module = modules[id(tensor)]
        if tensor.op is not None and not names[id(tensor)] and module is not None and (
                not module or module in layout.containers):
            fed = sorted((index[id(t)], modules[id(t)]) for t in tensor.op.inputs
                         if isinstance(t, Tensor) and modules[id(t)])
            if fed:
                proposed[id(tensor)] = f"{tensor.op.name} after {fed[0][1]}"
            continue
        if tensor.op is None:
            continue
        if module is None:              # made outside every module: the loss, say
            if not names[id(tensor)]:
                proposed[id(tensor)] = tensor.op.name
            continue
        if not module:
            continue
        own = names[id(tensor)]
        if own:
            names[id(tensor)] = own if own.startswith(module + ".") else f"{module}.{own}"
            continue
        leaves = any(user is None or not (user + ".").startswith(module + ".")
                     for user in users.get(id(tensor), [None]))
        proposed[id(tensor)] = f"{module} output" if leaves else f"{module}.{tensor.op.name}"
    taken = {n for n in names.values() if n}
    counts = {}
    for name in proposed.values():
        counts[name] = counts.get(name, 0) + 1
    seen = {}
    for key, name in proposed.items():
        if counts[name] > 1 or name in taken:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} {seen[name]}"
        names[key] = name


def _within(module: str | None, path: str) -> bool:
    return module is not None and (module == path or module.startswith(path + "."))


def _module_paths(order: list, modules: dict) -> list:
    """Every module path holding a tensor and each of its ancestors, in forward order."""
    paths = {}
    for tensor in reversed(order):
        module = modules[id(tensor)]
        if module:
            parts = module.split(".")
            paths.update((".".join(parts[:n]), None) for n in range(1, len(parts) + 1))
    return list(paths)


def _folds_at_depth(layout: Layout, depth: int, expand: list) -> list:
    """The modules one level below `depth` (outermost first), except those inside or
    around an `expand` path, which stay open."""
    folded, inside_fold = [], set()
    for path in layout.paths:                   # parents come before their children
        if path.rpartition(".")[0] in inside_fold:
            inside_fold.add(path)
            continue
        if path in layout.containers or any(_within(path, e) or _within(e, path)
                                            for e in expand):
            continue
        if layout.module_depth(path) > depth:
            folded.append(path)
            inside_fold.add(path)
    return folded


def _module_of_op(modules: tuple, module_paths: dict, known: dict) -> str | None:
    """The path of the innermost module of `modules` (a node's record of the modules
    running when it was made) that the drawing knows; None outside them all."""
    key = id(modules)
    if key not in known:        # every op made in one module call shares one tuple
        known[key] = next((module_paths[id(m)] for m in reversed(modules)
                           if id(m) in module_paths), None)
    return known[key]


def _check_paths(name: str, paths, every_path: set) -> None:
    if isinstance(paths, str):
        paths = [paths]
    unknown = [c for c in paths if c not in every_path] if isinstance(
        paths, (list, tuple)) else []
    if unknown:
        raise op_error("draw", f"{name}={unknown} names no module of this graph; "
                       f"modules here: {sorted(every_path) or 'none'}", ValueError,
                       "pass params=model and dotted module paths such as 'layers.0'")


def plan_layout(root: Tensor, params=None, collapse=None,
                max_nodes: int = DEFAULT_MAX_NODES, depth: int | None = None,
                expand=None) -> Layout:
    """Walk the graph once (`topological_order`), name tensors, assign modules, fold."""
    order = topological_order(root, every_input=True)
    index = {id(t): k for k, t in enumerate(order)}
    param_names = named_tensors(params)
    names = {id(t): _display_name(param_names.get(id(t)), t.name) for t in order}
    is_model = hasattr(params, "named_modules")
    module_paths = {id(m): path for path, m in params.named_modules()} if is_model else {}
    modules, known = {}, {}
    for tensor in order:
        if tensor.op is not None:
            modules[id(tensor)] = _module_of_op(tensor.op.modules, module_paths, known)
        elif is_model and id(tensor) in param_names:
            modules[id(tensor)] = _module_of_name(param_names[id(tensor)])
        else:
            modules[id(tensor)] = None

    layout = Layout(order, index, names, modules, paths=_module_paths(order, modules))
    if is_model:
        # A stack of blocks gets no cluster of its own: it is a list, not a step.
        layout.containers = {path for path, module in params.named_modules()
                             if path and type(module).__name__ in CONTAINERS}
    if params is not None:
        _where_from(layout)
    every_path = set(layout.paths)
    expand = [expand] if isinstance(expand, str) else list(expand or ())
    _check_paths("expand", expand, every_path)
    _check_paths("collapse", collapse, every_path)
    layout.fold(_choose_folds(layout, params, collapse, max_nodes, depth, expand))
    return layout


def _choose_folds(layout: Layout, params, collapse, max_nodes: int, depth: int | None,
                  expand: list) -> list:
    """The module paths to fold, from depth=/expand=, collapse=, or the graph's size (past
    `max_nodes` a model folds block by block, and the layout's note says how to open)."""
    if depth is not None or expand:
        if collapse not in (None, False):
            raise op_error("draw", f"collapse={collapse!r} with depth={depth} or expand="
                           f"{expand}: choose one way to fold", ValueError,
                           "pass depth=/expand= (or collapse=) alone")
        return _folds_at_depth(layout, 0 if depth is None else depth, expand) \
            if collapse is None else []
    is_model = hasattr(params, "named_modules")
    n_nodes = len(layout.order) + sum(t.op is not None for t in layout.order)
    every_path = set(layout.paths)
    units = [u for u in _fold_units(params) if u in every_path] if is_model else []
    if collapse is None and n_nodes > max_nodes:
        if is_model:
            collapse = True
            # Suggest opening a block of a stack ("blocks.0") when there is one.
            first = next((u for u in units if u.rpartition(".")[0] in layout.containers),
                         units[0] if units else "")
            layout.note = (f"{n_nodes} nodes > max_nodes={max_nodes}: modules folded into "
                           f"boxes (open one with expand=[{first!r}], a level with depth=1, "
                           f"all with collapse=False)")
        else:
            layout.note = (f"{n_nodes} nodes > max_nodes={max_nodes}: pass params=model "
                           f"to fold modules into boxes")
    if collapse is True:
        return units
    if isinstance(collapse, str):
        return [collapse]
    if isinstance(collapse, (list, tuple)):
        return list(collapse)
    return []
