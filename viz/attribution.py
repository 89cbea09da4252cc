"""Which input tokens did a prediction use? Three answers, each from the gradient of one
number f: the log-probability (or the logit, or the probability) of a target token at
one output position, taken with respect to the input embeddings e_t (one per token):

- saliency: ‖∂f/∂e_t‖, the gradient's norm at each token (Simonyan et al. 2013): how
  sensitive f is to that token, whichever way;
- input × gradient: Σ_d e_td ∂f/∂e_td, the first-order (Taylor) estimate of what f loses
  when e_t is replaced by zeros;
- integrated gradients (Sundararajan et al. 2017): Σ_d (e − b)_td ∫₀¹ ∂f/∂e_td(b + α(e − b)) dα,
  the gradient averaged along the straight path from a baseline b (zero embeddings, or
  one given) to the input. The gradient theorem makes these sum to f(e) − f(b) exactly
  ("completeness"). A quadrature of finitely many steps sums to it only approximately, so
  every result reports its gap and checks it against a stated tolerance.

How the gradient reaches the embeddings: a forward hook on the model's token embedding
(`model.tok_embed`) replaces its output with a tensor made here, a leaf that requires
grad. The model's own forward runs the rest (positions, blocks, norm, head) and backward
stops at that leaf. A GPT-style model adds its positions after the hook, so the zero
baseline means "no token, the same positions". The leaf is float64 and NumPy promotes the
float32 parameters op by op, so the gap measures the integral, not float32 rounding.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=16, n_heads=2, n_layers=1, max_len=8))
    >>> ig = integrated_gradients(lm, [3, 1, 4, 1, 5], target=9)
    >>> ig.complete, len(ig.attributions)   # they sum to f(x) − f(baseline), one per token
    (True, 5)
    >>> print(ig.to_ansi())                 # coloured in a terminal  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import microtensor as mt
from microtensor.errors import check_count, op_error

from .engine import write_atomic
from .labels import VALUE_PALETTE, diverging, text_colour

SCORES = ("log_prob", "logit", "prob")
RULES = ("gauss_legendre", "riemann_left", "riemann_middle", "riemann_right",
         "riemann_trapezoid")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points α in [0, 1] and weights w such that Σ w g(α) ≈ ∫₀¹ g(α) dα, by `rule`:

    - "gauss_legendre": Legendre nodes; exact for polynomials of degree up to 2 steps − 1,
      so a smooth path converges in few steps;
    - "riemann_left", "riemann_middle", "riemann_right": `steps` equal slices, each read
      at its left end, middle or right end (Captum's names);
    - "riemann_trapezoid": `steps` points from 0 to 1, the two ends at half weight.

    The weights sum to 1, so a constant gradient (a linear model) is integrated exactly
    by every rule, at any number of steps.

    >>> alphas, weights = quadrature("riemann_middle", 4)
    >>> alphas, weights
    (array([0.125, 0.375, 0.625, 0.875]), array([0.25, 0.25, 0.25, 0.25]))
    >>> alphas, weights = quadrature("gauss_legendre", 2)
    >>> round(float(weights @ alphas ** 3), 12)   # ∫₀¹ α³ dα = 1/4, from two points
    0.25
    """
    if rule not in RULES:
        raise op_error("quadrature", f"unknown rule {rule!r}", fix=f"use one of {RULES}")
    check_count("quadrature", "steps", steps, smallest=2 if rule == "riemann_trapezoid" else 1)
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)        # on [-1, 1]
        return (nodes + 1) / 2, weights / 2
    if rule == "riemann_trapezoid":
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    start = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[rule]
    return (np.arange(steps) + start) / steps, np.full(steps, 1 / steps)


