"""Tests of companion.chapters.corruptions: contracts, NumPy/stdlib references, severity ordering, determinism."""

from __future__ import annotations

import colorsys
import math

import keras
import numpy as np
import pandas as pd
import pytest

from companion.chapters import corruptions as C
from lqs import generalization as gen


def smooth_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Blocky random images in [0.1, 0.9] (so that blur and JPEG have something to change)."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, h // 4 + 1, w // 4 + 1, c))
    img = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)[:, :h, :w]
    return (0.1 + 0.8 * img).astype(np.float32)


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def images(request):
    return smooth_images(6, 16, 12, request.param)


ORDERED = C.CIFAR10_C + ("shot_noise", "impulse_noise", "scale", "translate", "rotate")


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_shape_dtype_and_range_at_every_level(images, name):
    for severity in C.SEVERITIES[: len(C.SEVERITY_PARAMETERS[name])]:
        out = C.corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.abs(out - images).max() > 0


@pytest.mark.parametrize("name", ORDERED)
def test_severity_ordering(images, name):
    distances = []
    for severity in C.SEVERITIES:
        out = C.corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0.0 and out.max() <= 1.0
        distances.append(float(np.mean(np.abs(out - images))))
    assert distances[0] > 0
    assert all(b > a for a, b in zip(distances, distances[1:], strict=False)), distances


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_float64_input_keeps_its_dtype(name):
    x = smooth_images(2, 8, 8, 3).astype(np.float64)
    assert C.corrupt(x, name, 1).dtype == np.float64


def test_gaussian_noise_reference_and_determinism():
    x = smooth_images(3, 8, 8, 3)
    a = C.corrupt(x, "gaussian_noise", 3, seed=5)
    np.testing.assert_array_equal(a, C.corrupt(x, "gaussian_noise", 3, seed=5))
    assert not np.array_equal(a, C.corrupt(x, "gaussian_noise", 3, seed=6))
    noise = np.random.default_rng(5).standard_normal(x.shape, dtype=np.float32)
    np.testing.assert_allclose(a, np.clip(x + 0.08 * noise, 0, 1), atol=1e-6)
    # the same seed gives nested noise across severities: x + σ_s n
    b = C.corrupt(x, "gaussian_noise", 5, seed=5)
    np.testing.assert_allclose(b, np.clip(x + 0.10 * noise, 0, 1), atol=1e-6)


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_deterministic_with_seed(name):
    x = smooth_images(2, 12, 12, 3)
    severity = len(C.SEVERITY_PARAMETERS[name])
    np.testing.assert_array_equal(
        C.corrupt(x, name, severity, seed=3), C.corrupt(x, name, severity, seed=3)
    )


def test_gaussian_blur_matches_direct_2d_convolution():
    x = smooth_images(2, 9, 7, 3, seed=2)
    sigma = C.SEVERITY_PARAMETERS["gaussian_blur"][4]
    radius = math.ceil(4 * sigma)
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    padded = np.pad(
        x.astype(np.float64),
        ((0, 0), (radius, radius), (radius, radius), (0, 0)),
        mode="edge",
    )
    ref = np.zeros(x.shape)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            patch = padded[:, i : i + 2 * radius + 1, j : j + 2 * radius + 1, :]
            ref[:, i, j, :] = np.einsum("nabc,ab->nc", patch, g)
    np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", 5), ref, atol=1e-6)


def test_contrast_reference():
    x = smooth_images(3, 8, 8, 3, seed=4)
    m = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        C.corrupt(x, "contrast", 2), (x - m) * 0.5 + m, atol=1e-6
    )


def test_brightness_reference_rgb_and_gray():
    x = smooth_images(2, 4, 4, 3, seed=5)
    out = C.corrupt(x, "brightness", 4)
    for pixel, got in zip(x.reshape(-1, 3), out.reshape(-1, 3), strict=True):
        h, s, v = colorsys.rgb_to_hsv(*pixel.astype(np.float64))
        np.testing.assert_allclose(
            got, colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0)), atol=1e-5
        )
    gray = x[..., :1]
    np.testing.assert_allclose(
        C.corrupt(gray, "brightness", 4), np.clip(gray + 0.2, 0, 1), atol=1e-7
    )


@pytest.mark.parametrize("name", ["gaussian_blur", "contrast"])
def test_constant_images_are_unchanged(name):
    x = np.full((2, 8, 8, 3), 0.37, np.float32)
    np.testing.assert_allclose(C.corrupt(x, name, 5), x, atol=1e-6)


def test_brightness_leaves_white_white():
    x = np.ones((1, 5, 5, 3), np.float32)
    np.testing.assert_array_equal(C.corrupt(x, "brightness", 5), x)


