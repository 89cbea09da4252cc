"""What every mapping checks before it builds a model from a stranger's directory.

A config.json value of the wrong type must never change what loads: the string "false"
is truthy, so `bool(config["tie_word_embeddings"])` would tie a head the file meant to
keep. So every value is read through a `ConfigReader`, which takes a size only as a
positive integer, a flag only as true or false, a rate or epsilon only as a finite number,
and names the file, the key and the value otherwise.

The weights are checked against the config from their headers (`tensor_infos`), before
a model of the sizes the config claims is allocated: a config.json with n_layer 10**9
beside a 2-layer model.safetensors is refused with both numbers, in microseconds. Then
each weight is read alone (`read_weight`): floating point only, and finite unless the
caller passes `allow_non_finite=True`.

    >>> read = ConfigReader({"n_embd": "768"}, "from_pretrained (gpt2)")
    >>> read.size("n_embd")
    Traceback (most recent call last):
    microtensor.errors.InvalidValue: from_pretrained (gpt2): config n_embd='768' must be a positive integer, not a str. Write it as a JSON number, e.g. 768
"""
from __future__ import annotations

import math
import re

import numpy as np

from microtensor.errors import op_error
from microtensor.safetensors_io import FLOAT_DTYPES, TensorInfo

MISSING = object()


class ConfigReader:
    """Typed reads of a config dict. `where` names the function in errors, `source` the
    file ("config" when the dict did not come from one); a missing required key raises
    `missing_kind`."""

    def __init__(self, config: dict, where: str, source: str = "config",
                 missing_kind: type = ValueError):
        self.config, self.where, self.source = config, where, source
        self.missing_kind = missing_kind

    def get(self, key: str, default=MISSING):
        """The config's value at `key`, else `default`; with no default, our error naming the
        key."""
        if key in self.config:
            return self.config[key]
        if default is MISSING:
            raise op_error(self.where, f"{self.source} has no {key!r}", self.missing_kind,
                           "pass the complete config.json that came with the weights")
        return default

    def refuse(self, key: str, value, why: str, fix: str | None = None,
               kind: type = ValueError):
        """Raise our error naming the file, the key, the value and why it cannot be used."""
        raise op_error(self.where, f"{self.source} {key}={value!r} {why}", kind, fix)

    def size(self, key: str, default=MISSING) -> int:
        """A positive integer (not a bool, which JSON would write as true)."""
        value = self.get(key, default)
        if type(value) is not int or value <= 0:
            self.refuse(key, value, "must be a positive integer" + _not_a(value, int),
                        f"write it as a JSON number, e.g. {_example(value, 768)}")
        return value

    def flag(self, key: str, default=MISSING) -> bool:
        """true or false: a string "false" would be truthy, so it is refused."""
        value = self.get(key, default)
        if type(value) is not bool:
            self.refuse(key, value, "must be true or false" + _not_a(value, bool),
                        "write it as a JSON boolean, without quotes")
        return value

    def number(self, key: str, default=MISSING, positive: bool = False,
               below: float | None = None) -> float:
        """A finite number (JSON's Infinity and NaN are refused), > 0 when `positive`,
        >= 0 and < `below` when `below` is given."""
        value = self.get(key, default)
        ok = type(value) in (int, float) and math.isfinite(value)
        if ok and positive:
            ok = value > 0
        if ok and below is not None:
            ok = 0 <= value < below
        if not ok:
            rule = ("a positive finite number" if positive else
                    f"a number in [0, {below})" if below is not None else "a finite number")
            self.refuse(key, value, f"must be {rule}" + _not_a(value, float),
                        "write it as a JSON number, e.g. "
                        f"{_example(value, 1e-5 if positive else 0.0)}")
        return float(value)

    def text(self, key: str, default=MISSING) -> str:
        """The value at `key`, which must be a string."""
        value = self.get(key, default)
        if not isinstance(value, str):
            self.refuse(key, value, "must be a string" + _not_a(value, str), kind=TypeError)
        return value

    def mapping(self, key: str) -> dict | None:
        """An object, or None when the key is absent or null."""
        value = self.get(key, None)
        if value is not None and not isinstance(value, dict):
            self.refuse(key, value, "must be an object or null" + _not_a(value, dict),
                        kind=TypeError)
        return value


def _not_a(value, wanted: type) -> str:
    """", not a str" when `value` is of another type than `wanted` (None says enough)."""
    if value is None or type(value) is wanted or (wanted is float and type(value) is int):
        return ""
    return f", not a {type(value).__name__}"


def _example(value, fallback) -> str:
    """A fix's example: the value as a number when it was one in quotes ("768")."""
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        return str(fallback)
    return str(int(number)) if number.is_integer() and isinstance(fallback, int) else str(number)


def layer_count(names, pattern: str) -> int:
    """How many layers a checkpoint's tensor names hold: distinct indices matching
    `pattern` (a regex with the index as its one group)."""
    matcher = re.compile(pattern)
    return len({match.group(1) for name in names if (match := matcher.match(name))})


def check_layer_count(where: str, source: str, key: str, n_layers: int, names,
                      pattern: str) -> None:
    """Refuse a config that claims more layers than the weights hold, before its
    per-layer tensor names are even listed (10**9 layers would take minutes to list)."""
    found = layer_count(names, pattern)
    if n_layers > found:
        raise op_error(where, f"{source} {key}={n_layers:,} but the weights hold "
                       f"{found} layer(s)", ValueError,
                       "check that config.json and the weights belong together")


def check_float_dtypes(where: str, infos: dict[str, TensorInfo], names) -> None:
    """Refuse weights stored as integers or booleans (I64, U8, BOOL): casting them to
    float would load numbers no training made."""
    wrong = [f"{name} ({infos[name].dtype})" for name in names
             if not infos[name].is_float]
    if wrong:
        files = sorted({infos[name].path for name in names if infos[name].path})
        raise op_error(where, f"{len(wrong)} weight(s) "
                       f"{'in ' + ', '.join(files) + ' ' if files else ''}are not floating "
                       f"point: {', '.join(wrong[:6])}", TypeError,
                       f"weights are stored as {', '.join(FLOAT_DTYPES)}; check that the "
                       "file holds a model's weights")


def read_weight(where: str, tensors, name: str, allow_non_finite: bool,
                out: np.ndarray | None = None) -> np.ndarray:
    """The array of weight `name`, refused when it holds NaN or infinity (a model with
    one NaN weight computes NaN logits, and greedy decoding then picks token 0 forever)
    unless `allow_non_finite`. With `out` (a parameter's array, of the weight's shape)
    the weight is read into it, from the file straight in when `tensors` is a
    LazyTensors: the model's memory, and no second copy."""
    if out is None:
        array = np.asarray(tensors[name])
    elif hasattr(tensors, "read_into"):
        array = tensors.read_into(name, out)
    else:
        array = out
        np.copyto(out, np.asarray(tensors[name]), casting="same_kind")
    if not allow_non_finite and array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = array.size - int(np.count_nonzero(finite))
            raise op_error(where, f"weight {name} holds {bad:,} NaN or infinite value(s) "
                           f"(of {array.size:,})", ValueError,
                           "the file is damaged or its training diverged; pass "
                           "allow_non_finite=True to load it anyway")
    return array
