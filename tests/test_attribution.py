"""Token attribution that cannot be right by luck: integrated gradients is complete to
float64 rounding on a linear model (whose attributions are known in closed form) and
within its stated tolerance on GPT-2 and Llama models loaded from Hugging Face
directories; a model whose output at p reads only input position source[p] (built with
an attention mask) ranks that position first by every method, the others exactly zero;
the gradient at the embeddings matches central differences; f(x) and f(baseline) match
the model's own logits computed without the hook."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microtensor as mt
from microtensor import nn
from transformer import DecoderLM, LMConfig, MultiHeadAttention
from viz.attribution import (
    RULES,
    Attribution,
    input_x_gradient,
    integrated_gradients,
    quadrature,
    saliency,
    visible,
)

METHODS = [saliency, input_x_gradient, integrated_gradients]


# ------------------------------------------------------------------ quadrature
@given(st.sampled_from(RULES), st.integers(2, 40))
def test_quadrature_weights_sum_to_one_on_the_unit_interval(rule, steps):
    alphas, weights = quadrature(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert np.all((alphas >= 0) & (alphas <= 1)) and np.all(weights > 0)
    assert abs(weights.sum() - 1) < 1e-13


@given(st.integers(1, 20))
def test_gauss_legendre_integrates_polynomials_up_to_degree_2n_minus_1(steps):
    alphas, weights = quadrature("gauss_legendre", steps)
    for degree in range(2 * steps):
        assert abs(weights @ alphas ** degree - 1 / (degree + 1)) < 1e-12


def test_riemann_rules_converge_at_their_orders():
    """On ∫₀¹ exp(α) dα: left and right errors halve with twice the steps (first order),
    middle and trapezoid errors quarter (second order)."""
    exact = np.e - 1
    for rule, order in [("riemann_left", 1), ("riemann_right", 1), ("riemann_middle", 2),
                        ("riemann_trapezoid", 2)]:
        errors = [abs(w @ np.exp(a) - exact) for a, w in (quadrature(rule, n) for n in (50, 100))]
        assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.05), rule


def test_quadrature_refuses_unknown_rules_and_too_few_steps():
    with pytest.raises(ValueError, match="unknown rule 'simpson'"):
        quadrature("simpson", 8)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        quadrature("riemann_trapezoid", 1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        quadrature("gauss_legendre", 0)


# ------------------------------------------------------------------ a linear model
class LinearLM(nn.Module):
    """logits[t, v] = Σ_s e_s · W[s, :, t, v] + bias[t, v]: every output is linear in every
    input embedding, so ∂logit/∂e is the constant W and integrated gradients is known in
    closed form: (x − b) · W[:, :, position, target]."""

    def __init__(self, vocab: int, d: int, length: int, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.tok_embed = nn.Embedding(vocab, d)
        self.tok_embed.weight.data = rng.standard_normal((vocab, d))
        self.W = nn.Parameter(rng.standard_normal((length, d, length, vocab)))
        self.bias = nn.Parameter(rng.standard_normal((length, vocab)))

    def forward(self, ids):
        return mt.einsum("nsd,sdtv->ntv", self.tok_embed(ids), self.W) + self.bias


@st.composite
def linear_problems(draw):
    length, d, vocab = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(2, 7))
    seed = draw(st.integers(0, 2 ** 16))
    ids = np.random.default_rng(seed).integers(0, vocab, length)
    rule = draw(st.sampled_from(RULES))
    steps = draw(st.integers(2 if rule == "riemann_trapezoid" else 1, 6))
    return (LinearLM(vocab, d, length, seed), ids, draw(st.integers(0, length - 1)),
            draw(st.integers(0, vocab - 1)), rule, steps, draw(st.booleans()))


@given(linear_problems())
def test_integrated_gradients_is_exact_on_a_linear_model(problem):
    model, ids, position, target, rule, steps, zero_baseline = problem
    x = model.tok_embed.weight.data[ids]                            # (T, d)
    b = np.zeros_like(x) if zero_baseline else \
        np.random.default_rng(len(ids)).standard_normal(x.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # complete, so no warning
        ig = integrated_gradients(model, ids, target, position, score="logit", steps=steps,
                                  rule=rule, baseline=None if zero_baseline else b)
    W = model.W.data[:, :, position, target]                        # (T, d)
    expected = (x - b) * W
    rounding = 1e-13 * (1 + np.abs(expected).sum())
    np.testing.assert_allclose(ig.per_dimension, expected, rtol=0, atol=rounding)
    f_x = (x * W).sum() + model.bias.data[position, target]
    f_b = (b * W).sum() + model.bias.data[position, target]
    assert abs(ig.score_at_input - f_x) <= rounding and abs(ig.score_at_baseline - f_b) <= rounding
    assert abs(ig.gap) <= rounding and ig.complete
    # f is linear, so with a zero baseline input × gradient is integrated gradients, and
    # saliency is the norm of the constant gradient
    np.testing.assert_allclose(input_x_gradient(model, ids, target, position, score="logit")
                               .per_dimension, x * W, rtol=0, atol=rounding)
    np.testing.assert_allclose(saliency(model, ids, target, position, score="logit")
                               .attributions, np.linalg.norm(W, axis=-1), rtol=1e-12)


def test_linear_completeness_gap_is_float64_rounding(capsys):
    model = LinearLM(vocab=11, d=8, length=9, seed=3)
    ids = np.arange(9)
    gaps = {steps: integrated_gradients(model, ids, 4, position=6, score="logit",
                                        steps=steps).gap for steps in (1, 4, 32)}
    print("linear model, gauss_legendre:", {k: f"{v:.1e}" for k, v in gaps.items()})
    assert all(abs(gap) < 1e-12 for gap in gaps.values())


# ------------------------------------------------------------------ a known dependence
class RoutedAttention(nn.Module):
    """Output position p reads input position source[p] and nothing else: one attention
    layer whose mask lets query p see key source[p] only, no residual, then a head.
    With a single key per row the softmax weight is exactly 1 whatever the query, so
    neither the query's token nor any other moves the output at p."""

    def __init__(self, vocab: int, d: int, sources: np.ndarray):
        super().__init__()
        self.tok_embed = nn.Embedding(vocab, d)
        self.attn = MultiHeadAttention(d, n_heads=2)
        self.head = nn.Linear(d, vocab)
        length = len(sources)
        self.mask = np.zeros((length, length), dtype=bool)
        self.mask[np.arange(length), sources] = True

    def forward(self, ids):
        return self.head(self.attn(self.tok_embed(ids), mask=self.mask))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "textbook"])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_attribution_ranks_the_one_position_an_output_reads_first(method, fast):
    length = 7
    rng = np.random.default_rng(5)
    sources = rng.permutation(length)
    while np.any(sources == np.arange(length)):   # never the output's own position
        sources = rng.permutation(length)
    model = RoutedAttention(vocab=20, d=8, sources=sources)
    ids = rng.integers(0, 20, length)
    with mt.fast_paths(fast):
        for position in range(length):
            result = method(model, ids, target=int(rng.integers(0, 20)), position=position)
            assert result.ranked()[0] == sources[position]
            others = np.delete(result.attributions, sources[position])
            assert np.abs(others).max() <= 1e-12 * abs(result.attributions[sources[position]])


