"""The lessons that train something check what training showed: the numbers they return are
the numbers their claims are about, each with a margin (the lessons' own checks are the
same claims, so these hold the returned numbers to them)."""
from __future__ import annotations

import math

import pytest

from viz import lessons


@pytest.fixture(scope="module")
def residuals(tmp_path_factory):
    out = tmp_path_factory.mktemp("residuals")
    return lessons.run("residuals", out_dir=out, echo=lambda line: None)


def test_residuals_plain_stack_gradient_vanishes_by_orders_of_magnitude(residuals):
    r = residuals
    assert r["first_over_last_plain"] < 1e-3          # measured about 1e-5
    assert r["first_over_last_plain_max"] < 1e-2      # at every training step
    # 23 layers each shrink the gradient by about the weights' gain (1/√3).
    assert math.isclose(r["per_layer_factor"], r["gain"], abs_tol=0.15)
    assert min(r["spread"]["plain"].values()) > 1e3


@pytest.mark.parametrize("stack", ["residual", "residual + LayerNorm"])
def test_residuals_keep_every_layer_within_a_small_factor(residuals, stack):
    spread = residuals["spread"][stack]
    assert spread["step 1"] < 10 and spread["run mean"] < 10
    assert residuals["update_ratio_first"][stack] > -3     # log10 ||Δw|| / ||w||
    assert residuals["update_ratio_last"][stack] > -3


def test_residuals_layer_norm_keeps_tanh_out_of_saturation(residuals):
    r = residuals
    assert r["stream_std"][1] > 2 * r["stream_std"][0]
    assert r["saturated_last"]["residual"] > 0.1
    assert r["saturated_max_with_norm"] < 0.01
    assert r["first_over_last_with_norm"] > 2       # LayerNorm's backward divides by std


def test_residuals_only_the_residual_stacks_learn(residuals):
    r = residuals
    assert r["update_ratio_first"]["plain"] < -5         # layer 1 frozen
    assert r["loss_drop"]["plain"] < 0.2
    assert r["loss_drop"]["residual + LayerNorm"] > 0.6
    assert len(r["files"]) == 4


@pytest.fixture(scope="module")
def attribution(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution")
    return lessons.run("attribution", out_dir=out, echo=lambda line: None)


def test_attribution_model_learned_to_reverse(attribution):
    assert attribution["heldout_accuracy"] > 0.99       # measured 100%


def test_attribution_output_i_reads_input_n_minus_1_minus_i(attribution):
    a = attribution
    assert a["n_outputs"] >= 40
    assert a["hit_rate"] >= 0.9                          # measured 100%
    assert a["mean_share"] > 0.75                        # the mirror holds most of it
    assert a["after_position_max"] == 0                  # the causal mask
    # The same letter at another source position gets far less: it copies by position.
    assert a["n_same_letter"] > 0
    assert a["same_letter_min_ratio"] > 2 and a["same_letter_median_ratio"] > 10


def test_attribution_integrated_gradients_is_complete_and_first_order_is_not(attribution):
    assert attribution["worst_gap"] <= 1e-3              # measured about 1e-8
    assert abs(attribution["first_order_median"]) < 0.1  # Σ input × gradient ≪ f(x) − f(b)
    assert [path.rsplit(".", 1)[1] for path in attribution["files"]] == ["svg", "html"]
