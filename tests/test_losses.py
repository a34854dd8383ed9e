"""Tests for lqs.losses: the three loss terms (thesis 3.2) against NumPy, and the training wrapper.

The NumPy references below are written from the formulas in the module docstring, independently
of the implementation: penalties per parameter, averaged over parameters by element count, and
their analytic (sub)gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from lqs.layers import QConv2D, QDense
from lqs.losses import (
    DEFAULT_DEVIATION_FORM,
    DEVIATION_FORMS,
    TERMS,
    LossTermsModel,
    check_rates,
    parameter_penalties,
    penalties,
    quantized_layers,
    with_loss_terms,
)
from lqs.quantizers import NestedQuantizer

#: an STE quantizer (loss-term networks) whose scales start at 4 bits for the data they see
STE4 = NestedQuantizer(scale_gradient="ste", init_bits=4)

# ---------------------------------------------------------------------------- NumPy reference


def _group_axes_np(w: np.ndarray, s: np.ndarray) -> tuple[int, ...]:
    """Axes shared by one scale: all axes for a single scale, else the scale's size-1 axes."""
    if s.size == 1:
        return tuple(range(w.ndim))
    return tuple(i for i, d in enumerate(s.shape) if d == 1)


def np_penalties(
    params: list[tuple[np.ndarray, np.ndarray]], form: str
) -> dict[str, float]:
    n = np.array([w.size for w, _ in params], dtype=np.float64)
    per = {t: [] for t in TERMS}
    for w, s in params:
        w64, s64 = w.astype(np.float64), s.astype(np.float64)
        axes = _group_axes_np(w, s)
        per["inverse"].append(np.mean(1.0 / s64))
        per["max_bin"].append(np.mean(np.max(np.abs(w64) / s64, axis=axes)))
        if form == "reconstructed":
            per["deviation"].append(np.mean(np.abs(w64 - np.floor(w64 / s64) * s64)))
        else:
            per["deviation"].append(np.mean(np.abs(w64 - w64 / s64)))
    return {t: float(np.sum(n * np.array(per[t])) / n.sum()) for t in TERMS}


def np_gradients(params, form: str, term: str):
    """Analytic d(penalty)/dW and d(penalty)/ds for every (W, s) pair."""
    total = float(sum(w.size for w, _ in params))
    grads = []
    for w, s in params:
        w64, s64 = w.astype(np.float64), s.astype(np.float64)
        weight = w.size / total
        axes = _group_axes_np(w, s)
        sb = np.broadcast_to(
            s64.reshape(s64.shape if s.size > 1 else (1,) * w.ndim), w.shape
        )
        reduce = lambda a: np.sum(a, axis=axes, keepdims=True).reshape(s.shape)  # noqa: E731
        if term == "inverse":
            dw = np.zeros_like(w64)
            ds = -weight / s.size / s64**2
        elif term == "max_bin":
            groups = s.size
            ratio = np.abs(w64) / sb
            is_max = ratio == np.max(ratio, axis=axes, keepdims=True)
            dw = np.where(is_max, weight / groups * np.sign(w64) / sb, 0.0)
            ds = reduce(np.where(is_max, -weight / groups * ratio / sb, 0.0))
        elif form == "reconstructed":
            q = np.floor(w64 / sb)
            sign = np.sign(w64 - q * sb)
            dw = sign / total
            ds = reduce(-sign * q / total)
        else:
            sign = np.sign(w64 - w64 / sb)
            dw = sign * (1.0 - 1.0 / sb) / total
            ds = reduce(sign * w64 / sb**2 / total)
        grads.append((dw, ds))
    return grads


# ---------------------------------------------------------------------------------- fixtures


def _tiny_layers(seed: int = 0):
    """A QDense (per-column kernel scales, quantized scalar-scale bias) and a QConv2D (per-filter)."""
    rng = np.random.default_rng(seed)
    dense = QDense(
        3, kernel_granularity="column", quantize_bias=True, scale_gradient="ste"
    )
    dense.build((None, 4))
    conv = QConv2D(
        2, 2, kernel_granularity="filter", quantize_bias=False, scale_gradient="ste"
    )
    conv.build((None, 5, 5, 3))
    dense.kernel.assign(rng.normal(0, 0.3, (4, 3)).astype(np.float32))
    dense.bias.assign(rng.normal(0, 0.1, (3,)).astype(np.float32))
    dense.kernel_quantizer.scale.assign(np.array([[0.05, 0.11, 0.2]], np.float32))
    dense.bias_quantizer.scale.assign(np.array([0.03], np.float32))
    conv.kernel.assign(rng.normal(0, 0.3, (2, 2, 3, 2)).astype(np.float32))
    conv.kernel_quantizer.scale.assign(
        np.array([0.07, 0.13], np.float32).reshape(1, 1, 1, 2)
    )
    variables = [
        (dense.kernel, dense.kernel_quantizer.scale),
        (dense.bias, dense.bias_quantizer.scale),
        (conv.kernel, conv.kernel_quantizer.scale),
    ]
    return [dense, conv], variables