# ------------------------------------------------------------------ DecoderLMs
def loaded_models(tmp_path_factory):
    """A GPT-2 and a Llama, each written by save_pretrained and read back."""
    folder = tmp_path_factory.mktemp("hub")
    models = {}
    for name, config in [
        ("gpt2", LMConfig.gpt2(vocab=48, d_model=32, n_heads=4, n_layers=2, max_len=24,
                               tie_weights=True)),
        ("llama", LMConfig.llama(vocab=48, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                                 max_len=24)),
    ]:
        mt.manual_seed(11)
        DecoderLM(config).save_pretrained(folder / name)
        models[name] = DecoderLM.from_pretrained(folder / name)
    return models


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_models(tmp_path_factory)


IDS = np.array([5, 17, 3, 40, 22, 9, 31, 12, 7, 44])


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_baseline(model, token: int = 0):
    return model.tok_embed(np.full((1, len(IDS)), token)).data[0]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_integrated_gradients_on_a_loaded_decoder_is_complete_within_tolerance(loaded, name):
    model = loaded[name]
    # GPT-2 from zero embeddings (its positions are added after them); Llama from a
    # token's embeddings (see the next test for why not zero)
    baseline = None if name == "gpt2" else token_baseline(model)
    gaps = {}
    for steps in (4, 32):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if steps == 4 else "error")
            result = integrated_gradients(model, IDS, target=13, position=7, steps=steps,
                                          baseline=baseline)
        gaps[steps] = result.gap
    change = result.score_at_input - result.score_at_baseline
    print(f"{name}: f(x) − f(b) = {change:.4f}; gaps", {k: f"{v:.1e}" for k, v in gaps.items()})
    assert result.complete and abs(gaps[32]) <= 1e-3 * max(1, abs(change))
    assert abs(gaps[32]) < abs(gaps[4]) / 10   # the gap measures the integral: it shrinks
    assert abs(change) > 0.05                  # and the check is not about a zero change
    # f(x) and f(b) are the model's own numbers, read without the hook (float32 forward)
    reference = log_softmax(model(IDS[None]).data[0, 7])[13]
    assert result.score_at_input == pytest.approx(reference, abs=1e-4)
    if baseline is not None:
        plain = log_softmax(model(np.zeros((1, len(IDS)), int)).data[0, 7])[13]
        assert result.score_at_baseline == pytest.approx(plain, abs=1e-4)


