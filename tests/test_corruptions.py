"""Tests of companion.chapters.corruptions: contracts, NumPy/stdlib references, severity ordering, determinism."""

from __future__ import annotations

import colorsys
import math

import keras
import numpy as np
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


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_shape_dtype_range_and_severity_ordering(images, name):
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
    assert C.corrupt(x, name, 2).dtype == np.float64


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
    x = smooth_images(2, 8, 8, 3)
    np.testing.assert_array_equal(
        C.corrupt(x, name, 4, seed=3), C.corrupt(x, name, 4, seed=3)
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
        match=r"unknown corruption 'fog'; allowed: gaussian_noise, .*brightness",
    ):
        C.corrupt(x, "fog", 1)
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
    table = C.robustness_table(model, x, y, severities=(1, 5), batch_size=4)
    assert list(table.columns) == ["corruption", "severity", "accuracy", "loss"]
    assert len(table) == 1 + 2 * len(C.CORRUPTIONS)
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
    with pytest.raises(ValueError, match="severity=0"):
        C.robustness_table(model, x, y, severities=(0,))
