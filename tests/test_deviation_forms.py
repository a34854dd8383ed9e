"""companion.chapters.deviation_forms: both deviation penalties and their scale derivative.

The references are hand computations on a five-element array (values written out below) and
the sign argument of the module docstring on cases where it is known.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from companion.chapters import deviation_forms as D
from companion.chapters import style

#: no weight is a multiple of S, so no floor sits on a float32 boundary
W = np.array([-0.27, -0.04, 0.02, 0.13, 0.25], np.float32)
S = 0.1


def test_both_forms_and_their_gradient_by_hand():
    # q = floor(W/s) = [-3, -1, 0, 1, 2]; r = W - q s = [0.03, 0.06, 0.02, 0.03, 0.05]
    rec_penalty = (0.03 + 0.06 + 0.02 + 0.03 + 0.05) / 5
    rec_grad = -(-3 - 1 + 0 + 1 + 2) / 5  # -(1/n) sum sign(r) q, every r > 0
    # |W - W/s| = 9 |W| at s = 0.1; d/ds = mean|W| sign(s - 1) / s^2
    mean_abs = (0.27 + 0.04 + 0.02 + 0.13 + 0.25) / 5
    imp_penalty, imp_grad = 9 * mean_abs, -mean_abs / S**2
    df = D.deviation_curves(W, np.array([S])).set_index("form")
    for form, pen, grad in (
        ("reconstructed", rec_penalty, rec_grad),
        ("implementation", imp_penalty, imp_grad),
    ):
        row = df.loc[form]
        np.testing.assert_allclose(row["penalty"], pen, rtol=1e-5, err_msg=form)
        np.testing.assert_allclose(row["gradient"], grad, rtol=1e-5, err_msg=form)
        np.testing.assert_allclose(row["gradient_closed_form"], grad, rtol=1e-6)
        np.testing.assert_allclose(D.closed_form_gradient(W, S, form), grad, rtol=1e-6)
        assert row["descent"] == -row["gradient"]
    assert df.loc["reconstructed", "direction"] == "shrinks"  # rec_grad = 0.2 > 0
    assert df.loc["implementation", "direction"] == "grows"


def test_zero_mean_weights_make_the_reconstructed_form_shrink_every_scale():
    # symmetric weights: mean(W) = 0 exactly, so dP/ds = mean(frac(W/s)) > 0 at every s
    half = np.random.default_rng(0).uniform(0.001, 0.2, 500).astype(np.float32)
    weights = np.concatenate([half, -half])
    curves = D.deviation_curves(weights, D.scale_grid(1e-4, 10.0, 21))
    facts = D.deviation_facts(curves)
    rec, imp = facts["reconstructed"], facts["implementation"]
    assert rec["share_shrinks"] == 1.0 and rec["grows_ranges"] == []
    # the implementation's form grows every scale below 1 and shrinks every one above
    # (grid: 10^(-4 + k/4); s = 1 itself has derivative 0)
    assert imp["grows_ranges"] == [(pytest.approx(1e-4), pytest.approx(10**-0.25))]
    assert imp["shrinks_ranges"] == [(pytest.approx(10**0.25), pytest.approx(10.0))]
    assert curves.query("form == 'implementation' and s == 1")[
        "direction"
    ].tolist() == ["flat"]
    assert imp["crossings"] == [pytest.approx(1.0, rel=1e-6)]
    assert max(rec["max_gradient_error"], imp["max_gradient_error"]) < 1e-4


def test_positive_mean_weights_grow_small_scales():
    # dP/ds = mean(f) - mean(W)/s: negative wherever s < mean(W) (mean(f) < 1)
    weights = np.random.default_rng(1).uniform(0.5, 1.0, 200).astype(np.float32)
    curves = D.deviation_curves(
        weights, D.scale_grid(1e-3, 0.1, 5), forms=["reconstructed"]
    )
    assert set(curves["direction"]) == {"grows"}
    assert set(curves["form"]) == {"reconstructed"}


def test_figure_two_log_panels_legible():
    curves = D.deviation_curves(D.normal_weights((64, 16)), D.scale_grid(num=15))
    fig = D.draw_deviation_forms(curves)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "symlog"
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == set(D.FORM_LABEL.values())
    size, text = style.smallest_text(fig)
    assert size >= style.MIN_FONT_PT, text
    plt.close(fig)


def test_markdown_states_measured_numbers():
    curves = D.deviation_curves(D.normal_weights((64, 16)), D.scale_grid(num=7))
    text = D.deviation_markdown(curves, "a test sample")
    assert "For a test sample, over 7 log-spaced scales from 1e-5 to 10" in text
    assert (
        "at every one of the 7 scales" in text
    )  # zero-mean sample: shrinks everywhere
    facts = D.deviation_facts(curves)["implementation"]
    assert f"{100 * facts['share_grows']:.0f} % of the 7 scales" in text
    other = D.deviation_markdown(
        D.deviation_curves(D.normal_weights((64, 16)), D.scale_grid(num=9)), "x"
    )
    assert "over 9 log-spaced scales" in other and "of the 9 scales" in other


def test_normal_weights_are_seeded_and_zero_mean():
    a, b = D.normal_weights((30, 20), seed=3), D.normal_weights((30, 20), seed=3)
    assert a.shape == (30, 20) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert abs(float(a.astype(np.float64).mean())) < 1e-8
    assert not np.array_equal(a, D.normal_weights((30, 20), seed=4))


def test_taped_gradient_is_checked_against_the_closed_form(monkeypatch):
    real = D.parameter_penalties

    def doubled(p, scale, form):
        return {k: 2 * v for k, v in real(p, scale, form).items()}

    monkeypatch.setattr(D, "parameter_penalties", doubled)
    with pytest.raises(ValueError, match="differs from its closed form"):
        D.deviation_curves(W, np.array([S]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: D.deviation_curves(W, forms=["text"]), "forms=.*'reconstructed'"),
        (lambda: D.deviation_curves(W, forms=[]), "non-empty"),
        (lambda: D.deviation_curves(np.array([]), np.array([S])), "non-empty array"),
        (lambda: D.deviation_curves([0.1, np.nan], np.array([S])), "finite"),
        (lambda: D.deviation_curves(W, np.array([0.0, 1.0])), "positive finite"),
        (lambda: D.scale_grid(1.0, 0.1), "0 < s_min < s_max"),
        (lambda: D.scale_grid(num=1), "num=1"),
        (lambda: D.closed_form_gradient(W, S, "text"), "allowed"),
        (lambda: D.normal_weights(std=0), "std=0"),
        (lambda: D.normal_weights(()), "shape"),
        (lambda: D.deviation_facts(pd.DataFrame()), "lacks the columns"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_markdown_needs_both_forms():
    curves = D.deviation_curves(W, np.array([S]), forms=["reconstructed"])
    with pytest.raises(ValueError, match="lacks the form"):
        D.deviation_markdown(curves, "x")
