"""Every public name of microtensor (and, once switched on, transformer and viz) has a
docstring of at least one sentence: what `help()` and the API reference show.

What counts as public, for a package P:

- every name in `P.__all__`;
- every module under P whose dotted name has no part starting with "_" (found with
  `pkgutil.walk_packages`, `__main__` left out), and that module's public names: its
  `__all__` if it has one, else the names not starting with "_" that the module itself
  defines (a function or class whose `__module__` is that module; an imported name is
  checked where it is defined);
- for every public class, its public members: names not starting with "_", and the
  operator and protocol methods a user meets (`OPERATORS`: `t + u`, `t[i]`, `len(t)`,
  `layer(x)`, ...). A member may be documented on the class that defines it or on a
  base class in the same packages (as `help()` shows it); one that only `object` or the
  standard library documents (`__eq__` from `object`, `with_traceback` from
  `Exception`) is not ours, and is not checked.

Functions, classes, methods, properties and modules are checked; constants cannot carry
a docstring and are not, and `__init__` is described by its class's docstring. A name
reached twice (`mt.add` is `mt.ops.add`) is checked once, under its shortest public path.

A docstring counts when its first paragraph is a sentence: at least three words, ending
in ".", "!", "?" or ":" (an example follows), maybe inside a closing bracket or quote.
A copied source comment ("# ---- operators", which `help()` shows where a docstring is
missing) or the signature a dataclass writes for itself does not count.

`test_the_walk_finds_every_gap` runs the same walk over a small package written with one
gap of each kind, and checks that exactly those are found.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
import textwrap
import types

import pytest

PACKAGES = ("microtensor", "transformer", "viz")

OPERATORS = frozenset({
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__",
    "__rpow__", "__matmul__", "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__",
    "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__",
    "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
    "__getitem__", "__setitem__", "__len__", "__iter__", "__contains__", "__bool__",
    "__array__", "__call__",
})

SENTENCE_ENDS = (".", "!", "?", ":")


def public_modules(package: str) -> list[types.ModuleType]:
    """The package and every submodule with no private part in its dotted name."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        parts = info.name.split(".")
        if info.name.endswith("__main__") or any(p.startswith("_") for p in parts):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def module_public_names(module: types.ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
            and (inspect.isfunction(value) or inspect.isclass(value))]


def is_ours(obj, packages) -> bool:
    """Whether `obj` is defined in one of `packages` (top-level names)."""
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in packages


def class_members(cls: type, package: str) -> dict[str, tuple[type, object]]:
    """Public members of `cls` defined in `package` (on `cls` or a base class): name ->
    (the class defining it, the raw attribute). A member `cls` inherits from another
    package (a transformer module's `parameters`, from microtensor.nn.Module) is that
    package's to document."""
    members = {}
    for name in dir(cls):
        if name.startswith("_") and name not in OPERATORS:
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not is_ours(owner, (package,)):
            continue   # object's __eq__, Exception's with_traceback: not ours
        raw = vars(owner)[name]
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if inspect.isfunction(raw) and raw.__code__.co_filename.startswith("<"):
            continue   # written by a generator (a dataclass's __eq__), not by us
        if raw is None or not (inspect.isfunction(raw) or isinstance(raw, property)
                               or inspect.isclass(raw) or callable(raw)):
            continue   # a class attribute (a constant, `__hash__ = None`)
        members[name] = (owner, raw)
    return members


def docstring(obj, owner: type | None = None, name: str | None = None,
              packages=PACKAGES) -> str | None:
    """The docstring `help()` shows for `obj`: its own, or for a member of class `owner`
    without one, the same member's on a base class in `packages`. None when there is
    none of ours."""
    if inspect.isclass(obj):
        return vars(obj).get("__doc__")
    doc = getattr(obj, "__doc__", None)
    if doc or owner is None:
        return doc
    for base in owner.__mro__[1:]:
        if name in vars(base) and is_ours(base, packages):
            return getattr(vars(base)[name], "__doc__", None)
    return None


def problem(obj, doc: str | None) -> str | None:
    """Why `doc` does not count as a docstring of `obj`, or None if it does."""
    if not doc or not doc.strip():
        return "no docstring"
    text = inspect.cleandoc(doc)
    if text.startswith("#"):
        return f"a copied comment: {text.splitlines()[0]!r}"
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and text.startswith(
            obj.__name__ + "("):
        return "only the signature dataclass writes"
    first = " ".join(text.split("\n\n")[0].split())
    if len(first.split()) < 3 or not first.rstrip(")\"'`").endswith(SENTENCE_ENDS):
        return f"not a sentence: {first!r}"
    return None