def _np_params(variables):
    return [(v.numpy(), s.numpy()) for v, s in variables]


# ---------------------------------------------------------------------------------- penalties


@pytest.mark.parametrize("form", DEVIATION_FORMS)
def test_penalties_match_numpy_with_parameter_count_weighting(form):
    layers, variables = _tiny_layers()
    got = penalties(layers, deviation_form=form)
    want = np_penalties(_np_params(variables), form)
    assert set(got) == set(TERMS)
    for term in TERMS:
        np.testing.assert_allclose(
            float(got[term]), want[term], rtol=1e-5, err_msg=term
        )


def test_penalties_single_layer_and_model_input():
    layers, variables = _tiny_layers(1)
    # one layer alone: only its own parameters (kernel 12 elements + bias 3) enter the average
    got = penalties(layers[0])
    want = np_penalties(_np_params(variables[:2]), "implementation")
    for term in TERMS:
        np.testing.assert_allclose(float(got[term]), want[term], rtol=1e-5)
    # a Sequential holding quantized layers is searched recursively (nested model included)
    inner = keras.Sequential(
        [keras.Input((4,)), QDense(2, kernel_quantizer=STE4, bias_quantizer=STE4)]
    )
    outer = keras.Sequential(
        [
            keras.Input((6,)),
            QDense(4, kernel_quantizer=STE4, bias_quantizer=STE4),
            inner,
        ]
    )
    assert len(quantized_layers(outer)) == 2
    assert float(penalties(outer)["inverse"]) > 0


@pytest.mark.parametrize(
    "term, form",
    [(t, "implementation") for t in TERMS] + [("deviation", "reconstructed")],
)  # the deviation form only changes the deviation term
def test_penalty_gradients_match_analytic(term, form):
    layers, variables = _tiny_layers(2)
    flat = [v for pair in variables for v in pair]
    with tf.GradientTape() as tape:
        value = penalties(layers, deviation_form=form)[term]
    grads = tape.gradient(value, flat)
    want = np_gradients(_np_params(variables), form, term)
    for i, (dw, ds) in enumerate(want):
        gw, gs = grads[2 * i], grads[2 * i + 1]
        gw = np.zeros_like(dw) if gw is None else gw.numpy()
        gs = np.zeros_like(ds) if gs is None else gs.numpy()
        np.testing.assert_allclose(
            gw, dw, rtol=1e-4, atol=1e-7, err_msg=f"dW of parameter {i}"
        )
        np.testing.assert_allclose(
            gs, ds, rtol=1e-4, atol=1e-7, err_msg=f"ds of parameter {i}"
        )


def test_penalties_errors():
    with pytest.raises(ValueError, match="no quantized layers"):
        penalties(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="not built"):
        penalties([QDense(2)])
    layers, _ = _tiny_layers()
    with pytest.raises(
        ValueError, match="deviation_form 'exact'.*'reconstructed', 'implementation'"
    ):
        penalties(layers, deviation_form="exact")


def test_default_deviation_form_is_the_implementations():
    """The default is the form that produced the thesis's results: mean|W - W/s| (NumPy)."""
    layers, variables = _tiny_layers(3)
    params = _np_params(variables)
    want = np_penalties(params, "implementation")["deviation"]
    other = np_penalties(params, "reconstructed")["deviation"]
    assert abs(want - other) > 1e-3 * abs(want)  # the two forms differ on this data
    np.testing.assert_allclose(float(penalties(layers)["deviation"]), want, rtol=1e-5)
    w, s = params[0]
    np.testing.assert_allclose(
        float(parameter_penalties(w, s)["deviation"]),
        np.mean(np.abs(w.astype(np.float64) - w / s.astype(np.float64))),
        rtol=1e-5,
    )
    wrapped = with_loss_terms(_mlp(), {"deviation": 1.0})
    assert wrapped.deviation_form == "implementation"
    assert LossTermsModel(_mlp()).deviation_form == "implementation"
    assert DEFAULT_DEVIATION_FORM == "implementation" in DEVIATION_FORMS


# -------------------------------------------------------------------------------------- rates


