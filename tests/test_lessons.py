"""The lessons run end to end, write their pictures, and check the numbers they claim."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from viz import lessons
from viz.__main__ import main
from viz.engine import DotNotFoundError, find_engine
from viz.heatmap import heatmap_svg
from viz.labels import VALUE_PALETTE, diverging
from viz.lessons import common

NEEDS_DOT = {"architecture", "backprop", "softmax", "self-attention", "qkv", "multi-head"}
CJK_TERMS = {"self-attention": ["我", "苹果", "加权汇聚"], "qkv": ["过滤器", "苹果"],
             "kv-cache": ["我想吃", "苹果", "为什么不缓存 Q"], "positional-encoding": ["苹果吃想我"],
             "rope": ["q_吃", "k_苹果"],
             "softmax": ["先取指数"], "backprop": ["我 想 吃", "更新 W 的方向和大小"]}


def require_dot():
    """Lessons that draw graphs need a layout engine: system `dot` or the bundled one."""
    try:
        find_engine()
    except DotNotFoundError as error:
        require(False, f"no layout engine: {error}")


def run_lesson(name, tmp_path, **kwargs):
    lines = []
    result = lessons.run(name, out_dir=tmp_path / name, echo=lines.append, **kwargs)
    return result, "\n".join(lines)


def test_registry_lists_twelve_lessons_in_syllabus_order():
    assert lessons.names() == ["architecture", "self-attention", "qkv", "kv-cache", "scaling",
                               "multi-head", "positional-encoding", "rope", "backprop",
                               "softmax", "residuals", "attribution"]
    for name, summary in lessons.catalog():
        assert lessons.get(name).NAME == name
        assert summary and "\n" not in summary


def test_unknown_lesson_names_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="(?i)no lesson called 'nope'.*valid lessons: "
                                         "architecture, self-attention, qkv"):
        lessons.get("nope")
    assert main(["lesson", "nope"]) == 2
    assert "alid lessons: architecture, self-attention" in capsys.readouterr().err


def test_cli_lists_lessons(capsys):
    assert main(["lessons"]) == 0
    listing = capsys.readouterr().out
    for name in lessons.names():
        assert name in listing


@pytest.mark.parametrize("name", lessons.names())
def test_lesson_runs_writes_files_and_keeps_the_notes_terms(name, tmp_path):
    if name in NEEDS_DOT:
        require_dot()
    result, text = run_lesson(name, tmp_path, html=name in NEEDS_DOT)
    assert "✓" in text and result["files"]
    for path in result["files"]:
        assert os.path.getsize(path) > 0, path
        assert str(path).startswith(str(tmp_path / name))
    for term in CJK_TERMS.get(name, []):
        assert term in text, term


def test_softmax_numbers(tmp_path):
    result, _ = run_lesson("softmax", tmp_path)
    assert math.isclose(result["probs_sum"], 1.0, abs_tol=1e-12)
    assert all(0 < p < 1 for p in result["probs"])
    assert np.isnan(result["naive"]).all()
    np.testing.assert_allclose(result["stable"], [0.0900306, 0.2447285, 0.6652410], atol=1e-6)
    assert result["jacobian_error"] < 1e-12 and result["rule_error"] < 1e-12


def test_scaling_numbers(tmp_path):
    r, _ = run_lesson("scaling", tmp_path)
    np.testing.assert_allclose(np.array(r["var_raw"]) / np.array(r["d_k"]), 1, atol=0.15)
    np.testing.assert_allclose(r["var_scaled"], 1, atol=0.15)
    assert np.all(np.diff(r["max_w_raw"]) > 0) and r["max_w_raw"][-1] > 0.85
    assert r["grad_raw"][-1] < r["grad_raw"][0] / 3
    assert max(r["grad_scaled"]) < 1.5 * min(r["grad_scaled"])


def test_qkv_filter_and_learning(tmp_path):
    result, _ = run_lesson("qkv", tmp_path)
    assert result["V"] == [3.0, 3.0, 0.0, 0.0]
    assert result["V_company"] == [0.0, 0.0, 0.0, 0.0]
    assert result["losses"][1] < result["losses"][0] * 1e-3
    assert result["W_V_error"] < 0.05
    np.testing.assert_allclose(result["apple_v_learned"], [3, 3, 0, 0], atol=0.1)


def test_self_attention_numbers(tmp_path):
    result, _ = run_lesson("self-attention", tmp_path)
    np.testing.assert_allclose(result["row_sums"], 1, atol=1e-12)
    np.testing.assert_allclose(result["output"], result["output_by_hand"], atol=1e-12)
    assert result["causal_upper_max"] == 0


def test_kv_cache_matches_the_notes_table(tmp_path):
    result, _ = run_lesson("kv-cache", tmp_path)
    keys = np.array([[1.1, 0.2, 0.5, 0.1], [0.3, 1.2, 0.1, 0.4], [0.9, 0.1, 1.1, 0.3]])
    values = np.array([[0.1, 0.9, 0.0, 0.2], [0.5, 0.1, 0.8, 0.0], [0.2, 0.2, 0.1, 0.9]])
    q_apple = np.array([1.0, 0.0, 1.0, 0.5])      # the lesson's q_苹果
    scores = keys @ q_apple / 2.0
    weights = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(result["weights"], weights, atol=1e-12)
    np.testing.assert_allclose(result["output"], weights @ values, atol=1e-12)
    assert result["grad_old_queries"] == 0 and result["grad_old_keys"] > 0
    assert result["tokens_equal"]
    for n_new, cached, uncached, _ in result["rows"]:
        assert cached == 2 * (3 + n_new - 1)                       # 2 layers, O(n)
        assert uncached == 2 * sum(3 + i for i in range(n_new))    # O(n^2)


def test_multi_head_batched_equals_loop(tmp_path):
    result, _ = run_lesson("multi-head", tmp_path)
    assert result["loop_error"] < 1e-5 and result["weight_error"] < 1e-5
    assert result["head_gap"] > 0.05
    np.testing.assert_allclose(np.array(result["weights"]).sum(-1), 1, atol=1e-5)


def test_positional_encoding_numbers(tmp_path):
    result, _ = run_lesson("positional-encoding", tmp_path)
    assert result["equivariance_error"] < 1e-5
    assert result["order_effect"] > 1e-2
    assert result["formula_error"] < 1e-6 and result["rotation_error"] < 1e-5
    assert result["table_slice"][1][0] == pytest.approx(math.sin(1), abs=1e-6)


def test_rope_numbers(tmp_path):
    result, text = run_lesson("rope", tmp_path)
    assert result["rotation_error"] < 1e-12
    assert result["shift_error"] < 1e-9 and result["diagonal_error"] < 1e-9
    assert result["diagonal_spread"] > 0.1
    assert result["rotary_gap"] < 1e-5 and result["sinusoidal_gap"] > 1e-3
    # Llama-3-8B: 2 x 32 layers x 8 K/V heads x 128 dims x 2 bytes per token
    assert result["bytes_per_token"] == 2 * 32 * 8 * 128 * 2
    assert result["gib"] == [4.0, 1.0, 0.125] and result["logits_gap"] < 1e-5
    assert result["zero_mean_gap"] < 1e-12 and result["offset_gap"] > 0.1
    assert [os.path.basename(f) for f in result["files"]] == ["rope-scores.svg",
                                                              "sinusoidal-scores.svg"]
    assert "Llama-3-8B" in text


def test_architecture_numbers(tmp_path):
    require_dot()
    result, text = run_lesson("architecture", tmp_path)
    assert result["total_params"] == result["expected_params"] == 12116
    assert result["residual_error"] < 1e-5
    assert result["logits_shape"] == (1, 4, 20)
    assert "encoder.layers.0" in result["folded"] and "decoder.layers.1" in result["folded"]
    assert "cross_attn: MultiHeadAttention" in text


def test_backprop_writes_graph_and_player_and_checks_dW(tmp_path):
    require_dot()
    result, text = run_lesson("backprop", tmp_path)    # the player is written even without --html
    svg, page = result["files"]
    assert svg.endswith(".svg")
    drawn = "".join(ET.fromstring(Path(svg).read_text(encoding="utf-8")).itertext())
    assert "W_q" in drawn and "softmax" in drawn      # the attention graph, laid out
    assert page.endswith(".html") and "W_q" in Path(page).read_text(encoding="utf-8")
    assert result["dW_q_error"] < 1e-12
    assert any(entry.startswith("softmax") for entry in result["route"])
    assert result["loss_after"] < result["loss"]
    assert f"step {result['n_steps']}/{result['n_steps']}" in text
    assert "rule: dx = y * (g - sum(g * y, axis))" in text
    assert svg in text and page in text


def test_backprop_step_pauses_between_steps(tmp_path, monkeypatch):
    require_dot()
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "")
    result, _ = run_lesson("backprop", tmp_path, step=True)
    assert len(prompts) == result["n_steps"] - 1


def test_default_output_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = lessons.run("softmax", echo=lambda line: None)
    assert result["files"] == [os.path.join("lesson-output", "softmax", "softmax-jacobian.svg")]
    assert (tmp_path / "lesson-output" / "softmax" / "softmax-jacobian.svg").stat().st_size


def edit_lesson(tmp_path, monkeypatch, name, right, wrong):
    """Edit one cell of lesson `name` as a learner would (`right` becomes `wrong`) and
    make the registry run the edited copy."""
    source = (lessons.HERE / f"{name}.lesson.py").read_text(encoding="utf-8")
    assert right in source
    edited = tmp_path / "edited-lessons"
    edited.mkdir()
    (edited / f"{name}.lesson.py").write_text(source.replace(right, wrong), encoding="utf-8")
    monkeypatch.setattr(lessons, "HERE", edited)


def test_a_wrong_claim_stops_the_lesson(tmp_path, monkeypatch):
    """Edit the qkv lesson's filter cell, leaking a fruit feature into a tech-company
    output."""
    edit_lesson(tmp_path, monkeypatch, "qkv", "W_V_FILTER = np.array([[1, 1, 0, 0],",
                "W_V_FILTER = np.array([[1, 1, 1, 0],")
    with pytest.raises(lessons.LessonCheckError, match=r"check failed: \[1, 2, 0, 0\] @ W_V"):
        run_lesson("qkv", tmp_path)


def edit_kv_cache_q_apple(tmp_path, monkeypatch):
    """Edit the kv-cache lesson's q_苹果 cell to look for 想's key (dim 1), not 吃's."""
    edit_lesson(tmp_path, monkeypatch, "kv_cache", "Q_APPLE = np.array([1.0, 0.0, 1.0, 0.5])",
                "Q_APPLE = np.array([0.0, 1.0, 0.0, 0.0])")