@dataclass(repr=False)
class Attribution:
    """How much each input token contributed to f, the `score` ("log_prob", "logit" or
    "prob") of `target` at output `position`, by `method`. `attributions` (T,) has one
    number per token: the sum over embedding dimensions of `per_dimension` (T, d) for
    input × gradient and integrated gradients, its norm for saliency.

    Integrated gradients also gives `score_at_baseline`, f(baseline), and `gap`:
    Σ attributions − (f(x) − f(baseline)), which is 0 for the exact integral. It is
    `complete` when |gap| <= tolerance · max(1, |f(x) − f(baseline)|): relative for
    large changes of f, absolute for small ones.

    Shown as tokens coloured by attribution (blue negative, red positive, white zero):
    inline in Jupyter, `save(path)` as a page, `to_ansi()` in a terminal.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=16, n_heads=2, n_layers=1))
    >>> result = saliency(lm, [3, 1, 4, 1, 5], tokens=list("abcde"))
    >>> result.ranked()[0] in range(5), result.save("saliency.html").name
    (True, 'saliency.html')
    """

    method: str
    tokens: list[str]
    ids: np.ndarray                # (T,)
    position: int                  # the output position explained, 0 <= position < T
    target: int
    target_token: str
    score: str
    score_at_input: float
    per_dimension: np.ndarray      # (T, d)
    attributions: np.ndarray       # (T,)
    score_at_baseline: float | None = None
    gap: float | None = None
    tolerance: float | None = None
    steps: int | None = None
    rule: str | None = None

    @property
    def complete(self) -> bool | None:
        """Whether integrated gradients met its completeness tolerance (None for the
        other methods, which promise no sum)."""
        if self.gap is None:
            return None
        change = abs(self.score_at_input - self.score_at_baseline)
        return abs(self.gap) <= self.tolerance * max(1.0, change)

    def ranked(self) -> list[int]:
        """Token positions by |attribution|, largest first."""
        return [int(i) for i in np.argsort(-np.abs(self.attributions), kind="stable")]

    def describe(self) -> str:
        """One line: the method, what was explained, and f at the input."""
        name = self.method.replace("_", " ")
        what = {"log_prob": "log p", "logit": "logit", "prob": "p"}[self.score]
        return (f"{name} of {what}({self.target_token!r}) at position {self.position} "
                f"(after {self.tokens[self.position]!r}): f(x) = {self.score_at_input:.6g}")

    def completeness(self) -> str | None:
        """The completeness check in words, or None for methods without one."""
        if self.gap is None:
            return None
        change = self.score_at_input - self.score_at_baseline
        verdict = "within" if self.complete else "OUTSIDE"
        return (f"Σ attributions = {self.attributions.sum():.6g}, f(x) − f(baseline) = "
                f"{change:.6g}: gap {self.gap:.2g}, {verdict} the tolerance "
                f"{self.tolerance:g} · max(1, |f(x) − f(baseline)|) "
                f"({self.steps} steps, {self.rule})")

    def __repr__(self) -> str:
        top = ", ".join(f"{self.tokens[i]!r} {self.attributions[i]:+.3g}"
                        for i in self.ranked()[:3])
        check = "" if self.gap is None else f"; gap {self.gap:.2g}"
        return f"<Attribution: {self.describe()}; largest {top}{check}>"

    # ---------------------------------------------------------------- pictures
    def _colours(self):
        """(background, text colour) for each token, on a scale set by the largest |a|."""
        scale = float(np.max(np.abs(self.attributions), initial=0.0))
        return [(diverging(a, scale, VALUE_PALETTE), text_colour(a, scale, False))
                for a in self.attributions]

    def to_html(self) -> str:
        """The tokens as coloured boxes (a fragment with inline styles and no script),
        each with its attribution in a tooltip; the explained position is outlined."""
        boxes = []
        for i, (token, (background, colour)) in enumerate(zip(self.tokens, self._colours())):
            outline = "outline: 2px solid #222;" if i == self.position else ""
            tip = f"position {i}, id {self.ids[i]}: {self.attributions[i]:+.6g}"
            boxes.append(f'<span class="token" data-position="{i}" title="{html.escape(tip)}" '
                         f'style="background: {background}; color: {colour}; {outline} '
                         f'padding: 2px 3px; margin: 1px; border-radius: 3px; '
                         f'white-space: pre">{html.escape(visible(token))}</span>')
        target = html.escape(visible(self.target_token))
        title = (f'<div class="attribution-title" style="color: #333">'
                 f'{html.escape(self.describe())}</div>')
        sequence = (f'<div class="attribution-tokens" style="font-family: monospace; '
                    f'font-size: 15px; line-height: 2.1">{"".join(boxes)} '
                    f'<span style="color: #555">→ {target}</span></div>')
        lines = [title, sequence]
        if self.gap is not None:
            mark = "✓" if self.complete else "✗"
            lines.append(f'<div class="completeness" style="color: '
                         f'{"#1b7837" if self.complete else "#b2182b"}">{mark} '
                         f'{html.escape(self.completeness())}</div>')
        lines.append('<div style="color: #777; font-size: 12px">blue: lowers f, red: raises '
                     'f, white: no effect (saliency has no sign); scaled by the largest '
                     '|attribution|</div>')
        return ('<div class="attribution" style="font-family: sans-serif; font-size: 13px">'
                + "\n".join(lines) + "</div>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, path) -> Path:
        """Write the attribution as a self-contained HTML page (nothing fetched); returns
        the path."""
        page = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<title>{html.escape(self.method.replace("_", " "))}</title></head>'
                f'<body style="margin: 24px">{self.to_html()}</body></html>\n')
        path = Path(path)
        write_atomic(path, page)
        return path

    def to_ansi(self) -> str:
        """The tokens on 24-bit ANSI colour backgrounds, for `print` in a terminal."""
        coloured = []
        for token, (background, colour) in zip(self.tokens, self._colours()):
            coloured.append(f"\x1b[48;2;{_rgb(background)}m\x1b[38;2;{_rgb(colour)}m"
                            f"{visible(token)}\x1b[0m")
        lines = [self.describe(), " ".join(coloured) + f"  → {visible(self.target_token)}"]
        if self.gap is not None:
            lines.append(self.completeness())
        return "\n".join(lines)