def test_check_rates():
    assert check_rates({"inverse": 1e-9}) == {
        "inverse": 1e-9,
        "max_bin": 0.0,
        "deviation": 0.0,
    }
    assert check_rates({}) == {t: 0.0 for t in TERMS}
    with pytest.raises(ValueError, match=r"'max_bin'.*-0\.5"):
        check_rates({"max_bin": -0.5})
    with pytest.raises(
        ValueError, match="'difference'.*'inverse', 'max_bin', 'deviation'"
    ):
        check_rates({"difference": 1.0})
    with pytest.raises(ValueError, match="'inverse'.*nan"):
        check_rates({"inverse": float("nan")})
    with pytest.raises(ValueError, match="'inverse'.*'a lot'"):
        check_rates({"inverse": "a lot"})


# ------------------------------------------------------------------------------ training model


def _mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            QDense(
                8,
                activation="relu",
                kernel_quantizer=STE4,
                bias_quantizer=STE4,
                name="d1",
            ),
            QDense(
                2,
                activation="softmax",
                kernel_quantizer=STE4,
                bias_quantizer=STE4,
                name="d2",
            ),
        ],
        name="mlp",
    )


def _data(n: int = 64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def _scales(model) -> list[np.ndarray]:
    return [
        q.scale.numpy().copy()
        for layer in quantized_layers(model)
        for q in layer.quantizers()
    ]


def test_with_loss_terms_validates():
    with pytest.raises(ValueError, match="'inverse'.*-1"):
        with_loss_terms(_mlp(), {"inverse": -1})
    with pytest.raises(ValueError, match="unknown loss term 'bins'"):
        with_loss_terms(_mlp(), {"bins": 1.0})
    with pytest.raises(ValueError, match="deviation_form"):
        with_loss_terms(_mlp(), {}, deviation_form="text")
    with pytest.raises(ValueError, match="quantized layers"):
        with_loss_terms(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
            {"inverse": 1.0},
        )


def test_fit_history_has_every_penalty_and_inverse_grows_scales():
    x, y = _data()
    runs = {}
    for label, rates in (("zero", {}), ("inverse", {"inverse": 1e-2})):
        model = with_loss_terms(_mlp(), rates)
        assert model.layers[0].name == "d1"  # the wrapper is transparent
        before = _scales(model)
        model.compile(
            keras.optimizers.Adam(1e-2),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        for term in TERMS:
            assert len(history.history[f"penalty_{term}"]) == 2, term
        runs[label] = (before, _scales(model))
    before, after = runs["zero"]
    for b, a in zip(
        before, after
    ):  # "ste": no gradient for the scale without a loss term
        np.testing.assert_array_equal(a, b)
    before, after = runs["inverse"]
    for b, a, zero in zip(before, after, runs["zero"][1]):
        assert np.all(a > b) and np.all(a > zero)


def test_total_loss_is_task_loss_plus_weighted_penalties():
    x, y = _data(32)
    rates = {"inverse": 1e-3, "max_bin": 1e-2, "deviation": 2.0}
    model = with_loss_terms(_mlp(), rates)
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    pens = {t: float(v) for t, v in model.penalties().items()}
    task = float(keras.losses.SparseCategoricalCrossentropy()(y, model.network(x)))
    want = task + sum(rates[t] * pens[t] for t in TERMS)
    np.testing.assert_allclose(
        float(model.compute_loss(x, y, model(x))), want, rtol=1e-5
    )
    logs = model.train_on_batch(
        x, y, return_dict=True
    )  # loss of the forward pass before the update
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    for t in TERMS:
        np.testing.assert_allclose(logs[f"penalty_{t}"], pens[t], rtol=1e-5)


def test_loss_terms_model_save_load_roundtrip(tmp_path):
    x, y = _data(32)
    model = with_loss_terms(_mlp(), {"max_bin": 1e-3}, deviation_form="reconstructed")
    for layer in quantized_layers(
        model
    ):  # move the scales away from their initial values
        for q in layer.quantizers():
            q.scale.assign(q.scale * 1.7)
    path = tmp_path / "loss_terms.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, LossTermsModel)
    assert loaded.rates == model.rates and loaded.deviation_form == "reconstructed"
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    for term in TERMS:
        np.testing.assert_allclose(
            float(loaded.penalties()[term]), float(model.penalties()[term]), rtol=1e-6
        )
    # wrapping a wrapper replaces its rates instead of nesting
    again = with_loss_terms(loaded, {"inverse": 1.0})
    assert again.network is loaded.network and again.rates["max_bin"] == 0.0
