"""The fused CPU kernels (lqs/fused.py) against TensorFlow's own operations, bit for bit, and
their build: cached, atomic, reused by a new process, and a clear fallback when it fails.

``tests/test_quantizers.py`` runs every quantizer test once with the kernels and once without.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from bits import assert_bits_equal

import lqs.fused as fused
import lqs.quantizers as lq
from lqs.quantizers import EPS, MIN_SCALE, nested_quantize

F32 = np.float32
SUBNORMAL = float(np.finfo(F32).smallest_subnormal)
#: values no training run should meet, where TensorFlow's kernels still define an answer
SPECIAL = [
    np.nan,
    np.inf,
    -np.inf,
    0.0,
    -0.0,
    SUBNORMAL,
    -SUBNORMAL,
    3e38,
    -3e38,
    1e-30,
]


@pytest.fixture()
def ops(monkeypatch):
    """The loaded kernels (``LQS_FUSED_KERNELS=on``: a failed build fails the test)."""
    monkeypatch.setenv("LQS_FUSED_KERNELS", "on")
    return fused.kernels()


def special_array(shape, scale, seed):
    """Normal values, ties and exact multiples of ``scale``, and every :data:`SPECIAL` value."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, shape).astype(F32)
    x.flat[1::11] = ((rng.integers(-40, 40, x.size) + 0.5) * scale).astype(F32)[1::11]
    x.flat[2::11] = (rng.integers(-40, 40, x.size) * scale).astype(F32)[2::11]
    positions = rng.choice(x.size, size=min(x.size, 3 * len(SPECIAL)), replace=False)
    for i, where in enumerate(positions):
        x.flat[where] = SPECIAL[i % len(SPECIAL)]
    return x


# (parameter shape, scale shape): one scale, long groups with a remainder, one scale per
# element of a middle axis, groups of one element
LAYOUTS = {
    "scalar": ((784, 128), (1,)),
    "scalar-odd": ((37, 5), (1,)),
    "row": ((50, 37), (50, 1)),
    "column": ((50, 37), (1, 37)),
    "channel": ((3, 3, 16, 8), (1, 1, 16, 1)),
    "filter": ((3, 3, 16, 8), (1, 1, 1, 8)),
    "two-kept-axes": ((4, 6, 5), (1, 6, 5)),
    "every-element": ((7, 3), (7, 3)),
    "bias-row": ((128,), (128,)),
}


@pytest.mark.parametrize("key", list(LAYOUTS))
def test_forward_kernel_is_floordiv_mul_and_max_abs(ops, key):
    p_shape, s_shape = LAYOUTS[key]
    rng = np.random.default_rng(len(key))
    s = rng.choice(np.asarray([MIN_SCALE, 1e-3, 0.02, 3.0], F32), s_shape).astype(F32)
    p = special_array(p_shape, 1e-3, seed=len(key))
    axes = lq.group_axes(p_shape, s_shape)
    layout = fused.group_layout(p_shape, axes)
    s_b = tf.reshape(
        s, s_shape if len(s_shape) == len(p_shape) else (1,) * len(p_shape)
    )
    p_q = tf.math.floordiv(p, s_b)
    p_rec, m = fused.forward(ops, tf.constant(p), tf.constant(s), layout)
    assert_bits_equal(p_rec, (p_q * s_b).numpy(), "P_rec")
    expected_m = tf.reduce_max(tf.abs(p_q), axis=axes, keepdims=True)
    assert_bits_equal(m, tf.reshape(expected_m, (-1,)).numpy(), "max |P_q|")


def test_forward_kernel_propagates_nan_into_the_group_maximum(ops):
    p = np.array(
        [[1.0, np.nan, 2.0], [3.0, 4.0, 5.0]], F32
    )  # NaN in the middle of a group
    _, m = fused.forward(ops, tf.constant(p), tf.constant([1.0, 1.0], F32), (1, 2, 3))
    assert np.isnan(m.numpy()[0]) and m.numpy()[1] == 5.0
    assert np.isnan(tf.reduce_max(p[0]).numpy())  # TensorFlow's rule, which it follows


@pytest.mark.parametrize("threshold", [0.0, 1e-9, 2.0**-12, 1e-3, 10.0, 1e30])
def test_vote_kernel_is_relu_of_threshold_minus_ratio(ops, threshold):
    shape = (97, 13)
    p_rec = special_array(shape, 1e-3, seed=1)
    g = special_array(shape, 1e-6, seed=2) * F32(1e-3)
    lam = tf.constant(threshold, tf.float32)
    ratio = tf.abs(g) / tf.maximum(tf.abs(p_rec), tf.constant(EPS, tf.float32))
    expected = tf.nn.relu(lam - ratio).numpy()
    vote = fused.threshold_vote(ops, tf.constant(g), tf.constant(p_rec), threshold, EPS)
    assert_bits_equal(vote, expected, f"vote at threshold {threshold}")


