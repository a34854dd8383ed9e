"""Image corruptions at five severities, generated locally, and a robustness table.

QGen (AskariHemmat et al., 2024) compares quantized and full-precision models on distorted
data (CIFAR-10-C / ImageNet-C, Hendrycks & Dietterich, 2019). Those data sets cannot be
downloaded here, so this module re-implements five of their corruptions with NumPy and
TensorFlow only, with the *CIFAR-10-C* parameters of Hendrycks & Dietterich's
``make_cifar_c.py`` (small images: CIFAR-10, MNIST, Fashion-MNIST). They follow the published
definitions but are not bit-identical to the published files (different blur/JPEG libraries,
own random numbers); results must be labelled "locally generated corruptions".

Inputs are image batches ``x`` of shape ``(N, H, W, C)``, floating point in ``[0, 1]``; outputs
have the same shape and dtype and are clipped to ``[0, 1]``.

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
==================  ======================================================  ================================

Only ``gaussian_noise`` is random: its draws come from ``numpy.random.default_rng(seed)`` and do
not depend on the severity (the same ``seed`` gives nested noise: severity ``s`` adds the same
pattern scaled by ``σ_s``).

References
----------
- D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
  and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261 (parameters from
  https://github.com/hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``)
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
    "CORRUPTIONS",
    "SEVERITIES",
    "SEVERITY_PARAMETERS",
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "jpeg",
    "brightness",
    "corrupt",
    "robustness_table",
]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "jpeg",
    "brightness",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: the parameter of each corruption per severity 1..5 (CIFAR-10-C values of Hendrycks & Dietterich)
SEVERITY_PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur std in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast factor
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
}


def _check_images(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"images must be floating point in [0, 1], got dtype {x.dtype}; use x / 255"
        )
    return x


def _check_severity(severity: Any) -> int:
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or severity not in SEVERITIES
    ):
        raise ValueError(
            f"severity={severity!r} is not supported; allowed: {', '.join(map(str, SEVERITIES))}"
        )
    return int(severity)


def _parameter(name: str, severity: int) -> float:
    return SEVERITY_PARAMETERS[name][_check_severity(severity) - 1]


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


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "jpeg": jpeg,
    "brightness": brightness,
}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1..5) to images ``x``.

    Arguments:
        x: images ``(N, H, W, C)``, floating point in ``[0, 1]``.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5 (parameters in :data:`SEVERITY_PARAMETERS`).
        seed: seed of the random corruptions (``gaussian_noise``).

    Returns:
        the corrupted images, same shape and dtype, clipped to ``[0, 1]``.

    Raises:
        ValueError: unknown ``name``, ``severity`` outside 1..5, or bad images.
    """
    if name not in _FUNCTIONS:
        raise ValueError(
            f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}"
        )
    return _FUNCTIONS[name](x, _check_severity(severity), seed=seed)


def robustness_table(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    severities: Sequence[int] = SEVERITIES,
    corruptions: Sequence[str] = CORRUPTIONS,
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
        severities: severities to evaluate (each in 1..5).
        corruptions: names from :data:`CORRUPTIONS`.
        batch_size, loss_fn, from_logits: as in :func:`lqs.generalization.evaluate`.
        seed: seed of the random corruptions (the same for every severity).

    Returns:
        DataFrame with columns ``corruption``, ``severity``, ``accuracy``, ``loss``; first the
        clean row (``corruption="clean"``, ``severity=0``), then one row per corruption and
        severity in the given order.

    References:
        D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common
        Corruptions and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261
    """
    for name in corruptions:
        if name not in _FUNCTIONS:
            raise ValueError(
                f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}"
            )
    severities = [_check_severity(s) for s in severities]
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
    for name in corruptions:
        for severity in severities:
            rows.append(row(name, severity, corrupt(x, name, severity, seed=seed)))
    return pd.DataFrame(rows, columns=["corruption", "severity", "accuracy", "loss"])
