"""Tests of lqs.generalization against closed forms and independent NumPy references.

The workhorse is a linear regression without bias, ``f(x) = x·w``, with the mean squared
error: its loss is exactly quadratic, ``L(w) = mean((Xw - y)²)`` with Hessian ``H = 2XᵀX/N``,
and at the least-squares solution the gradient vanishes, so every perturbation measure has a
closed form (derived in the docstrings of the tests).
"""

from __future__ import annotations

import types

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from lqs import generalization as gen

D = 12  # input features of the linear model
N = 64  # samples


def mse(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@pytest.fixture(scope="module")
def quadratic():
    """Linear model at the least-squares optimum and its exact Hessian (float64)."""
    rng = np.random.default_rng(123)
    X = (rng.standard_normal((N, D)) * rng.uniform(0.5, 2.0, D)).astype(np.float32)
    w_true = rng.uniform(0.5, 1.5, D) * rng.choice([-1.0, 1.0], D)
    y = (X.astype(np.float64) @ w_true + 0.1 * rng.standard_normal(N)).astype(
        np.float32
    )[:, None]
    w_star, *_ = np.linalg.lstsq(
        X.astype(np.float64), y.astype(np.float64)[:, 0], rcond=None
    )
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(w_star.astype(np.float32)[:, None])
    w = model.layers[0].kernel.numpy()[:, 0].astype(np.float64)
    H = 2.0 * X.astype(np.float64).T @ X.astype(np.float64) / N
    return types.SimpleNamespace(model=model, X=X, y=y, w=w, H=H)


def np_loss(q, w):
    r = q.X.astype(np.float64) @ w - q.y[:, 0].astype(np.float64)
    return float(np.mean(r**2))


def weights_of(model):
    return [v.numpy().copy() for v in model.weights]


def assert_same_weights(before, model):
    after = weights_of(model)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def classifier():
    """Small conv net with BatchNorm and dropout, 3 classes, random weights (non-zero biases)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(1)
    for v in model.trainable_weights:
        if v.name == "bias":
            v.assign(rng.uniform(0.1, 0.5, v.shape).astype(np.float32))
    x = rng.random((40, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    return types.SimpleNamespace(model=model, x=x, y=y)


# ------------------------------------------------------------------------------ evaluate, gap
def test_evaluate_matches_numpy_reference_and_is_batch_invariant(classifier):
    m, x, y = classifier.model, classifier.x, classifier.y
    p = np.asarray(m(x, training=False), np.float64)
    ref_loss = float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))))
    ref_acc = float(np.mean(p.argmax(1) == y))
    for bs in (7, 256):
        res = gen.evaluate(m, x, y, batch_size=bs)
        assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
        assert res["accuracy"] == pytest.approx(ref_acc)
        assert res["n"] == len(x)
    onehot = np.eye(3, dtype=np.float32)[y]
    res = gen.evaluate(m, x, onehot, loss_fn=keras.losses.categorical_crossentropy)
    assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert res["accuracy"] == pytest.approx(ref_acc)


def test_evaluate_from_logits_and_scalar_loss():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.integers(0, 4, 10)
    z = np.asarray(model(x), np.float64)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ref = float(np.mean(-logp[np.arange(10), y]))
    assert gen.evaluate(model, x, y, from_logits=True)["loss"] == pytest.approx(
        ref, rel=1e-5
    )
    # a loss returning the batch mean (a scalar) is weighted by the batch size
    scalar = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert gen.evaluate(model, x, y, batch_size=3, loss_fn=scalar)[
        "loss"
    ] == pytest.approx(ref, rel=1e-5)


def test_evaluate_builds_an_unbuilt_model_and_checks_inputs():
    model = keras.Sequential([keras.layers.Dense(2, activation="softmax")])
    x = np.ones((4, 3), np.float32)
    assert 0.0 <= gen.evaluate(model, x, np.zeros(4, int))["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="same, non-zero number"):
        gen.evaluate(model, x, np.zeros(3, int))
    with pytest.raises(ValueError, match="batch_size"):
        gen.evaluate(model, x, np.zeros(4, int), batch_size=0)


def test_unbuilt_model_is_built_first_and_restored():
    model = keras.Sequential(
        [keras.layers.Dense(2, kernel_initializer="ones", activation="softmax")]
    )
    x, y = np.ones((4, 3), np.float32), np.zeros(4, int)
    gen.adaptive_sharpness(model, x, y, n_samples=2)
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.ones((3, 2)))


def test_generalization_gap_sign_convention(classifier):
    m, x, y = classifier.model, classifier.x, classifier.y
    res = gen.generalization_gap(m, (x[:20], y[:20]), (x[20:], y[20:]))
    tr, te = gen.evaluate(m, x[:20], y[:20]), gen.evaluate(m, x[20:], y[20:])
    assert res["train_loss"] == tr["loss"] and res["test_loss"] == te["loss"]
    assert res["gap_loss"] == pytest.approx(te["loss"] - tr["loss"])
    assert res["gap_accuracy"] == pytest.approx(tr["accuracy"] - te["accuracy"])


# ------------------------------------------------------------------------------ sharpness
def test_average_sharpness_equals_same_draw_numpy_reference(quadratic):
    """Reference: the documented draws u_k = default_rng([seed, k]).standard_normal (float32)."""
    q, rho, n = quadratic, 0.3, 8
    res = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=rho, n_samples=n, seed=5, loss_fn=mse
    )
    w32 = q.w.astype(np.float32)
    increases = []
    for k in range(n):
        u = (
            np.random.default_rng([5, k])
            .standard_normal((D, 1))
            .astype(np.float32)[:, 0]
        )
        delta = rho * np.abs(w32) * u / np.linalg.norm(u.astype(np.float64))
        increases.append(
            np_loss(q, (w32 + delta).astype(np.float32).astype(np.float64))
            - np_loss(q, q.w)
        )
    assert res["value"] == pytest.approx(np.mean(increases), rel=1e-3)
    assert res["base_loss"] == pytest.approx(np_loss(q, q.w), rel=1e-4)
    assert (
        res["n_parameters"] == D and res["mode"] == "average" and res["n_samples"] == n
    )


@pytest.mark.parametrize("noise, factor", [("sphere", 1.0 / D), ("gaussian", 1.0)])
def test_average_sharpness_matches_closed_form_expectation(quadratic, noise, factor):
    """E[δᵀHδ]/2 with δ = ρ|w|⊙u/‖u‖: E[u_i u_j/‖u‖²] = δ_ij/d -> ρ²/(2d) Σ H_ii w_i².

    Gaussian (δ = ρ|w|⊙u): E[u_i u_j] = δ_ij -> ρ²/2 Σ H_ii w_i². The loss is exactly
    quadratic and the gradient vanishes at the optimum, so no higher-order terms.
    """
    q, rho = quadratic, 0.2
    expected = rho**2 / 2 * factor * float(np.sum(np.diag(q.H) * q.w**2))
    res = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=rho, n_samples=400, noise=noise, loss_fn=mse
    )
    assert res["value"] == pytest.approx(expected, rel=0.1)
    assert abs(res["value"] - expected) < 4 * res["stderr"] + 1e-9


def test_worst_sharpness_reaches_top_eigenvalue_in_adaptive_geometry(quadratic):
    """max_{‖η‖≤ρ} (|w|⊙η)ᵀH(|w|⊙η)/2 = ρ²/2 · λ_max(diag|w| H diag|w|)."""
    q, rho = quadratic, 0.2
    Dw = np.diag(np.abs(q.w))
    bound = rho**2 / 2 * float(np.linalg.eigvalsh(Dw @ q.H @ Dw)[-1])
    worst = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=rho, n_samples=2, mode="worst", n_steps=40, loss_fn=mse
    )
    avg = gen.adaptive_sharpness(q.model, q.X, q.y, rho=rho, n_samples=10, loss_fn=mse)
    assert worst["value"] >= avg["value"]
    assert worst["value"] <= bound * 1.001 + 1e-7
    assert worst["value"] >= bound * 0.98
    assert worst["n_steps"] == 40 and worst["step_size"] == pytest.approx(rho)


def test_sharpness_is_deterministic_and_rejects_bad_arguments(quadratic):
    q = quadratic
    a = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=0.1, n_samples=3, seed=7, loss_fn=mse
    )
    b = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=0.1, n_samples=3, seed=7, loss_fn=mse
    )
    c = gen.adaptive_sharpness(
        q.model, q.X, q.y, rho=0.1, n_samples=3, seed=8, loss_fn=mse
    )
    assert a["value"] == b["value"] != c["value"]
    with pytest.raises(ValueError, match=r"mode='best'.*'average', 'worst'"):
        gen.adaptive_sharpness(q.model, q.X, q.y, mode="best")
    with pytest.raises(ValueError, match="rho"):
        gen.adaptive_sharpness(q.model, q.X, q.y, rho=0.0)
    with pytest.raises(ValueError, match="no weight selected"):
        gen.adaptive_sharpness(
            q.model, q.X, q.y, loss_fn=mse, weights_filter=lambda v: False
        )


# ------------------------------------------------------------------------------ PAC-Bayes
def test_pac_bayes_sigma_matches_same_draw_reference(quadratic):
    """With common draws e_k, D(σ) = σ² K̂, K̂ = mean_k (|w|⊙e_k)ᵀH(|w|⊙e_k)/2 -> σ = sqrt(tol/K̂)."""
    q, tol, n = quadratic, 0.05, 6
    res = gen.pac_bayes_flatness(
        q.model, q.X, q.y, tolerance=tol, n_samples=n, rtol=1e-3, seed=3, loss_fn=mse
    )
    quad = []
    for k in range(n):
        e = (
            np.random.default_rng([3, k])
            .standard_normal((D, 1))
            .astype(np.float32)[:, 0]
            .astype(np.float64)
        )
        v = np.abs(q.w) * e
        quad.append(v @ q.H @ v / 2)
    sigma_ref = np.sqrt(tol / np.mean(quad))
    assert res["status"] == "ok"
    assert res["sigma"] <= sigma_ref <= res["sigma_upper"] <= res["sigma"] * 1.001
    assert res["resolution"] == pytest.approx(res["sigma_upper"] / res["sigma"] - 1)
    assert res["flatness"] == pytest.approx(1 / res["sigma"] ** 2)
    assert res["deviation"] <= tol


@pytest.mark.parametrize("relative", [True, False])
def test_pac_bayes_sigma_matches_closed_form(quadratic, relative):
    """E[L(w+δ)] - L(w) = σ²/2 Σ_i H_ii w_i² (δ = σ|w|⊙e) or σ²/2 tr H (δ = σe)."""
    q, tol = quadratic, 0.05
    curvature = np.sum(np.diag(q.H) * q.w**2) if relative else np.trace(q.H)
    expected = np.sqrt(2 * tol / curvature)
    res = gen.pac_bayes_flatness(
        q.model,
        q.X,
        q.y,
        tolerance=tol,
        n_samples=32,
        iters=10,
        relative=relative,
        loss_fn=mse,
    )
    assert res["sigma"] == pytest.approx(expected, rel=0.15)  # Monte Carlo: 32 draws
    assert res["relative"] is relative


def test_pac_bayes_bracket_edges_and_accuracy_criterion(quadratic, classifier):
    q = quadratic
    easy = gen.pac_bayes_flatness(
        q.model, q.X, q.y, tolerance=1e9, n_samples=2, loss_fn=mse
    )
    assert easy["status"] == "sigma_max_within_tolerance" and easy["sigma"] == 1.0
    hard = gen.pac_bayes_flatness(
        q.model, q.X, q.y, tolerance=1e-12, n_samples=2, sigma_min=0.1, loss_fn=mse
    )
    assert hard["status"] == "sigma_min_exceeds_tolerance" and hard["sigma"] == 0.1
    m, x, y = classifier.model, classifier.x, classifier.y
    acc = gen.pac_bayes_flatness(
        m, x, y, tolerance=0.1, n_samples=3, iters=6, criterion="accuracy", eps=1e-3
    )
    assert acc["criterion"] == "accuracy" and 1e-6 <= acc["sigma"] <= 1.0
    with pytest.raises(ValueError, match=r"criterion='error'.*'loss', 'accuracy'"):
        gen.pac_bayes_flatness(m, x, y, criterion="error")
    with pytest.raises(ValueError, match="sigma_min"):
        gen.pac_bayes_flatness(m, x, y, sigma_min=2.0, sigma_max=1.0)


# ------------------------------------------------------------------------------ landscapes
def test_filter_normalized_direction_dense_and_conv(classifier):
    m = classifier.model
    variables = gen.perturbed_weights(m)
    assert [v.name for v in variables] == ["kernel", "bias"] * 3  # no BN gamma/beta
    direction = gen.random_direction(m, seed=4)
    for v, d in zip(variables, direction):
        w = v.numpy()
        assert d.shape == w.shape and d.dtype == np.float32
        if w.ndim == 1:
            np.testing.assert_array_equal(d, 0.0)
        else:
            for j in range(w.shape[-1]):  # one filter per output channel / unit
                np.testing.assert_allclose(
                    np.linalg.norm(d[..., j]), np.linalg.norm(w[..., j]), rtol=1e-5
                )
            assert not np.allclose(d, w)
    keep_bias = gen.random_direction(m, seed=4, ignore_bias_bn=False)
    np.testing.assert_array_equal(keep_bias[1], variables[1].numpy())
    raw = gen.random_direction(m, seed=4, filter_normalize=False)
    np.testing.assert_array_equal(
        raw[0],
        np.random.default_rng(4).standard_normal(raw[0].shape).astype(np.float32),
    )
    np.testing.assert_array_equal(
        direction[2], gen.random_direction(m, seed=4)[2]
    )  # deterministic


def test_landscapes_pass_through_base_loss(classifier):
    m, x, y = classifier.model, classifier.x, classifier.y
    base = gen.evaluate(m, x, y)
    one = pd.DataFrame(
        gen.loss_landscape_1d(m, x, y, alphas=[-0.5, 0.0, 0.5], seed=2, batch_size=16)
    )
    assert list(one.columns) == ["alpha", "loss", "accuracy"] and len(one) == 3
    assert one.loc[1, "loss"] == pytest.approx(base["loss"], rel=1e-6)
    assert one.loc[1, "accuracy"] == base["accuracy"]
    assert one.loc[0, "loss"] != pytest.approx(base["loss"])
    two = pd.DataFrame(
        gen.loss_landscape_2d(
            m, x, y, alphas=[-0.5, 0.0, 0.5], betas=[0.0, 0.4], seed=2
        )
    )
    assert list(two.columns) == ["alpha", "beta", "loss", "accuracy"] and len(two) == 6
    origin = two[(two.alpha == 0.0) & (two.beta == 0.0)]
    assert origin["loss"].item() == pytest.approx(base["loss"], rel=1e-6)
    # d1 is the 1-D direction of the same seed: the beta = 0 line is the 1-D landscape
    line = two[two.beta == 0.0].reset_index(drop=True)
    np.testing.assert_allclose(line["loss"], one["loss"], rtol=1e-5)


def test_landscape_on_quadratic_is_the_parabola(quadratic):
    q = quadratic
    d = [np.ones((D, 1), np.float32) / np.sqrt(D)]
    alphas = [-1.0, -0.3, 0.0, 0.7]
    res = pd.DataFrame(
        gen.loss_landscape_1d(q.model, q.X, q.y, alphas, direction=d, loss_fn=mse)
    )
    u = d[0][:, 0].astype(np.float64)
    expected = [np_loss(q, q.w) + a**2 * (u @ q.H @ u) / 2 for a in alphas]
    np.testing.assert_allclose(res["loss"], expected, rtol=1e-3)
    with pytest.raises(ValueError, match="shapes"):
        gen.loss_landscape_1d(
            q.model,
            q.X,
            q.y,
            alphas,
            direction=[np.ones((D,), np.float32)],
            loss_fn=mse,
        )


# ------------------------------------------------------------------------------ restoring
CALLS = {
    "average": lambda m, x, y, **k: gen.adaptive_sharpness(m, x, y, n_samples=2, **k),
    "worst": lambda m, x, y, **k: gen.adaptive_sharpness(
        m, x, y, n_samples=1, n_steps=2, mode="worst", **k
    ),
    "pac_bayes": lambda m, x, y, **k: gen.pac_bayes_flatness(
        m, x, y, n_samples=2, iters=2, **k
    ),
    "landscape_1d": lambda m, x, y, **k: gen.loss_landscape_1d(
        m, x, y, [0.0, 0.3], **k
    ),
    "landscape_2d": lambda m, x, y, **k: gen.loss_landscape_2d(
        m, x, y, [0.0, 0.3], [0.2], **k
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_weights_restored_after_success_and_after_exception(classifier, name):
    m, x, y = classifier.model, classifier.x, classifier.y
    before = weights_of(m)
    out = CALLS[name](m, x, y, batch_size=16)
    assert isinstance(out, (dict, list)) and len(out)
    assert_same_weights(before, m)

    kernel = m.layers[0].kernel
    original = tf.constant(kernel.numpy())

    def failing_loss(y_true, y_pred):  # raises as soon as the kernel has been perturbed
        tf.debugging.assert_equal(kernel, original, message="kernel perturbed")
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel perturbed"):
        CALLS[name](m, x, y, loss_fn=failing_loss, batch_size=16)
    assert_same_weights(before, m)


# ------------------------------------------------------------------------------ bin widths
class FakeQuantized(keras.layers.Layer):
    """Stands in for a layer of the CONVENTIONS.md protocol (integer_parameters())."""

    def __init__(self, scales, **kwargs):
        super().__init__(**kwargs)
        self.scales = scales

    def call(self, x):
        return x

    def integer_parameters(self):
        return [
            types.SimpleNamespace(
                name=name,
                values=np.zeros((4, 3), np.int64),
                scale=np.asarray(s, np.float32),
                granularity=gran,
            )
            for name, s, gran in self.scales
        ]

    def float_parameters(self):
        return {}


def test_bin_widths_duck_types_the_protocol():
    inner = keras.Sequential(
        [
            keras.Input((3,)),
            FakeQuantized([("kernel", [[0.5, 0.25, 1.0]], "column")], name="q_inner"),
        ]
    )
    model = keras.Sequential(
        [
            keras.Input((3,)),
            FakeQuantized(
                [("kernel", [0.1], "scalar"), ("bias", [0.2], "scalar")], name="q1"
            ),
            keras.layers.Dense(3),
            inner,
        ]
    )
    rows = gen.bin_widths(model)
    assert all(list(row) == list(gen.BIN_WIDTH_COLUMNS) for row in rows)
    table = pd.DataFrame(rows)
    assert list(table.columns) == list(gen.BIN_WIDTH_COLUMNS)
    assert table["layer"].tolist() == ["q1", "q1", "q_inner"]
    assert table["parameter"].tolist() == ["kernel", "bias", "kernel"]
    last = table.iloc[2]
    assert (
        last["n_groups"] == 3
        and last["n_params"] == 12
        and last["granularity"] == "column"
    )
    assert (
        last["scale_mean"] == pytest.approx(1.75 / 3)
        and last["scale_min"] == 0.25
        and last["scale_max"] == 1.0
    )
    assert (
        gen.bin_widths(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        == []
    )


def test_quantized_layers_of_lqs_if_available():
    """Integration with lqs.layers (skipped when the concurrent module cannot build a layer)."""
    try:
        from lqs.layers import QDense

        model = keras.Sequential(
            [
                keras.Input((5,)),
                QDense(4, activation="relu"),
                QDense(3, activation="softmax"),
            ]
        )
        for layer in model.layers:
            layer.integer_parameters()
    except Exception as exc:  # pragma: no cover - depends on a module written elsewhere
        pytest.skip(f"lqs.layers.QDense unavailable: {exc!r}")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16)
    table = pd.DataFrame(gen.bin_widths(model))
    assert len(table) >= 2 and (table["scale_min"] > 0).all()
    names = {v.name for v in gen.perturbed_weights(model)}
    assert names <= {"kernel", "bias"}
    before = weights_of(model)
    res = gen.adaptive_sharpness(model, x, y, n_samples=2, mode="worst", n_steps=2)
    assert np.isfinite(res["value"])
    assert_same_weights(before, model)


# ------------------------------------------------------------------------------ σ* resolution
@pytest.mark.parametrize("threshold", [0.0137, 0.29, 1.7])
def test_bisection_resolves_a_known_threshold_to_rtol(threshold):
    """D(σ) = σ/threshold has its crossing of tolerance 1 at σ = threshold exactly."""
    calls = []

    def deviation(sigma):
        calls.append(sigma)
        return sigma / threshold

    rtol = 0.02
    sigma, upper, dev, status = gen._bisect_sigma(deviation, 1e-3, 4.0, 1.0, 40, rtol)
    assert status == "ok"
    assert sigma <= threshold <= upper <= sigma * (1 + rtol)
    assert abs(sigma - threshold) / threshold <= 0.03
    assert dev == pytest.approx(sigma / threshold)
    # the number of bisection steps is the closed form (+2 for the bracket ends)
    assert len(calls) == gen.bisection_steps(1e-3, 4.0, rtol) + 2
    assert gen.bisection_steps(1e-3, 4.0, rtol) == 9
    # 7 steps (the former cpu setting) leave the bracket 1.126 wide: too coarse
    lo, hi, _, st = gen._bisect_sigma(deviation, 1e-3, 4.0, 1.0, 7, rtol)
    assert hi / lo == pytest.approx((4.0 / 1e-3) ** (1 / 2**7)) and st == "unresolved"


def test_pac_bayes_rejects_bad_rtol(quadratic):
    q = quadratic
    with pytest.raises(ValueError, match=r"rtol must be .*>= 0, got -0.1.*rtol=0.02"):
        gen.pac_bayes_flatness(q.model, q.X, q.y, rtol=-0.1, loss_fn=mse)
    with pytest.raises(ValueError, match="rtol must be a positive"):
        gen.bisection_steps(1e-3, 4.0, 0.0)


# ------------------------------------------------------------------------------ adaptive norms
def test_sharpness_reports_zero_weights_and_the_adaptive_norm(quadratic):
    """Zero weights never move; the Gaussian noise's adaptive norm is ρ‖u‖ over the rest."""
    q = quadratic
    model = keras.models.clone_model(q.model)
    w = q.w.copy()
    w[:3] = 0.0
    model.layers[0].kernel.assign(w.astype(np.float32)[:, None])
    res = gen.adaptive_sharpness(
        model, q.X, q.y, rho=0.1, n_samples=3, noise="gaussian", seed=4, loss_fn=mse
    )
    assert res["n_zero"] == 3 and res["n_parameters"] == D
    norms = []
    for k in range(3):
        u = np.random.default_rng([4, k]).standard_normal((D, 1)).astype(np.float32)
        norms.append(0.1 * np.linalg.norm(u[3:, 0].astype(np.float64)))
    assert res["adaptive_norm"] == pytest.approx(np.mean(norms), rel=1e-6)
    sphere = gen.adaptive_sharpness(model, q.X, q.y, rho=0.1, n_samples=2, loss_fn=mse)
    assert (
        sphere["adaptive_norm"] < 0.1
    )  # the zero weights' share of the sphere is lost
    worst = gen.adaptive_sharpness(
        model, q.X, q.y, rho=0.5, n_samples=1, mode="worst", n_steps=2, loss_fn=mse
    )
    assert worst["adaptive_norm"] == 0.5


# ------------------------------------------------------------------------------ which weights
def _fixed_bits_mlp(bits=2):
    from lqs.baselines import FixedBitsDense

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            FixedBitsDense(5, bits=bits, granularity="scalar", activation="relu"),
            keras.layers.BatchNormalization(),
            FixedBitsDense(3, bits=bits, granularity="scalar", activation="softmax"),
        ]
    )
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    model(x)
    return model, x, rng.integers(0, 3, 32)