def test_group_layout_by_hand():
    assert fused.group_layout((784, 128), [0, 1]) == (1, 1, 784 * 128)
    assert fused.group_layout((784, 128), [0]) == (784, 128, 1)
    assert fused.group_layout((784, 128), [1]) == (1, 784, 128)
    assert fused.group_layout((3, 3, 16, 8), [0, 1, 3]) == (9, 16, 8)
    assert fused.group_layout((3, 3, 16, 8), [0, 1, 2]) == (144, 8, 1)
    assert fused.group_layout((4, 6, 5), [0]) == (4, 30, 1)
    assert fused.group_layout((4, 6, 5), []) == (1, 120, 1)
    assert fused.group_layout((4, 6, 5), [1]) is None  # kept axes 0 and 2 are apart


def spy_forward(monkeypatch) -> list:
    calls = []
    real = fused.forward

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(fused, "forward", spy)
    return calls


def test_nested_quantize_takes_the_kernels_only_where_they_fit(monkeypatch):
    monkeypatch.setenv("LQS_FUSED_KERNELS", "on")
    calls = spy_forward(monkeypatch)
    p, s = tf.ones((6, 4)), tf.fill((1, 4), 0.5)
    nested_quantize(p, s, 1e-9, min_scale=MIN_SCALE)
    assert calls == [(6, 4, 1)]  # reduce over rows, one scale per column
    nested_quantize(p, s, 1e-9)  # no floor promised: the full denominator
    nested_quantize(tf.cast(p, tf.float64), s, 1e-9, min_scale=MIN_SCALE)
    nested_quantize(p, s, 0.0, min_scale=MIN_SCALE)  # all-above rule needs the ratios
    nested_quantize(tf.ones((4, 6, 5)), tf.ones((4, 1, 5)), 1e-9, min_scale=MIN_SCALE)
    assert len(calls) == 1
    nested_quantize(p, s, 0.0, all_above_vote=False, min_scale=MIN_SCALE)
    assert len(calls) == 2
    monkeypatch.setenv("LQS_FUSED_KERNELS", "off")
    nested_quantize(p, s, 1e-9, min_scale=MIN_SCALE)
    assert len(calls) == 2


def test_a_visible_gpu_keeps_tensorflow_ops(monkeypatch):
    monkeypatch.setenv("LQS_FUSED_KERNELS", "on")
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    assert fused.kernels() is None


def test_bad_mode_is_named(monkeypatch):
    monkeypatch.setenv("LQS_FUSED_KERNELS", "yes")
    with pytest.raises(
        ValueError, match=r"LQS_FUSED_KERNELS='yes'.*'auto', 'on', 'off'"
    ):
        nested_quantize(tf.ones((2, 2)), tf.ones((1,)), 1e-9, min_scale=MIN_SCALE)


def test_failed_build_warns_once_and_keeps_the_numbers(monkeypatch, tmp_path):
    monkeypatch.setattr(
        fused, "_library", None
    )  # as in a process that has not loaded them
    monkeypatch.setattr(fused, "_failures", {})
    monkeypatch.setenv("LQS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("LQS_FUSED_KERNELS", "auto")
    p, s = tf.constant([[0.3, -0.7], [0.05, 0.0]]), tf.constant([0.1])
    with pytest.warns(
        RuntimeWarning, match=r"could not be built.*Fix: install a C\+\+"
    ):
        out = nested_quantize(p, s, 1e-9, min_scale=MIN_SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use does not warn again
        nested_quantize(p, s, 1e-9, min_scale=MIN_SCALE)
    assert_bits_equal(out, (tf.math.floordiv(p, s) * s).numpy(), "fallback forward")
    # no library, not even a half-written one (a lock file may stay)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []
    monkeypatch.setenv("LQS_FUSED_KERNELS", "on")
    with pytest.raises(RuntimeError, match="no-such-compiler"):
        fused.kernels()


def run_python(code: str, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "LQS_FUSED_KERNELS": "on", "LQS_KERNEL_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_build_is_cached_and_reused_by_a_new_process(tmp_path):
    """One process builds into an empty cache; the next loads that file without compiling."""
    built = run_python(
        "import lqs.fused as f; assert f.kernels() is not None", tmp_path
    )
    assert built.returncode == 0, built.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert (
        len(files) == 1
        and files[0].startswith("lqs_fused_")
        and files[0].endswith(".so")
    )
    reused = run_python(
        "import subprocess, lqs.fused as f\n"
        "def no_compiler(*a, **k): raise AssertionError('compiled again')\n"
        "subprocess.run = no_compiler\n"
        "assert f.kernels() is not None\n"
        "print('loaded')",
        tmp_path,
    )
    assert reused.returncode == 0 and "loaded" in reused.stdout, reused.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == files