def test_a_wrong_table_value_fails_the_kv_check(tmp_path, monkeypatch):
    edit_kv_cache_q_apple(tmp_path, monkeypatch)
    with pytest.raises(lessons.LessonCheckError, match="吃 is the most relevant"):
        run_lesson("kv-cache", tmp_path)


def test_cli_reports_a_failed_check(tmp_path, monkeypatch, capsys):
    edit_kv_cache_q_apple(tmp_path, monkeypatch)
    assert main(["lesson", "kv-cache", "--out", str(tmp_path)]) == 1
    assert "error: lesson kv-cache: check failed" in capsys.readouterr().err


def test_check_and_heatmap_errors(tmp_path):
    with pytest.raises(common.LessonCheckError, match=r"check failed: rows sum to 1 \(1.2\)"):
        common.check(False, "rows sum to 1", "1.2")
    with pytest.raises(ValueError, match=r"heatmap_svg: expected a 2-D matrix, got shape \(3,\)"):
        heatmap_svg(np.ones(3), tmp_path / "bad.svg")
    picture = heatmap_svg(np.array([[1.0, -1.0]]), tmp_path / "ok.svg",
                          row_labels=["我"], col_labels=["a", "b"])
    text = picture.read_text(encoding="utf-8")
    # The graphs' value palette at both ends: one colour scheme for every heatmap.
    assert diverging(1, 1, VALUE_PALETTE) in text and diverging(-1, 1, VALUE_PALETTE) in text
    assert "我" in text