def test_jpeg_one_and_three_channels():
    gray = smooth_images(3, 16, 16, 1, seed=6)
    rgb = np.repeat(gray, 3, axis=-1)
    for severity in (1, 5):
        g = C.corrupt(gray, "jpeg", severity)
        c = C.corrupt(rgb, "jpeg", severity)
        assert g.shape == gray.shape and c.shape == rgb.shape
        # a gray RGB image has no chroma: the same luminance coding as the 1-channel image
        assert np.abs(c - np.repeat(g, 3, axis=-1)).max() <= 2 / 255
        # the result lies on the 8-bit grid
        np.testing.assert_allclose(g * 255, np.round(g * 255), atol=1e-4)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        C.corrupt(np.zeros((1, 8, 8, 2), np.float32), "jpeg", 1)


@pytest.mark.parametrize("severity", [0, 6, 2.5, True, "3"])
def test_bad_severity_names_the_value_and_the_allowed_ones(severity):
    with pytest.raises(ValueError, match=r"severity=.*allowed: 1, 2, 3, 4, 5"):
        C.corrupt(smooth_images(1, 4, 4, 1), "contrast", severity)


def test_bad_name_and_bad_images():
    x = smooth_images(1, 4, 4, 1)
    with pytest.raises(
        ValueError,
        match=r"unknown corruption 'fog'; allowed: gaussian_noise, .*dotted_line; fix",
    ):
        C.corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match=r"severity=2 of stripe .*allowed: 1; fix"):
        C.corrupt(x, "stripe", 2)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        C.corrupt(x[0], "contrast", 1)
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt((x * 255).astype(np.uint8), "contrast", 1)


