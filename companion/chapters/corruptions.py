"""Image corruptions generated locally, and the robustness table of a model.

QGen (AskariHemmat et al., 2024) compares quantized and full-precision models on distorted
data (CIFAR-10-C / ImageNet-C, Hendrycks & Dietterich, 2019). Those data sets cannot be
downloaded here, so this module re-implements two suites with NumPy and TensorFlow only. They
follow the published definitions but are not bit-identical to the published files (own random
numbers, own interpolation, blur and JPEG code); results must be labelled "locally generated
corruptions".

* :data:`CIFAR10_C`: five corruptions with the *CIFAR-10-C* parameters of Hendrycks &
  Dietterich's ``make_cifar_c.py`` (meant for 32×32 colour images) at severities 1..5.
* :data:`MNIST_C`: ten of the fifteen corruptions of MNIST-C (Mu & Gilmer, 2019, code
  ``google-research/mnist-c``), made for 28×28 grayscale digits: they act on the digit's
  shape and strokes (affine distortions, blur, added lines, inverted stripes, noise), where
  the CIFAR parameters barely change an MNIST image. MNIST-C evaluates each at one level
  (:data:`MNIST_C_SEVERITY`); the five levels of its code are available too.

Inputs are image batches ``x`` of shape ``(N, H, W, C)``, floating point in ``[0, 1]``; outputs
have the same shape and dtype and are clipped to ``[0, 1]``. Geometric corruptions map every
output pixel ``p`` (``(column, row)``, centre ``c = ((W-1)/2, (H-1)/2)``) to the input point
``A (p - c) + c`` and interpolate bilinearly, zero outside the image (skimage's ``warp``
with ``order=1``, ``mode="constant"``, as MNIST-C).

==================  ======================================================  ================================
corruption          definition                                              parameter, severity 1..5
==================  ======================================================  ================================
``gaussian_noise``  ``x + σ n``, ``n ~ N(0, 1)`` i.i.d. per pixel/channel   σ = 0.04, 0.06, 0.08, 0.09, 0.10
``gaussian_blur``   separable Gaussian filter of std σ pixels, radius       σ = 0.4, 0.6, 0.7, 0.8, 1.0
                    ``ceil(4σ)``, edge pixels repeated (skimage "nearest")
``contrast``        ``(x - m) c + m``, ``m`` the per-image, per-channel     c = 0.75, 0.5, 0.4, 0.3, 0.15
                    mean
``jpeg``            JPEG encode/decode at quality q of the 8-bit image      q = 80, 65, 58, 50, 40
                    (``tf.image.adjust_jpeg_quality``, 1 or 3 channels)
``brightness``      RGB: HSV value channel ``v + b``, clipped; 1 channel    b = 0.05, 0.1, 0.15, 0.2, 0.3
                    (or not 3): ``x + b``
``shot_noise``      ``Poisson(c x) / c``                                    c = 60, 25, 12, 5, **3**
``impulse_noise``   each pixel, with probability a, set to 0 or 1 (even)    a = .03, .06, .09, **.17**, .27
``glass_blur``      blur σ, then ``k`` sweeps swapping each pixel (prob.    (σ, δ, k) = **(0.7, 1, 2)**,
                    1/2) with one at offset in ``[-δ, δ)²``, blur σ again   (0.9, 2, 1), (1, 2, 3),
                                                                            (1.1, 3, 2), (1.5, 4, 2)
``motion_blur``     mean along a line at a random angle in [-45°, 45°],     (r, σ) = **(10, 3)**, (15, 5),
                    one-sided Gaussian weights ``exp(-t²/2σ²)``, t = 0..r   (15, 8), (15, 12), (20, 15)
``shear``           ``A = [[1, ±s], [0, 1]]`` (sign random per image)       s = 0.2, **0.4**, 0.6, 0.8, 1.0
``scale``           ``A = f I``: the digit shrinks by ``1/f``               f = 1/.9, 1/.8, **1/.7**, 1/.6, 1/.5
``rotate``          ``A`` = rotation by ±θ radians (sign random per image)  θ = 0.2, **0.4**, 0.6, 0.8, 1.0
``translate``       shift by ``(±t, ±t)`` pixels (signs random per image)   t = 1, 2, **3**, 4, 5
``stripe``          columns ``[0, W/4)`` and ``[W - W/4, W)`` inverted       one level
                    (``1 - x``)
``dotted_line``     ``x + ℓ``, ``ℓ = clip(1 + log(1 - d/2.3), 0, 1)`` for   one level
                    the distance ``d`` (rows) to a random line from the
                    left to the right edge; every other 2-column part off
==================  ======================================================  ================================

(bold: the MNIST-C level.) Random corruptions draw from ``numpy.random.default_rng(seed)``;
the noise corruptions draw the same numbers at every severity.

References
----------
- D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
  and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261 (parameters from
  https://github.com/hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``)
- N. Mu and J. Gilmer, "MNIST-C: A Robustness Benchmark for Computer Vision", ICML 2019
  workshop, https://arxiv.org/abs/1906.02337 (https://github.com/google-research/mnist-c)
- M. AskariHemmat et al., "QGen: On the Ability to Generalize in Quantization Aware Training",
  2024, https://arxiv.org/abs/2404.11769
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lqs.generalization import LossFn, evaluate

__all__ = [
    "CIFAR10_C",
    "MNIST_C",
    "CORRUPTIONS",
    "SEVERITIES",
    "SEVERITY_PARAMETERS",
    "MNIST_C_SEVERITY",
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "jpeg",
    "brightness",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "translate",
    "stripe",
    "dotted_line",
    "corrupt",
    "default_severities",
    "robustness_table",
    "robustness_metrics",
]

#: the CIFAR-10-C corruptions (Hendrycks & Dietterich's CIFAR parameters)
CIFAR10_C: tuple[str, ...] = (
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "jpeg",
    "brightness",
)
#: the MNIST-C corruptions implemented here (10 of MNIST-C's 15; not fog, spatter, zigzag,
#: canny edges, brightness)
MNIST_C: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "translate",
    "stripe",
    "dotted_line",
)
CORRUPTIONS: tuple[str, ...] = CIFAR10_C + MNIST_C
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: the parameter of each corruption per severity (CIFAR-10-C values of Hendrycks &
#: Dietterich; MNIST-C values of Mu & Gilmer's code)
SEVERITY_PARAMETERS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur std in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast factor
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # fraction of pixels flipped
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # radius, std
    "shear": (0.2, 0.4, 0.6, 0.8, 1.0),
    "scale": (1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5),
    "rotate": (0.2, 0.4, 0.6, 0.8, 1.0),  # radians
    "translate": (1, 2, 3, 4, 5),  # pixels
    "stripe": (None,),
    "dotted_line": (None,),
}
#: the level at which MNIST-C evaluates each of its corruptions
MNIST_C_SEVERITY: dict[str, int] = {
    "shot_noise": 5, "impulse_noise": 4, "glass_blur": 1, "motion_blur": 1, "shear": 2,
    "scale": 3, "rotate": 2, "translate": 3, "stripe": 1, "dotted_line": 1,
}  # fmt: skip


def _check_images(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"images must be floating point in [0, 1], got dtype {x.dtype}; use x / 255"
        )
    return x


def _check_name(name: Any) -> str:
    if name not in SEVERITY_PARAMETERS:
        raise ValueError(
            f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}; fix: pick "
            "one of these (CIFAR-10-C: the first five, MNIST-C: the rest)"
        )
    return str(name)


def _check_severity(severity: Any, name: str | None = None) -> int:
    levels = len(SEVERITY_PARAMETERS[name]) if name else len(SEVERITIES)
    allowed = SEVERITIES[:levels]
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or severity not in allowed
    ):
        which = f" of {name}" if name else ""
        raise ValueError(
            f"severity={severity!r}{which} is not supported; allowed: "
            f"{', '.join(map(str, allowed))}; fix: pass one of these integers"
        )
    return int(severity)


def _parameter(name: str, severity: int) -> Any:
    return SEVERITY_PARAMETERS[name][_check_severity(severity, name) - 1]


def _finish(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.clip(out, 0.0, 1.0).astype(like.dtype, copy=False)


def gaussian_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise: ``clip(x + σ n, 0, 1)``, ``n ~ N(0, 1)`` from ``default_rng(seed)``.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> σ = 0.04, 0.06, 0.08, 0.09, 0.10.
        seed: seed of the noise (the same for every severity).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    sigma = _parameter("gaussian_noise", severity)
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return _finish(x.astype(np.float32) + sigma * noise, x)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(4.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="edge")
    size = x.shape[axis]
    out = np.zeros_like(x)
    for i, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(i, i + size), axis=axis)
    return out


def gaussian_blur(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Gaussian blur with std σ pixels, separable (rows then columns), edges repeated.

    ``y = G_σ * x`` per channel, with the sampled, normalised kernel
    ``g_t ∝ exp(-t²/(2σ²))``, ``|t| ≤ ceil(4σ)`` (skimage's ``gaussian`` with truncate 4 and
    mode ``"nearest"``, as used for CIFAR-10-C).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> σ = 0.4, 0.6, 0.7, 0.8, 1.0.
        seed: unused (deterministic corruption), accepted for a uniform signature.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    kernel = _gaussian_kernel(_parameter("gaussian_blur", severity))
    out = _blur_axis(x.astype(np.float64), kernel, axis=1)
    out = _blur_axis(out, kernel, axis=2)
    return _finish(out, x)


def contrast(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Contrast reduction towards the per-image, per-channel mean: ``(x - m) c + m``.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> c = 0.75, 0.5, 0.4, 0.3, 0.15.
        seed: unused (deterministic corruption).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    c = _parameter("contrast", severity)
    xf = x.astype(np.float64)
    mean = xf.mean(axis=(1, 2), keepdims=True)
    return _finish((xf - mean) * c + mean, x)


def jpeg(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """JPEG compression artefacts: round to 8 bits, encode/decode at quality q, divide by 255.

    Each image goes through ``tf.image.adjust_jpeg_quality`` (1 or 3 channels; the op works
    on one image at a time).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``, ``C`` in ``{1, 3}``.
        severity: 1..5 -> q = 80, 65, 58, 50, 40.
        seed: unused (deterministic corruption).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    if x.shape[-1] not in (1, 3):
        raise ValueError(
            f"jpeg needs 1 or 3 channels, got {x.shape[-1]} (shape {x.shape})"
        )
    quality = int(_parameter("jpeg", severity))
    as_bytes = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    out = np.empty(x.shape, np.float32)
    for i, image in enumerate(as_bytes):
        out[i] = (
            tf.image.adjust_jpeg_quality(image, quality).numpy().astype(np.float32)
            / 255.0
        )
    return _finish(out, x)