def public_names(package: str) -> dict[str, tuple]:
    """Every public name of `package` (see the module docstring), by its dotted path:
    path -> (the object, the class it was reached on or None, its name there)."""
    found: dict[str, tuple] = {}
    seen: set[int] = set()

    def add(path, obj, owner=None, name=None):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        found[path] = (obj, owner, name)
        if inspect.isclass(obj):
            for member, (_, raw) in sorted(class_members(obj, package).items()):
                add(f"{path}.{member}", raw, obj, member)

    modules = public_modules(package)
    for module in sorted(modules, key=lambda m: m.__name__.count(".")):
        add(module.__name__, module)
        for name in module_public_names(module):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue   # a public submodule: walked on its own
            if callable(value) and is_ours(value, (package,)):
                add(f"{module.__name__}.{name}", value)
    return found


def defined_as(obj) -> str:
    """Where `obj` is defined: "microtensor.autograd._SetMode.__call__"."""
    obj = getattr(obj, "fget", obj)    # a property: its getter
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


def undocumented(package: str, packages=PACKAGES) -> dict[str, str]:
    """Public names of `package` without a docstring that counts: path -> why."""
    missing = {}
    for path, (obj, owner, name) in public_names(package).items():
        why = problem(obj, docstring(obj, owner, name, packages))
        if why:
            missing[path] = why
    return missing


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_have_docstrings(package):
    missing = undocumented(package)
    listing = "\n".join(f"  {path}: {why}" for path, why in sorted(missing.items()))
    assert not missing, f"{len(missing)} public names of {package} lack a docstring:\n{listing}"


def mentions(doc: str | None, text: str) -> bool:
    """Whether `doc` holds `text`, however either is wrapped or spaced."""
    return " ".join(text.split()) in " ".join((doc or "").split())


def primitive_ops() -> dict[str, object]:
    """The ops of microtensor.ops that are primitives (they carry a derivative `rule`)."""
    from microtensor import ops
    return {name: getattr(ops, name) for name in ops.__all__
            if getattr(getattr(ops, name), "rule", None)}


def test_tensor_methods_show_their_ops_rule():
    """A Tensor method or operator that calls a primitive says its derivative rule."""
    from microtensor import Tensor
    primitives = primitive_ops()
    missing = []
    for name, method in vars(Tensor).items():
        code = getattr(method, "__code__", None)
        called = [n for n in (code.co_names if code else ()) if n in primitives]
        if code and "ops" in code.co_names and len(called) == 1 and \
                not mentions(method.__doc__, primitives[called[0]].rule):
            missing.append(name)
    assert not missing, missing


def test_primitive_docstrings_show_their_rule():
    """help(mt.exp) shows the derivative rule, as help(mt.Tensor.exp) does."""
    missing = [name for name, op in primitive_ops().items()
               if not mentions(op.__doc__, op.rule)]
    assert not missing, missing


FIXTURE = '''
"""A package with one of each kind of gap."""
import dataclasses

__all__ = ["Child", "Documented", "GappyError", "Point", "Thing", "bare", "commented",
           "documented", "terse"]


def documented(x):
    """Return x doubled, as a learner would want to read."""
    return 2 * x


def bare(x):
    return x


# ---- a section comment, which help() shows where a docstring should be
def commented(x):
    return x


def terse(x):
    """Terse"""
    return x


class Documented:
    """A class whose members are all documented."""

    def method(self):
        """Do the documented thing."""

    def __add__(self, other):
        """Add two of them, elementwise."""


class Thing:
    """A class with gaps in its members."""

    def method(self):
        return 1

    # ---- operators
    def __add__(self, other): return self

    def __eq__(self, other): return True

    @property
    def size(self):
        return 0

    def _private(self):
        return 0


@dataclasses.dataclass
class Point:
    x: int


class Child(Documented):
    """A subclass: an override without a docstring shows its base's, as help() does."""

    def method(self):
        return 2


class GappyError(Exception):
    """An error: what it inherits from Exception is not this package's to document."""
'''


def test_the_walk_finds_every_gap(tmp_path, monkeypatch):
    """The check can fail: a package written with gaps has exactly those gaps found."""
    (tmp_path / "gappy").mkdir()
    (tmp_path / "gappy" / "__init__.py").write_text(textwrap.dedent(FIXTURE))
    (tmp_path / "gappy" / "helpers.py").write_text(
        '"""Helpers for everyone."""\n\ndef helper():\n    pass\n\n\ndef _hidden():\n    pass\n')
    (tmp_path / "gappy" / "_internal.py").write_text("def hidden():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        missing = undocumented("gappy", packages=("gappy",))
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "gappy"]:
            del sys.modules[name]
    assert sorted(missing) == [
        "gappy.Point", "gappy.Thing.__add__", "gappy.Thing.__eq__", "gappy.Thing.method",
        "gappy.Thing.size", "gappy.bare", "gappy.commented", "gappy.helpers.helper",
        "gappy.terse"], missing
    assert missing["gappy.Point"] == "only the signature dataclass writes"
    assert missing["gappy.terse"].startswith("not a sentence")