def test_zero_baseline_of_a_llama_is_caught_by_the_completeness_check(loaded):
    """RMSNorm without biases maps zero embeddings to uniform logits and leaves them
    within the first thousandth of the path: the check reports it, rather than a wrong
    attribution passing silently."""
    with pytest.warns(RuntimeWarning, match="OUTSIDE the tolerance"):
        result = integrated_gradients(loaded["llama"], IDS, target=13, position=7, steps=8)
    assert not result.complete
    assert result.score_at_baseline == pytest.approx(-np.log(48), abs=1e-9)  # uniform
    assert "✗" in result.to_html() and "OUTSIDE" in result.to_ansi()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.__name__)
def test_a_causal_decoder_gives_later_tokens_exactly_zero(loaded, name, method):
    model = loaded[name]
    options = {"steps": 4, "baseline": token_baseline(model)} \
        if method is integrated_gradients else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # 4 steps: completeness is not the point here
        for position in (0, 4):
            result = method(model, IDS, position=position, **options)
            assert np.all(result.attributions[position + 1:] == 0)
            assert np.all(result.attributions[:position + 1] != 0)
    assert result.target == int(model(IDS[None]).data[0, 4].argmax())   # the default


def test_saliency_is_the_gradient_central_differences_find():
    """In float64 throughout: perturb the embedding row of a token that occurs once."""
    mt.manual_seed(2)
    model = DecoderLM(LMConfig.gpt2(vocab=30, d_model=16, n_heads=2, n_layers=2, max_len=12))
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(np.float64)
    ids = np.array([4, 9, 1, 22, 15, 8])
    result = saliency(model, ids, target=3, position=4)
    gradient = result.per_dimension                                  # (T, d)
    assert result.attributions == pytest.approx(np.linalg.norm(gradient, axis=-1))
    table = model.tok_embed.weight.data
    for t in (0, 2, 4):
        for k in (0, 7, 15):
            numeric = []
            for step in (1e-5, -1e-5):
                table[ids[t], k] += step
                numeric.append(log_softmax(model(ids[None]).data[0, 4])[3])
                table[ids[t], k] -= step
            assert (numeric[0] - numeric[1]) / 2e-5 == pytest.approx(gradient[t, k],
                                                                      rel=1e-6, abs=1e-9)