def test_robustness_table():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    x = smooth_images(10, 8, 8, 1, seed=7)
    y = np.arange(10) % 4
    table = C.robustness_table(
        model, x, y, severities=(1, 5), corruptions=C.CIFAR10_C, batch_size=4
    )
    assert list(table.columns) == ["corruption", "severity", "accuracy", "loss"]
    assert len(table) == 1 + 2 * len(C.CIFAR10_C)
    clean = table.iloc[0]
    assert clean["corruption"] == "clean" and clean["severity"] == 0
    ref = gen.evaluate(model, x, y)
    assert clean["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert clean["accuracy"] == ref["accuracy"]
    row = table[(table.corruption == "contrast") & (table.severity == 5)]
    assert row["loss"].item() == pytest.approx(
        gen.evaluate(model, C.corrupt(x, "contrast", 5), y)["loss"], rel=1e-6
    )
    with pytest.raises(ValueError, match="unknown corruption"):
        C.robustness_table(model, x, y, corruptions=("blur",))
    # default: MNIST-C's corruptions, each at MNIST-C's level
    mnist_c = C.robustness_table(model, x, y, batch_size=4)
    assert mnist_c["corruption"].tolist() == ["clean", *C.MNIST_C]
    assert mnist_c["severity"].tolist()[1:] == [
        C.MNIST_C_SEVERITY[n] for n in C.MNIST_C
    ]
    with pytest.raises(ValueError, match="severity=0"):
        C.robustness_table(model, x, y, severities=(0,))


# ------------------------------------------------------------------------------ MNIST-C style
def test_stripe_inverts_the_border_quarters():
    x = np.tile(np.linspace(0.0, 0.7, 8, dtype=np.float32), (1, 3, 1))[..., None]
    out = C.corrupt(x, "stripe", 1)
    expected = x.copy()
    expected[:, :, [0, 1, 6, 7]] = 1.0 - x[:, :, [0, 1, 6, 7]]  # W // 4 = 2 columns
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_shot_and_impulse_noise_references():
    x = smooth_images(2, 6, 6, 1, seed=3)
    counts = np.random.default_rng(7).poisson(x.astype(np.float64) * 3)
    np.testing.assert_allclose(
        C.corrupt(x, "shot_noise", 5, seed=7), np.clip(counts / 3, 0, 1), atol=1e-7
    )
    rng = np.random.default_rng(8)
    flip, salt = rng.random(x.shape) < 0.17, rng.random(x.shape) < 0.5
    expected = np.where(flip, salt.astype(np.float32), x)
    np.testing.assert_array_equal(C.corrupt(x, "impulse_noise", 4, seed=8), expected)


def test_translate_is_an_integer_shift_with_zeros_entering():
    x = smooth_images(3, 7, 9, 1, seed=1)
    out = C.corrupt(x, "translate", 2, seed=4)  # t = 2 pixels
    signs = np.random.default_rng(4).choice([-1.0, 1.0], size=(3, 2))
    for img, got, (sx, sy) in zip(x, out, signs, strict=True):
        dx, dy = (
            int(2 * sx),
            int(2 * sy),
        )  # output (col, row) reads (col + dx, row + dy)
        ref = np.zeros_like(img)
        for r in range(7):
            for c in range(9):
                if 0 <= r + dy < 7 and 0 <= c + dx < 9:
                    ref[r, c] = img[r + dy, c + dx]
        np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("name", ["scale", "rotate", "shear"])
def test_affine_corruptions_on_a_linear_ramp(name):
    """Bilinear interpolation is exact on x = a·col + b·row: output p reads A(p - c) + c."""
    h = w = 15
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = (0.3 + 0.02 * cols + 0.01 * rows)[None, ..., None].astype(np.float64)
    severity = C.MNIST_C_SEVERITY[name]
    value = C.SEVERITY_PARAMETERS[name][severity - 1]
    sign = np.random.default_rng(2).choice([-1.0, 1.0], size=(1, 1))[0, 0]
    a = {"scale": np.eye(2) * value,
         "rotate": np.array([[np.cos(sign * value), -np.sin(sign * value)],
                             [np.sin(sign * value), np.cos(sign * value)]]),
         "shear": np.array([[1.0, sign * value], [0.0, 1.0]])}[name]  # fmt: skip
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    out = C.corrupt(ramp, name, severity, seed=2)[0, ..., 0]
    for r in range(h):
        for c in range(w):
            src_c, src_r = a @ (np.array([c, r]) - centre) + centre
            if 0 <= src_c <= w - 1 and 0 <= src_r <= h - 1:
                assert out[r, c] == pytest.approx(0.3 + 0.02 * src_c + 0.01 * src_r)


def test_motion_blur_keeps_the_mass_of_a_dot_and_streaks_it_along_the_angle():
    x = np.zeros((1, 41, 41, 1), np.float64)
    x[0, 20, 20, 0] = 1.0
    out = C.corrupt(x, "motion_blur", 1, seed=5)[0, ..., 0]  # r = 10, σ = 3
    phi = np.deg2rad(np.random.default_rng(5).uniform(-45, 45, 1)[0])
    t = np.arange(11)
    g = np.exp(-(t**2) / 18.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-9)
    rows, cols = np.mgrid[:41, :41]
    mean_t = (
        g * t
    ).sum() / g.sum()  # output p = dot + t·u: the streak's centre of mass
    assert (cols * out).sum() - 20 == pytest.approx(mean_t * np.cos(phi), abs=1e-6)
    assert (rows * out).sum() - 20 == pytest.approx(mean_t * np.sin(phi), abs=1e-6)


def test_glass_blur_leaves_constant_images_and_moves_pixels_locally():
    flat = np.full((2, 10, 10, 1), 0.4, np.float32)
    np.testing.assert_allclose(C.corrupt(flat, "glass_blur", 1), flat, atol=1e-6)
    x = smooth_images(2, 12, 12, 1)
    out = C.corrupt(x, "glass_blur", 1, seed=1)
    assert 0 < np.abs(out - x).mean() < 0.2


def test_dotted_line_hand_computed():
    x = np.zeros((1, 5, 8, 1), np.float32)
    out = C.corrupt(x, "dotted_line", 1, seed=6)[0, ..., 0]
    r0, r1 = np.random.default_rng(6).integers(0, 4, size=(1, 2))[0]
    for r in range(5):
        for c in range(8):
            d = min(abs(r - (r0 + (r1 - r0) / 7 * c)), 2.3 - 1e-10)
            on = (c // 2) % 2 == 1  # columns 2-3 and 6-7
            ref = np.clip(1 + np.log(1 - d / 2.3), 0, 1) if on else 0.0
            assert out[r, c] == pytest.approx(ref, abs=1e-6)


def test_robustness_metrics_hand_computed():
    table = pd.DataFrame(
        {"corruption": ["clean", "rotate", "stripe"], "severity": [0, 2, 1],
         "accuracy": [0.9, 0.8, 0.6], "loss": [0.30, 0.50, 1.10]}
    )  # fmt: skip
    out = C.robustness_metrics(table, train_loss=0.05)
    np.testing.assert_allclose(out["loss_gap"], [0.25, 0.45, 1.05])
    np.testing.assert_allclose(out["error_ratio"], [1.0, 2.0, 4.0])
    perfect = table.assign(accuracy=[1.0, 0.8, 0.6])
    assert C.robustness_metrics(perfect, 0.0)["error_ratio"].isna().all()
    with pytest.raises(ValueError, match="2 rows with corruption='clean'.*exactly one"):
        C.robustness_metrics(pd.concat([table, table.iloc[:1]]), 0.0)