def _rgb(hex_colour: str) -> str:
    """'#1b7837' -> '27;120;55', as ANSI's 24-bit colour codes take it."""
    return ";".join(str(int(hex_colour[k:k + 2], 16)) for k in (1, 3, 5))


def visible(token: str) -> str:
    """A token as it can be seen: a space as ␣, a newline as ↵, a tab as ⇥, other
    control characters escaped, an empty token as ∅.

    >>> visible(" the\\n")
    '␣the↵'
    """
    if token == "":
        return "∅"
    marks = {" ": "␣", "\n": "↵", "\t": "⇥"}
    return "".join(marks.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in token)


# ------------------------------------------------------------------ the methods
def saliency(model, ids, target: int | None = None, position: int = -1, *,
             score: str = "log_prob", tokens=None, embedding=None) -> Attribution:
    """The gradient's norm at each input embedding: ‖∂f/∂e_t‖₂, where f is the `score`
    of `target` at output `position` (default: the last position, and the token the
    model ranks first there). `ids` is one sequence (T,) or (1, T); `tokens` a list of
    strings (one per id) or a tokenizer (anything with `decode`); `embedding` the module
    whose output is the input embeddings (default `model.tok_embed`).

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.llama(vocab=16, d_model=16, n_heads=2, n_layers=1))
    >>> result = saliency(lm, [3, 1, 4, 1, 5], position=2)
    >>> result.attributions[3:].tolist()     # causal: later tokens cannot matter
    [0.0, 0.0]
    """
    problem = _Problem(model, ids, target, position, score, tokens, embedding, "saliency")
    (value,), (grad,) = problem.evaluate(problem.inputs[None])
    return problem.result("saliency", value, grad, np.linalg.norm(grad, axis=-1))


def input_x_gradient(model, ids, target: int | None = None, position: int = -1, *,
                     score: str = "log_prob", tokens=None, embedding=None) -> Attribution:
    """Σ_d e_td ∂f/∂e_td for each token t: the gradient times the input, summed over the
    embedding's dimensions. Arguments as in `saliency`.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=16, n_heads=2, n_layers=1))
    >>> input_x_gradient(lm, [3, 1, 4], target=2).attributions.shape
    (3,)
    """
    problem = _Problem(model, ids, target, position, score, tokens, embedding,
                       "input_x_gradient")
    (value,), (grad,) = problem.evaluate(problem.inputs[None])
    per_dimension = problem.inputs * grad
    return problem.result("input_x_gradient", value, per_dimension, per_dimension.sum(axis=-1))