def test_attribution_leaves_the_model_as_it_was(loaded):
    model = loaded["gpt2"]
    model.train()
    parameters = list(model.parameters())
    for parameter in parameters:
        parameter.grad = np.full(parameter.shape, 7.0, parameter.dtype)
    parameters[3].requires_grad = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        integrated_gradients(model, IDS, target=1, steps=4, batch_size=3)
    assert all(np.all(p.grad == 7.0) for p in parameters)
    assert [p.requires_grad for p in parameters] == [i != 3 for i in range(len(parameters))]
    assert not model.tok_embed.__dict__.get("_forward_hooks") and model.training
    parameters[3].requires_grad = True
    model.eval()


def test_scores_and_batching_agree(loaded):
    model = loaded["gpt2"]
    one = integrated_gradients(model, IDS, target=2, steps=8, batch_size=1)
    many = integrated_gradients(model, IDS[None], target=2, steps=8, batch_size=64)
    np.testing.assert_allclose(one.per_dimension, many.per_dimension, rtol=1e-10, atol=1e-14)
    logit = input_x_gradient(model, IDS, target=2, score="logit")
    prob = input_x_gradient(model, IDS, target=2, score="prob")
    assert prob.score_at_input == pytest.approx(np.exp(one.score_at_input), rel=1e-10)
    assert logit.score_at_input == pytest.approx(model(IDS[None]).data[0, -1, 2], abs=1e-4)


# ------------------------------------------------------------------ pictures
def test_html_colours_tokens_by_attribution_and_escapes_them(loaded):
    tokens = ["<script>", " a", "b\n", "c", "d", "e", "f", "g", "h", "i"]
    result = integrated_gradients(loaded["gpt2"], IDS, target=41, tokens=tokens)
    page = result.to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "␣a" in page and "b↵" in page and "✓" in page
    assert result._repr_html_() == page
    colours = re.findall(r'data-position="(\d+)"[^>]*background: (#[0-9a-f]{6})', page)
    assert [int(i) for i, _ in colours] == list(range(len(IDS)))
    strongest = result.ranked()[0]
    # the largest |attribution| gets the palette's end colour: blue or red at full strength
    assert colours[strongest][1] in ("#2166ac", "#b2182b")
    assert result.target_token == "41" and "→ 41" in page   # not among the inputs


def test_ansi_and_page(loaded, tmp_path):
    result = saliency(loaded["llama"], IDS, target=5, tokens=[str(i) for i in IDS])
    text = result.to_ansi()
    assert text.count("\x1b[48;2;") == len(IDS) and text.count("\x1b[0m") == len(IDS)
    assert "saliency of log p('5') at position 9" in text.splitlines()[0]
    page = result.save(tmp_path / "deep" / "saliency.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert repr(result).startswith("<Attribution: saliency of log p('5')")
    assert visible("") == "∅" and visible("\x07") == "\\x07"


def test_bad_requests_are_refused_by_name(loaded):
    model = loaded["gpt2"]
    cases = [
        ({"ids": np.zeros((2, 3), int)}, "one non-empty sequence"),
        ({"ids": []}, "one non-empty sequence"),
        ({"position": 10}, "position 10 is not a position of the 10 tokens"),
        ({"target": 48}, r"target must be a token id in \[0, 48\)"),
        ({"score": "loss"}, "unknown score 'loss'"),
        ({"baseline": np.zeros((3, 32))}, r"baseline \(3, 32\) must have the shape"),
        ({"rule": "simpson"}, "unknown rule"),
        ({"tokens": ["a"]}, "1 tokens given for 10 ids"),
    ]
    for options, message in cases:
        arguments = {"ids": IDS, **options}
        with pytest.raises(ValueError, match=message):
            integrated_gradients(model, arguments.pop("ids"), **arguments)
    with pytest.raises(TypeError, match="has no module `tok_embed`"):
        saliency(nn.Linear(3, 3), IDS)


def test_attribution_is_exported():
    import viz
    assert viz.integrated_gradients is integrated_gradients and viz.Attribution is Attribution
