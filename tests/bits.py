"""Bit-for-bit comparison shared by the quantizer tests (test_quantizers, test_fused)."""

from __future__ import annotations

import numpy as np


def assert_bits_equal(actual, expected, what=""):
    """Equal bit patterns (so -0.0 != 0.0 and NaN == NaN of the same payload)."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, (
        what,
        a.dtype,
        e.dtype,
        a.shape,
        e.shape,
    )
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    bad = np.flatnonzero(a.view(uint) != e.view(uint))
    assert bad.size == 0, (
        f"{what}: {bad.size} of {a.size} differ, e.g. {a.flat[bad[:3]]} vs {e.flat[bad[:3]]}"
    )