def test_dequantized_model_holds_q_times_s_and_computes_the_same_function():
    from lqs.layers import QDense

    model, x, _ = _fixed_bits_mlp()
    nested = keras.Sequential([keras.Input((6,)), QDense(4), QDense(3)])
    for m in (model, nested):
        twin = gen.dequantized_model(m)
        quantized = [
            layer for layer in m.layers if hasattr(layer, "integer_parameters")
        ]
        for layer in quantized:
            plain = twin.get_layer(layer.name)
            assert type(plain) is keras.layers.Dense
            for t in layer.integer_parameters():  # NumPy reference: P_q * s
                expected = t.values.astype(np.float64) * t.scale.astype(np.float64)
                np.testing.assert_array_equal(
                    getattr(plain, t.name).numpy(), expected.astype(np.float32)
                )
        np.testing.assert_allclose(
            twin(x, training=False), m(x, training=False), rtol=0, atol=1e-6
        )
        assert not any(hasattr(layer, "integer_parameters") for layer in twin.layers)
    bn = model.layers[1]
    np.testing.assert_array_equal(
        twin_bn := gen.dequantized_model(model).get_layer(bn.name).moving_variance,
        bn.moving_variance,
    )
    assert twin_bn is not bn.moving_variance


def test_frozen_scales_keep_the_grid_of_the_unperturbed_weights():
    """Inside frozen_scales a perturbed kernel is rounded onto the entry grid s₀ (NumPy
    reference); outside, min-max recomputes s from the perturbed maximum."""
    model, x, y = _fixed_bits_mlp(bits=2)
    layer = model.layers[0]
    w0 = layer.kernel.numpy().copy()
    s0 = float(layer.integer_parameters()[0].scale.ravel()[0])
    assert s0 == pytest.approx(np.abs(w0).max() / 1.0)  # Q = 1 at 2 bits
    w1 = w0.copy()
    w1.flat[np.argmax(np.abs(w0))] *= 3.0  # one nudged weight
    with gen.frozen_scales(model) as names:
        assert names == [model.layers[0].name, model.layers[2].name]
        layer.kernel.assign(w1)
        frozen = layer.quantized_kernel().numpy()
        expected = np.clip(np.round(w1 / s0), -1, 1) * s0
        np.testing.assert_allclose(frozen, expected.astype(np.float32), atol=1e-7)
        layer.kernel.assign(w0)  # at the entry weights nothing changes
        np.testing.assert_allclose(
            layer.quantized_kernel().numpy(),
            np.clip(np.round(w0 / s0), -1, 1) * s0,
            atol=1e-7,
        )
    layer.kernel.assign(w1)  # outside: the scale follows the perturbed maximum
    s1 = np.abs(w1).max()
    np.testing.assert_allclose(
        layer.quantized_kernel().numpy(),
        np.clip(np.round(w1 / s1), -1, 1) * s1,
        atol=1e-6,
    )
    layer.kernel.assign(w0)
    assert "_quantize" not in vars(layer)


