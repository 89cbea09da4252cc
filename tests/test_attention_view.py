"""Attention views read the weights a forward pass really used: on GPT-2 and Llama models
loaded from Hugging Face directories they are causal, their rows sum to 1, the fast
paths (a constant array) and the textbook path (a graph tensor) give the same weights,
and layer 0 of GPT-2 matches a NumPy recomputation from the parameters. The page holds
everything it shows (the weights as JSON, the heatmaps as SVG) and fetches nothing."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

import microtensor as mt
from microtensor import nn
from transformer import DecoderLM, LMConfig
from viz.attention_view import AttentionView, view_attention
from viz.attribution import visible

IDS = np.array([5, 17, 3, 40, 22, 9, 31, 12])


def loaded_models(folder):
    """A GPT-2 and a Llama (grouped-query: 4 heads, 2 K/V heads), each written by
    save_pretrained and read back; W_q scaled up (x20) so the heads attend sharply."""
    models = {}
    for name, config in [
        ("gpt2", LMConfig.gpt2(vocab=48, d_model=32, n_heads=4, n_layers=3, max_len=24)),
        ("llama", LMConfig.llama(vocab=48, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                                 max_len=24)),
    ]:
        mt.manual_seed(4)
        model = DecoderLM(config)
        for block in model.blocks:
            block.self_attn.W_q.weight.data *= 20
        model.save_pretrained(folder / name)
        models[name] = DecoderLM.from_pretrained(folder / name)
    return models


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_models(tmp_path_factory.mktemp("hub"))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_weights_are_the_forward_pass_weights(loaded, name):
    model = loaded[name]
    with mt.fast_paths(True):
        fast = view_attention(model, IDS)
        assert not model.blocks[0].self_attn.last_weights.requires_grad   # a constant
    with mt.fast_paths(False):
        textbook = view_attention(model, IDS[None])
    layers, heads = len(model.blocks), model.config.n_heads
    assert fast.weights.shape == (layers, heads, len(IDS), len(IDS))
    assert fast.layer_names == [f"blocks.{i}.self_attn" for i in range(layers)]
    np.testing.assert_allclose(fast.weights, textbook.weights, atol=2e-5)  # float32
    np.testing.assert_allclose(fast.weights.sum(axis=-1), 1, atol=1e-5)
    assert np.all(np.triu(fast.weights, k=1) == 0)                       # causal
    assert fast.weights.max(axis=-1).mean() > 0.5        # sharp heads, not uniform rows


def test_gpt2_layer_zero_matches_numpy(loaded):
    model = loaded["gpt2"]
    view = view_attention(model, IDS)
    x = model.tok_embed.weight.data[IDS] + model.position.table.weight.data[:len(IDS)]
    norm, attention = model.blocks[0].norm1, model.blocks[0].self_attn
    h = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + norm.eps)
    h = h * norm.weight.data + norm.bias.data
    q = (h @ attention.W_q.weight.data + attention.W_q.bias.data).reshape(len(IDS), 4, 8)
    k = (h @ attention.W_k.weight.data + attention.W_k.bias.data).reshape(len(IDS), 4, 8)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(8)
    scores = np.where(np.tril(np.ones((len(IDS), len(IDS)), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(view.weights[0], weights / weights.sum(-1, keepdims=True),
                               atol=2e-5)


def page_data(page: str) -> dict:
    payload = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>',
                        page, re.DOTALL).group(1)
    return json.loads(payload)


def test_page_holds_everything_and_fetches_nothing(loaded, tmp_path):
    tokens = ["</script><b>", " the", "\n", "cat", "sat", "on", "a", "mat"]
    view = view_attention(loaded["llama"], IDS, tokens=tokens, title="llama <heads>")
    page = view.save(tmp_path / "attention.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<title>llama &lt;heads&gt;</title>" in page
    # nothing to fetch: no links, sources, imports or URLs (the SVG namespace is a name)
    assert not re.search(r"<link|\bsrc=|@import|url\(", page)
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert page.count("<script") == 2 and "</script><b>" not in page
    data = page_data(page)
    assert data["tokens"] == [visible(t) for t in tokens]
    np.testing.assert_allclose(data["weights"], view.weights, atol=5e-5)
    assert data["layers"] == view.layer_names
    figures = re.findall(r'<figure class="heatmap" data-layer="(\d+)" data-head="(\d+)">'
                         r"<svg", page)
    assert figures == [(str(l), str(h)) for l in range(2) for h in range(4)]
    assert page.count('<button class="head"') == 4 and page.count("<option") == 2


def test_heatmap_cap_draws_the_first_layers_and_says_so():
    weights = np.full((5, 3, 10, 10), 0.1)
    view = AttentionView(weights, max_heatmap_cells=2 * 3 * 100)
    page = view.to_html()
    assert page.count('<figure class="heatmap"') == 6
    assert "Heatmaps for the first 2 of 5 layers" in page
    assert view.heatmap(4, 2).count("<rect") == 101   # any one, on request


def test_jupyter_gets_the_page_in_a_sandboxed_iframe():
    view = AttentionView(np.eye(3)[None], tokens=["a", "b", "c"])
    shown = view._repr_html_()
    srcdoc = re.fullmatch(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts".*</iframe>',
                          shown, re.DOTALL).group(1)
    assert html.unescape(srcdoc) == view.to_html()


def test_arrays_from_anywhere_and_bad_ones_refused():
    assert AttentionView(np.eye(4)).weights.shape == (1, 1, 4, 4)
    assert AttentionView(np.ones((2, 3, 3)) / 3).weights.shape == (1, 2, 3, 3)
    assert repr(AttentionView(np.ones((2, 3, 3)) / 3)) == \
        "<AttentionView 'attention': 1 layers × 2 heads over 3 tokens>"
    with pytest.raises(ValueError, match=r"or \(T, T\), got shape \(2, 3, 4\)"):
        AttentionView(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="2 tokens for weights over 3"):
        AttentionView(np.eye(3), tokens=["a", "b"])
    with pytest.raises(ValueError, match="NaN or inf"):
        AttentionView(np.full((3, 3), np.nan))
    with pytest.raises(TypeError, match="no module that keeps `last_weights`"):
        view_attention(nn.Linear(3, 3), [1, 2])


def test_a_second_call_shows_the_second_sequence(loaded):
    model = loaded["gpt2"]
    view_attention(model, IDS)
    assert view_attention(model, IDS[:3]).weights.shape == (3, 4, 3, 3)


def test_attention_view_is_exported():
    import viz
    assert viz.view_attention is view_attention and viz.AttentionView is AttentionView