def brightness(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Brightness increase: ``v ← clip(v + b, 0, 1)`` on the HSV value channel.

    For RGB images (``C = 3``) the images go to HSV, ``b`` is added to the value and the
    result goes back to RGB (``tf.image.rgb_to_hsv``/``hsv_to_rgb``). For grayscale (the value
    *is* the pixel) and any other channel count, ``b`` is added to every channel.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> b = 0.05, 0.1, 0.15, 0.2, 0.3.
        seed: unused (deterministic corruption).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    b = _parameter("brightness", severity)
    xf = np.clip(x.astype(np.float32), 0.0, 1.0)
    if x.shape[-1] == 3:
        hsv = tf.image.rgb_to_hsv(xf).numpy()
        hsv[..., 2] = np.clip(hsv[..., 2] + b, 0.0, 1.0)
        out = tf.image.hsv_to_rgb(hsv).numpy()
    else:
        out = xf + b
    return _finish(out, x)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(N, H, W, C)`` images (float64), edges repeated."""
    kernel = _gaussian_kernel(sigma)
    return _blur_axis(_blur_axis(x.astype(np.float64), kernel, 1), kernel, 2)


def shot_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Photon (Poisson) noise: ``Poisson(c x) / c``, draws from ``default_rng(seed)``.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> c = 60, 25, 12, 5, 3 (MNIST-C: 3).
        seed: seed of the draws.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    c = float(_parameter("shot_noise", severity))
    counts = np.random.default_rng(seed).poisson(
        np.clip(x, 0, 1).astype(np.float64) * c
    )
    return _finish(counts / c, x)


def impulse_noise(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Salt-and-pepper noise: each value with probability ``a`` becomes 1 or 0 (even odds).

    With ``r, t ~ U[0, 1)`` per value from ``default_rng(seed)`` (``r`` for every value first,
    then ``t``): ``y = 1`` where ``r < a`` and ``t < 1/2``, ``y = 0`` where ``r < a`` and
    ``t ≥ 1/2``, else ``y = x`` (skimage's ``random_noise(mode="s&p")``).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> a = 0.03, 0.06, 0.09, 0.17, 0.27 (MNIST-C: 0.17).
        seed: seed of the draws.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    amount = float(_parameter("impulse_noise", severity))
    rng = np.random.default_rng(seed)
    flipped = rng.random(x.shape) < amount
    salted = rng.random(x.shape) < 0.5
    out = np.where(flipped, salted.astype(np.float64), x.astype(np.float64))
    return _finish(out, x)


def _swap_sweep(x: np.ndarray, delta: int, rng: np.random.Generator) -> None:
    """MNIST-C's local shuffle, in place, every image at once (rows/columns high to low)."""
    n, h, w = x.shape[:3]
    images = np.arange(n)
    for row in range(h - delta, delta, -1):
        for col in range(w - delta, delta, -1):
            move = images[rng.random(n) < 0.5]
            dy, dx = rng.integers(-delta, delta, size=(2, move.size))
            r2, c2 = row + dy, col + dx
            here = x[move, row, col].copy()
            x[move, row, col] = x[move, r2, c2]
            x[move, r2, c2] = here


def glass_blur(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Glass blur: blur σ, ``k`` sweeps of local pixel swaps within ``δ``, blur σ again.

    Each sweep visits the pixels ``(row, col)`` from ``H - δ`` down to ``δ + 1`` (rows outer,
    columns inner, as MNIST-C) and, with probability 1/2, swaps the pixel with the one at
    ``(row + dy, col + dx)``, ``dy, dx`` uniform integers in ``[-δ, δ)``; draws from
    ``default_rng(seed)``. Blurs as :func:`gaussian_blur` (truncated at 4σ, edges repeated);
    unlike MNIST-C the intermediate image is not rounded to 8 bits.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``, ``H, W > 2δ + 1``.
        severity: 1..5 -> (σ, δ, k) = (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
            (1.5, 4, 2) (MNIST-C: severity 1).
        seed: seed of the swaps.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    sigma, delta, sweeps = _parameter("glass_blur", severity)
    out = _blur(x, sigma)
    rng = np.random.default_rng(seed)
    for _ in range(int(sweeps)):
        _swap_sweep(out, int(delta), rng)
    return _finish(_blur(out, sigma), x)


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``x`` (N, H, W, C) sampled at per-image points ``(rows, cols)`` (N, H, W); 0 outside."""
    n, h, w = x.shape[:3]
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    idx = np.arange(n)[:, None, None]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        ri = np.clip(r.astype(np.int64) + 1, 0, h + 1)
        ci = np.clip(c.astype(np.int64) + 1, 0, w + 1)
        return padded[idx, ri, ci]

    top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
    bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr


def _affine(x: np.ndarray, matrices: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Output pixel ``p = (col, row)`` reads input ``A_n (p - c) + c + t_n`` (bilinear)."""
    h, w = x.shape[1:3]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    p = np.stack([cols - centre[0], rows - centre[1]]).reshape(2, -1)
    src = np.einsum("nij,jk->nik", matrices, p) + (centre + shift)[:, :, None]
    src = src.reshape(len(x), 2, h, w)
    return _bilinear(x, src[:, 1], src[:, 0])


def _signs(n: int, seed: int, k: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, k))


def shear(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Shear about the centre: output ``(col, row)`` reads ``(col ± s (row - c), row)``.

    ``A = [[1, ±s], [0, 1]]`` in ``(column, row)`` coordinates, the sign drawn per image from
    ``default_rng(seed)``; bilinear, zero outside (module docstring).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> s = 0.2, 0.4, 0.6, 0.8, 1.0 (MNIST-C: 0.4).
        seed: seed of the signs.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    s = float(_parameter("shear", severity)) * _signs(len(x), seed)[:, 0]
    matrices = np.zeros((len(x), 2, 2))
    matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0
    matrices[:, 0, 1] = s
    return _finish(_affine(x, matrices, np.zeros((len(x), 2))), x)


def scale(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Zoom out about the centre: output ``p`` reads ``f (p - c) + c`` (the digit shrinks).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> f = 1/0.9, 1/0.8, 1/0.7, 1/0.6, 1/0.5 (MNIST-C: 1/0.7).
        seed: unused (deterministic corruption).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    f = float(_parameter("scale", severity))
    matrices = np.broadcast_to(f * np.eye(2), (len(x), 2, 2))
    return _finish(_affine(x, matrices, np.zeros((len(x), 2))), x)


def rotate(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Rotation about the centre by ``±θ``: output ``p`` reads ``R(±θ) (p - c) + c``.

    ``R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]`` in ``(column, row)`` coordinates, the sign
    drawn per image from ``default_rng(seed)``.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> θ = 0.2, 0.4, 0.6, 0.8, 1.0 radians (MNIST-C: 0.4).
        seed: seed of the signs.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    theta = float(_parameter("rotate", severity)) * _signs(len(x), seed)[:, 0]
    cos, sin = np.cos(theta), np.sin(theta)
    matrices = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
    return _finish(_affine(x, matrices, np.zeros((len(x), 2))), x)


def translate(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Shift by ``t`` pixels along both axes: output ``p`` reads ``p + (±t, ±t)``.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> t = 1, 2, 3, 4, 5 pixels (MNIST-C: 3).
        seed: seed of the two signs per image.

    Returns:
        the corrupted images, same shape and dtype (zeros enter at the borders).
    """
    x = _check_images(x)
    t = float(_parameter("translate", severity)) * _signs(len(x), seed, 2)
    matrices = np.broadcast_to(np.eye(2), (len(x), 2, 2))
    return _finish(_affine(x, matrices, t), x)


def motion_blur(x: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """Motion blur: a weighted mean of the image shifted along a line.

    ``y(p) = Σ_t g_t x(p - t u) / Σ_t g_t``, ``t = 0..r``, ``g_t = exp(-t²/(2σ²))``,
    ``u = (cos φ, sin φ)`` with ``φ`` uniform in ``[-45°, 45°]`` per image from
    ``default_rng(seed)`` (bilinear, zero outside). ImageMagick's one-sided motion blur, as
    used by MNIST-C, with an own kernel.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1..5 -> (r, σ) = (10, 3), (15, 5), (15, 8), (15, 12), (20, 15)
            (MNIST-C: (10, 3)).
        seed: seed of the angles.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    radius, sigma = _parameter("motion_blur", severity)
    phi = np.deg2rad(np.random.default_rng(seed).uniform(-45.0, 45.0, len(x)))
    u = np.stack([np.cos(phi), np.sin(phi)], 1)
    taps = np.arange(int(radius) + 1)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    eye = np.broadcast_to(np.eye(2), (len(x), 2, 2))
    out = sum(wt * _affine(x, eye, -t * u) for t, wt in zip(taps, weights))
    return _finish(out / weights.sum(), x)


def stripe(x: np.ndarray, severity: int = 1, seed: int = 0) -> np.ndarray:
    """Inverted border stripes: ``1 - x`` on the columns ``[0, W/4)`` and ``[W - W/4, W)``.

    ``W/4`` is rounded down (7 of 28 columns on each side, as MNIST-C).

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1 (one level).
        seed: unused (deterministic corruption).

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    _parameter("stripe", severity)
    out = np.clip(x, 0.0, 1.0).astype(np.float64)
    k = x.shape[2] // 4
    out[:, :, :k] = 1.0 - out[:, :, :k]
    out[:, :, x.shape[2] - k :] = 1.0 - out[:, :, x.shape[2] - k :]
    return _finish(out, x)


def _line_mask(h: int, w: int, r0: float, r1: float) -> np.ndarray:
    """MNIST-C's line from ``(0, r0)`` to ``(w - 1, r1)``: ``clip(1 + log(1 - d/2.3), 0, 1)``."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = r0 + (r1 - r0) / (w - 1) * cols
    d = np.clip(np.abs(rows - centre), 0.0, 2.3 - 1e-10)
    return np.clip(1.0 + np.log(1.0 - d / 2.3), 0.0, 1.0)


def dotted_line(x: np.ndarray, severity: int = 1, seed: int = 0) -> np.ndarray:
    """A dotted line across the image: ``clip(x + ℓ, 0, 1)``.

    ``ℓ`` is 1 on a random line from the left to the right edge (end rows ``r0, r1`` uniform
    integers in ``[0, H - 1)`` per image from ``default_rng(seed)``) and falls off as
    ``1 + log(1 - d/2.3)`` with the row distance ``d`` (0 from ``d ≈ 1.45``); the 2-column
    segments ``[0, 2), [4, 6), ...`` are switched off, which makes it dotted.

    Arguments:
        x: images ``(N, H, W, C)`` in ``[0, 1]``.
        severity: 1 (one level).
        seed: seed of the line positions.

    Returns:
        the corrupted images, same shape and dtype.
    """
    x = _check_images(x)
    _parameter("dotted_line", severity)
    n, h, w = x.shape[:3]
    ends = np.random.default_rng(seed).integers(0, h - 1, size=(n, 2))
    off = (np.arange(w) // 2) % 2 == 0
    lines = np.stack([_line_mask(h, w, *e) for e in ends])
    lines[:, :, off] = 0.0
    return _finish(x.astype(np.float64) + lines[..., None], x)


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "jpeg": jpeg,
    "brightness": brightness,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "translate": translate,
    "stripe": stripe,
    "dotted_line": dotted_line,
}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` to images ``x``.

    Arguments:
        x: images ``(N, H, W, C)``, floating point in ``[0, 1]``.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5, or 1 for the one-level corruptions (parameters in
            :data:`SEVERITY_PARAMETERS`).
        seed: seed of the random corruptions.

    Returns:
        the corrupted images, same shape and dtype, clipped to ``[0, 1]``.

    Raises:
        ValueError: unknown ``name``, a severity the corruption does not have, or bad images.
    """
    name = _check_name(name)
    return _FUNCTIONS[name](x, _check_severity(severity, name), seed=seed)


def default_severities(name: str) -> tuple[int, ...]:
    """The levels a benchmark evaluates: MNIST-C's one level, CIFAR-10-C's five."""
    name = _check_name(name)
    if name in MNIST_C_SEVERITY:
        return (MNIST_C_SEVERITY[name],)
    return SEVERITIES


def robustness_table(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    severities: Sequence[int] | None = None,
    corruptions: Sequence[str] = MNIST_C,
    batch_size: int = 256,
    seed: int = 0,
    *,
    loss_fn: LossFn | None = None,
    from_logits: bool = False,
) -> pd.DataFrame:
    """Accuracy and loss of ``model`` on clean and corrupted copies of ``(x, y)``.

    Arguments:
        model: a Keras 3 model taking images ``(N, H, W, C)`` in ``[0, 1]``.
        x, y: clean images and labels.
        severities: severities to evaluate for every corruption; ``None`` (default): each
            corruption at :func:`default_severities` (MNIST-C's level, CIFAR-10-C's five).
        corruptions: names from :data:`CORRUPTIONS` (default: :data:`MNIST_C`).
        batch_size, loss_fn, from_logits: as in :func:`lqs.generalization.evaluate`.
        seed: seed of the random corruptions (the same for every severity).

    Returns:
        DataFrame with columns ``corruption``, ``severity``, ``accuracy``, ``loss``; first the
        clean row (``corruption="clean"``, ``severity=0``), then one row per corruption and
        severity in the given order.

    Raises:
        ValueError: an unknown corruption, or a severity one of them does not have.

    References:
        D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common
        Corruptions and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261
    """
    plan = []
    for name in corruptions:
        name = _check_name(name)
        levels = default_severities(name) if severities is None else severities
        plan += [(name, _check_severity(s, name)) for s in levels]
    x = _check_images(x)

    def row(name: str, severity: int, images: np.ndarray) -> dict[str, Any]:
        result = evaluate(
            model,
            images,
            y,
            batch_size=batch_size,
            loss_fn=loss_fn,
            from_logits=from_logits,
        )
        return {
            "corruption": name,
            "severity": severity,
            "accuracy": result["accuracy"],
            "loss": result["loss"],
        }

    rows = [row("clean", 0, x)]
    for name, severity in plan:
        rows.append(row(name, severity, corrupt(x, name, severity, seed=seed)))
    return pd.DataFrame(rows, columns=["corruption", "severity", "accuracy", "loss"])


def robustness_metrics(table: pd.DataFrame, train_loss: float) -> pd.DataFrame:
    """Per corruption: the loss gap on corrupted data and the error relative to clean.

    For the rows of :func:`robustness_table` (clean row ``c = clean`` included) of one model
    with training loss ``L_train``::

        loss_gap    = L_c - L_train                   (QGen's gap, on corrupted test data)
        error_ratio = (1 - acc_c) / (1 - acc_clean)   (NaN when the clean error is 0)

    The clean row gets the ordinary loss gap and ``error_ratio = 1``.

    Arguments:
        table: one model's robustness table (columns ``corruption``, ``accuracy``,
            ``loss``; exactly one ``clean`` row).
        train_loss: the model's mean loss on its training images.

    Returns:
        A copy of ``table`` with the columns ``loss_gap`` and ``error_ratio``.

    Raises:
        ValueError: ``table`` without exactly one clean row.
    """
    clean = table[table["corruption"] == "clean"]
    if len(clean) != 1:
        raise ValueError(
            f"table has {len(clean)} rows with corruption='clean'; allowed: exactly one "
            "(one model's robustness_table); fix: pass the rows of one model"
        )
    clean_error = 1.0 - float(clean["accuracy"].iloc[0])
    out = table.copy()
    out["loss_gap"] = out["loss"] - float(train_loss)
    ratio = (1.0 - out["accuracy"]) / clean_error if clean_error > 0 else math.nan
    out["error_ratio"] = ratio
    return out