def test_learned_scales_are_unchanged_by_the_measures():
    """LSQ steps and nested scales are never perturbed (NumPy snapshot before/after)."""
    from lqs import models

    rng = np.random.default_rng(0)
    x, y = rng.random((16, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 16)
    for flavour in ("lsq", "nested"):
        model = models.build_model("mlp", flavour, input_shape=(28, 28, 1), bits=2)
        scales = {v.path: v.numpy().copy() for v in model.weights
                  if v.path.endswith(("scale", "_step"))}  # fmt: skip
        assert scales
        with gen.frozen_scales(model) as names:
            assert names == []
            gen.pac_bayes_flatness(model, x, y, n_samples=1, iters=3)
            gen.adaptive_sharpness(model, x, y, n_samples=1, mode="worst", n_steps=1)
        for v in model.weights:
            if v.path in scales:
                np.testing.assert_array_equal(v.numpy(), scales[v.path])


def test_measures_inside_frozen_scales_do_not_reuse_traces_from_outside():
    """Traced graphs bake the quantizer in: the cache is dropped on entry and on exit."""
    model, x, y = _fixed_bits_mlp(bits=2)
    kw = dict(n_samples=2, seed=1, criterion="loss", tolerance=0.05)
    before = gen.pac_bayes_flatness(model, x, y, **kw)
    with gen.frozen_scales(model):
        frozen = gen.pac_bayes_flatness(model, x, y, **kw)
    after = gen.pac_bayes_flatness(model, x, y, **kw)
    assert before["sigma"] == after["sigma"]
    assert frozen["base_loss"] == pytest.approx(before["base_loss"])
    assert frozen["sigma"] != before["sigma"]


def test_dequantized_model_rejects_what_it_cannot_copy():
    class Odd(keras.layers.Layer):
        def integer_parameters(self):
            return []

        def float_parameters(self):
            return {}

        def build(self, shape):
            self.w = self.add_weight(shape=(1,), name="w")

    model = keras.Sequential([keras.Input((2,)), Odd(name="odd")])
    with pytest.raises(
        ValueError, match=r"'odd' \(Odd\) is neither a Dense nor a Conv2D.*fix"
    ):
        gen.dequantized_model(model)
