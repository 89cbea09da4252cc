"""Every public op is tested five ways, and this file says which op misses which.

For each op of `microtensor.ops`, `microtensor.functional` and the Tensor methods that
have no function of their own:

  (a) its derivative rule is text: a primitive carries `op.rule`; a composed op is a graph
      of primitives only (each node of its output's graph carries a rule);
  (b) a hypothesis test in test_gradients*.py gradchecks it (float64, drawn shapes);
  (c) a test in test_torch_oracle.py compares it with PyTorch;
  (d) the fuzz table (test_fuzz.py, fuzz_more_ops.py) draws it into random programs;
  (e) a test of bad input (test_bad_input*.py, test_core_errors.py) holds its worded error.

(b), (c) and (e) are read from the tests' syntax trees: an op counts as tested when its
name (an attribute such as `mt.sin` or `x.sum`, a name, a string in a parametrize table,
or the operator that calls it, `a + b` for add) appears in a test of that kind, or in a
module-level table that the test reads. So an op added without tests fails here, by name.
The exceptions are listed below, each with its reason.
"""
import ast
import pathlib
import re

import numpy as np
import pytest
from test_fuzz import OPS as FUZZ_TABLE

import microtensor as mt
import microtensor.functional as F
from microtensor import ops

TESTS = pathlib.Path(__file__).parent

# Tensor methods with no function in microtensor.ops (each calls primitives).
TENSOR_ONLY = {"T", "transpose", "repeat", "view"}
PUBLIC_OPS = sorted(set(ops.__all__) | set(F.__all__) | TENSOR_ONLY)


def op_named(name):
    return getattr(ops, name, None) or getattr(F, name, None) or getattr(mt.Tensor, name)


# ---------------------------------------------------------------- (a) the rule as text
# A composed op, called the way a model calls it: its output's graph must hold primitives
# only. (An op missing here and carrying no rule fails test_every_op_has_its_rule_as_text.)
def x23():
    return mt.tensor(np.linspace(-1.5, 1.7, 6).reshape(2, 3), requires_grad=True)


COMPOSED = {
    "T": lambda: x23().T,
    "transpose": lambda: x23().transpose(0, 1),
    "repeat": lambda: x23().repeat(2, 1),
    "view": lambda: x23().view(3, 2),
    "celu": lambda: F.celu(x23(), 0.5),
    "chunk": lambda: mt.concat(x23().chunk(2, axis=1), axis=1),
    "cross_entropy": lambda: F.cross_entropy(x23(), np.array([0, 2]), label_smoothing=0.1,
                                             weight=np.array([1.0, 2.0, 0.5])),
    "cummax": lambda: mt.cummax(x23(), axis=1)[0],
    "cummin": lambda: mt.cummin(x23(), axis=1)[0],
    "dot": lambda: mt.dot(x23()[0], x23()[1]),
    "einsum": lambda: mt.einsum("ij,kj->ik", x23(), x23()),
    "flatten": lambda: x23().flatten(),
    "gather": lambda: mt.gather(x23(), 1, np.array([[0], [2]])),
    "gelu": lambda: F.gelu(x23()) + F.gelu(x23(), approximate="none"),
    "meshgrid": lambda: mt.meshgrid(x23()[0], x23()[1])[0],
    "mish": lambda: F.mish(x23()),
    "nll_loss": lambda: F.nll_loss(x23(), np.array([0, 2]), weight=np.array([1.0, 2.0, 0.5])),
    "quick_gelu": lambda: F.quick_gelu(x23()),
    "relu6": lambda: F.relu6(x23()),
    "scatter": lambda: x23().scatter(1, np.array([[0], [2]]), x23()[:, :1]),
    "scatter_add": lambda: x23().scatter_add(1, np.array([[0], [2]]), x23()[:, :1]),
    "scatter_reduce": lambda: x23().scatter_reduce(1, np.array([[0], [2]]), x23()[:, :1],
                                                   "amax"),
    "selu": lambda: F.selu(x23()),
    "softsign": lambda: F.softsign(x23()),
    "sort": lambda: x23().sort(1)[0],
    "split": lambda: x23().split(1, axis=0)[1],
    "squeeze": lambda: x23()[:1].squeeze(0),
    "std": lambda: x23().std(axis=1),
    "topk": lambda: x23().topk(2, 1)[0],
    "unflatten": lambda: x23().unflatten(1, (3, 1)),
    "unsqueeze": lambda: x23().unsqueeze(0),
}


def graph_nodes(out):
    seen, stack = set(), [out]
    while stack:
        t = stack.pop()
        if t.op is None or id(t.op) in seen:
            continue
        seen.add(id(t.op))
        yield t.op
        stack += [i for i in t.op.inputs if isinstance(i, mt.Tensor)]


@pytest.mark.parametrize("name", PUBLIC_OPS)
def test_every_op_has_its_rule_as_text(name):
    op = op_named(name)
    if isinstance(getattr(op, "rule", None), str):
        assert op.rule.strip(), f"{name}: an empty derivative rule"
        return
    assert name in COMPOSED, (
        f"{name} is neither a primitive (mt.primitive(name, rule=...)) nor in COMPOSED with "
        "a call whose graph shows it is made of primitives")
    nodes = list(graph_nodes(COMPOSED[name]()))
    assert nodes, f"{name}: the example call recorded no graph"
    for node in nodes:
        assert isinstance(node.rule, str) and node.rule.strip(), \
            f"{name} is made of {node.name}, which has no derivative rule"