def integrated_gradients(model, ids, target: int | None = None, position: int = -1, *,
                         baseline=None, steps: int = 32, rule: str = "gauss_legendre",
                         tolerance: float = 1e-3, score: str = "log_prob", tokens=None,
                         embedding=None, batch_size: int = 16) -> Attribution:
    """(e − b) times the gradient averaged along the straight path from the baseline b
    to the input embeddings e, by a `quadrature` of `steps` points (`rule`). `baseline`
    is None (zero embeddings) or an array of embeddings (T, d), for instance
    `model.tok_embed(pad_ids).data`. The path's points run through the model
    `batch_size` at a time. Other arguments as in `saliency`.

    The result checks its own completeness: its `gap` is Σ attributions − (f(e) − f(b)),
    and a gap beyond `tolerance` · max(1, |f(e) − f(b)|) warns (RuntimeWarning) that
    the integral needs more steps or a better baseline.

    The zero baseline has a trap: a model without biases that normalises by the RMS
    (Llama) maps zero embeddings to a uniform prediction, and jumps from it within the
    first thousandth of the path (RMSNorm divides by sqrt(mean(x²) + eps)); no quadrature
    of a few dozen points follows that, and the gap shows it. A token's embeddings as the
    baseline keep the path away from zero.

    >>> from transformer import DecoderLM, LMConfig
    >>> lm = DecoderLM(LMConfig.gpt2(vocab=16, d_model=16, n_heads=2, n_layers=1))
    >>> ig = integrated_gradients(lm, [3, 1, 4, 1], steps=8)
    >>> bool(abs(ig.attributions.sum() - (ig.score_at_input - ig.score_at_baseline)) < 1e-3)
    True
    """
    where = "integrated_gradients"
    problem = _Problem(model, ids, target, position, score, tokens, embedding, where)
    check_count(where, "batch_size", batch_size)
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise op_error(where, f"tolerance must be a number >= 0, got {tolerance!r}")
    inputs = problem.inputs                                         # (T, d)
    baseline = problem.baseline(baseline)
    at_input, at_baseline, mean_grad = _path_integral(problem, baseline, rule, steps,
                                                      batch_size)
    per_dimension = (inputs - baseline) * mean_grad
    attributions = per_dimension.sum(axis=-1)
    result = problem.result(where, at_input, per_dimension, attributions,
                            score_at_baseline=at_baseline, tolerance=float(tolerance),
                            gap=float(attributions.sum() - (at_input - at_baseline)),
                            steps=steps, rule=rule)
    if not result.complete:
        warnings.warn(f"integrated_gradients: {result.completeness()}; use more steps, "
                      "rule='gauss_legendre', or a baseline away from zero (e.g. "
                      "model.tok_embed(pad_ids).data): a model that normalises by the RMS "
                      "changes abruptly near zero embeddings", RuntimeWarning, stacklevel=2)
    return result


def _path_integral(problem, baseline: np.ndarray, rule: str, steps: int,
                   batch_size: int) -> tuple[float, float, np.ndarray]:
    """f at the input embeddings, f at the baseline, and the gradient averaged along the
    straight path between them (T, d), by the quadrature `rule` of `steps` points."""
    inputs = problem.inputs                                         # (T, d)
    alphas, weights = quadrature(rule, steps)
    path = baseline + alphas[:, None, None] * (inputs - baseline)   # (steps, T, d)
    # The two ends ride along with the path: f(e) and f(b) from the same float64 forward.
    ends_and_path = np.concatenate([inputs[None], baseline[None], path])
    values, grads = problem.evaluate(ends_and_path, batch_size)
    mean_grad = np.tensordot(weights, grads[2:], axes=1)            # (T, d)
    return float(values[0]), float(values[1]), mean_grad


