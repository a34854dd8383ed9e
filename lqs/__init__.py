"""lqs — learned quantization schemes.

Keras 3 layers that learn their own quantization scale factors (a nested quantizer with a
threshold-driven scale gradient), loss terms that push networks toward coarse quantization,
baselines, memory accounting and the experiment engine behind the companion book.

The layers are imported lazily (``lqs.QDense`` loads TensorFlow on first use), so light
submodules such as ``companion.paths``, ``companion.engine.runner`` and ``companion.data`` start fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "NestedQuantizer": "lqs.quantizers",
    "nested_quantize": "lqs.quantizers",
    "ste_quantize": "lqs.quantizers",
    "QDense": "lqs.layers",
    "QConv2D": "lqs.layers",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lqs' has no attribute {name!r}")