def test_the_composed_table_names_only_composed_ops():
    stale = {n for n in COMPOSED if isinstance(getattr(op_named(n), "rule", None), str)}
    assert not stale, f"primitives now, remove from COMPOSED: {sorted(stale)}"


# ---------------------------------------------------------------- (b), (c), (e): the tests
OPERATORS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
             ast.MatMult: "matmul", ast.USub: "neg", ast.Invert: "bitwise_not",
             ast.Eq: "equal", ast.NotEq: "not_equal", ast.Lt: "less", ast.LtE: "less_equal",
             ast.Gt: "greater", ast.GtE: "greater_equal"}


def names_in(node):
    """Every op name `node` may call: attributes, names, whole strings, operators."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            found.add(n.attr)
        elif isinstance(n, ast.Name):
            found.add(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            found.add(n.value)
        elif isinstance(n, (ast.BinOp, ast.UnaryOp, ast.AugAssign)):
            found.add(OPERATORS.get(type(n.op)))
        elif isinstance(n, ast.Compare):
            found.update(OPERATORS.get(type(o)) for o in n.ops)
        elif isinstance(n, ast.Subscript):
            found.add("getitem")
        elif isinstance(n, ast.keyword) and n.arg == "approximate":
            found.add("gelu_exact")                  # gelu(approximate="none")
    if "gelu" in found:
        found.add("gelu_tanh")                       # gelu's default form
    return found


def functions_of(filename):
    """(test function, the op names it and the module tables it reads may call)."""
    tree = ast.parse((TESTS / filename).read_text())
    tables = {t.id: names_in(node.value) for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            found = names_in(node)
            for decorator in node.decorator_list:
                found |= names_in(decorator)
            for table in found & set(tables):
                found |= tables[table]
            yield node, found


def covered(filenames, kind):
    names = set()
    for filename in filenames:
        for test, found in functions_of(filename):
            if kind(test, found):
                names |= found
    return names


def gradchecks(test, found):
    decorators = set().union(*map(names_in, test.decorator_list)) if test.decorator_list else set()
    return "given" in decorators and bool({"check", "gradcheck"} & found)


def expects_an_error(test, found):
    return bool({"raises", "CASES"} & found)


GRADIENT_FILES = ["test_gradients.py", "test_gradients_more_ops.py", "test_ops_math.py",
                  "test_ops_structure.py", "test_ops_losses.py"]
ORACLE_FILES = ["test_torch_oracle.py"]
ERROR_FILES = ["test_bad_input.py", "test_bad_input_more_ops.py", "test_core_errors.py"]

# Ops with no gradient: integer or boolean results. Their values are compared with NumPy
# and PyTorch; that they carry no gradient is tested
# (test_gradients_more_ops.py::test_integer_and_boolean_results_carry_no_gradient).
NO_GRADIENT = {"argmax", "argmin", "argsort", "any", "all", "isnan", "isinf", "isfinite",
               "isclose", "equal", "not_equal", "less", "less_equal", "greater",
               "greater_equal", "bitwise_not", "one_hot"}
NOT_IN_ORACLE = {
    # Random masks: PyTorch's generator draws others. Its expectation and the p = 0 and
    # eval-mode identities are tested in test_gradients.py::test_dropout_gradient.
    "dropout",
}
NO_BAD_INPUT = {
    "T",   # takes no argument and fits every tensor: nothing to refuse
}


def missing(kind_names, exceptions=frozenset()):
    return [n for n in PUBLIC_OPS if n not in kind_names and n not in exceptions]


def test_every_differentiable_op_is_gradchecked_over_drawn_shapes():
    absent = missing(covered(GRADIENT_FILES, gradchecks), NO_GRADIENT)
    assert not absent, f"no hypothesis gradcheck in {GRADIENT_FILES} names: {absent}"


def test_every_op_is_compared_with_pytorch():
    absent = missing(covered(ORACLE_FILES, lambda test, found: True), NOT_IN_ORACLE)
    assert not absent, f"no test in {ORACLE_FILES} names: {absent}"


def test_every_op_has_a_worded_error_test():
    absent = missing(covered(ERROR_FILES, expects_an_error), NO_BAD_INPUT)
    assert not absent, f"no bad-input test in {ERROR_FILES} names: {absent}"


# ---------------------------------------------------------------- (d) the fuzz table
def test_every_op_is_in_the_fuzz_table():
    drawn = set()
    for key in FUZZ_TABLE:
        drawn |= set(re.findall(r"\w+", key))
    drawn.add("gelu_tanh" if "gelu" in drawn else "")     # mt.gelu is the tanh form
    absent = missing(drawn)
    assert not absent, f"not in the fuzz table (test_fuzz.py / fuzz_more_ops.py): {absent}"


def test_every_exception_names_a_public_op():
    for exceptions in (NO_GRADIENT, NOT_IN_ORACLE, NO_BAD_INPUT):
        assert exceptions <= set(PUBLIC_OPS), sorted(exceptions - set(PUBLIC_OPS))