class _Problem:
    """One attribution question, checked: the model, one sequence of ids, the output
    position and target token, what f is. `evaluate` gives f and its gradient at any
    batch of input embeddings."""

    def __init__(self, model, ids, target, position, score, tokens, embedding, where):
        self.model, self.where, self.score = model, where, score
        if score not in SCORES:
            raise op_error(where, f"unknown score {score!r}", fix=f"use one of {SCORES}")
        self.ids = one_sequence(where, ids)                         # (T,)
        length = len(self.ids)
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) \
                or not -length <= position < length:
            raise op_error(where, f"position {position!r} is not a position of the "
                           f"{length} tokens", fix=f"use 0..{length - 1}, or -1 for the last")
        self.position = int(position) % length
        self.embedding = embedding if embedding is not None else getattr(model, "tok_embed",
                                                                         None)
        if not isinstance(self.embedding, mt.nn.Module):
            raise op_error(where, f"{type(model).__name__} has no module `tok_embed`",
                           TypeError, "pass embedding=the module whose output is the input "
                           "embeddings")
        with mt.no_grad(), mt.dropout_off():
            embedded = self.embedding(self.ids[None])
            logits = np.asarray(model(self.ids[None]).data)         # (1, T, vocab)
        self.inputs = np.asarray(embedded.data, dtype=np.float64)[0]  # (T, d)
        vocab = logits.shape[-1]
        if target is None:
            target = int(logits[0, self.position].argmax())
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
                or not 0 <= target < vocab:
            raise op_error(where, f"target must be a token id in [0, {vocab}), got "
                           f"{target!r}", fix="or None for the model's top prediction")
        self.target = int(target)
        self.tokens = token_strings(tokens, self.ids, where)
        if hasattr(tokens, "decode"):
            self.target_token = token_strings(tokens, np.array([self.target]))[0]
        elif self.target in self.ids:   # a list of strings names the input's ids only
            self.target_token = self.tokens[list(self.ids).index(self.target)]
        else:
            self.target_token = str(self.target)

    def baseline(self, baseline) -> np.ndarray:
        if baseline is None:
            return np.zeros_like(self.inputs)
        array = np.asarray(getattr(baseline, "data", baseline), dtype=np.float64)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.shape != self.inputs.shape:
            raise op_error(self.where, f"baseline {array.shape} must have the shape of the "
                           f"input embeddings {self.inputs.shape} (T, d)",
                           fix="e.g. model.tok_embed(pad_ids).data, or None for zeros")
        if not np.isfinite(array).all():
            raise op_error(self.where, "the baseline holds NaN or inf")
        return array

    def evaluate(self, embeddings: np.ndarray, batch_size: int = 16):
        """f and ∂f/∂e at each of a batch of input embeddings (n, T, d): arrays (n,) and
        (n, T, d). The model's parameters are frozen meanwhile (their .grad untouched),
        dropout is off."""
        values, grads = [], []
        with _frozen(self.model), mt.dropout_off(), mt.enable_grad():
            for start in range(0, len(embeddings), batch_size):
                chunk = mt.tensor(embeddings[start:start + batch_size], requires_grad=True)
                f = self._score(chunk)                              # (n,)
                f.sum().backward()      # rows are independent: each gets its own gradient
                if chunk.grad is None:
                    raise op_error(self.where, "the score does not depend on the embeddings",
                                   RuntimeError, "pass embedding=the module that embeds "
                                   "the ids the model reads")
                values.append(f.data)
                grads.append(chunk.grad)
        return np.concatenate(values), np.concatenate(grads)

    def _score(self, chunk):
        """f for each row of `chunk` (n, T, d), the model's embeddings replaced by it."""
        calls = []

        def replace_output(module, args, output):
            if tuple(output.shape) != tuple(chunk.shape):
                raise op_error(self.where, f"the embedding's output {tuple(output.shape)} "
                               f"is not the (n, T, d) expected, {tuple(chunk.shape)}")
            calls.append(module)
            return chunk

        with self.embedding.register_forward_hook(replace_output):
            logits = self.model(np.repeat(self.ids[None], len(chunk), axis=0))
        if len(calls) != 1:
            raise op_error(self.where, f"the embedding ran {len(calls)} times in one "
                           "forward; attribution needs it to run once", RuntimeError)
        row = logits[:, self.position]                              # (n, vocab)
        if self.score == "log_prob":
            row = row.log_softmax(axis=-1)
        elif self.score == "prob":
            row = row.softmax(axis=-1)
        return row[:, self.target]

    def result(self, method, score_at_input, per_dimension, attributions,
               **check) -> Attribution:
        return Attribution(method, self.tokens, self.ids, self.position, self.target,
                           self.target_token, self.score, float(score_at_input),
                           per_dimension, attributions, **check)


@contextlib.contextmanager
def _frozen(model):
    """Backward reaches only the embeddings: no parameter's gradient is computed, and
    whatever .grad a training step left on them stays as it was."""
    thawed = [p for p in model.parameters() if p.requires_grad]
    for parameter in thawed:
        parameter.requires_grad = False
    try:
        yield
    finally:
        for parameter in thawed:
            parameter.requires_grad = True


def one_sequence(where: str, ids) -> np.ndarray:
    """`ids` as one sequence (T,) of integers, from (T,) or (1, T); refused otherwise,
    naming `where`."""
    array = np.asarray(getattr(ids, "data", ids))
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.dtype.kind not in "iu" or len(array) == 0:
        raise op_error(where, f"ids must be one non-empty sequence of integers, (T,) or "
                       f"(1, T); got dtype {array.dtype} with shape {array.shape}",
                       fix="attribute one sequence at a time")
    return array


def token_strings(tokens, ids: np.ndarray, where: str = "token_strings") -> list[str]:
    """One string per id: from a list of strings, from a tokenizer (anything with
    `decode`, called on each id alone), or the ids themselves as numbers.

    >>> token_strings(None, np.array([7, 8]))
    ['7', '8']
    """
    if tokens is None:
        return [str(int(i)) for i in ids]
    if hasattr(tokens, "decode"):
        return [str(tokens.decode([int(i)])) for i in ids]
    strings = [str(token) for token in tokens]
    if len(strings) != len(ids):
        raise op_error(where, f"{len(strings)} tokens given for {len(ids)} ids",
                       fix="give one string per id, or a tokenizer")
    return strings
