"""lqs: learned quantization schemes for Keras 3.

Keras layers that learn their own quantization scale factors. A nested quantizer
fake-quantizes a parameter as :math:`P_{rec} = \\lfloor P/s \\rfloor s` and learns the
scale :math:`s` from a threshold vote on the ratio of gradient to value (thesis section
3.1). ``QDense`` and ``QConv2D`` are ``keras.layers.Dense`` / ``Conv2D`` with such a
quantizer on kernel and bias; ``quantize_model`` swaps them into any Sequential or
functional model. Around them: loss terms that push networks toward coarse quantization
(:mod:`lqs.losses`), baselines (post-training min-max, fixed-bit STE, LSQ;
:mod:`lqs.baselines`), memory accounting (:mod:`lqs.memory`), integer export
(:mod:`lqs.export`), the thesis networks (:mod:`lqs.models`) and generalization
measures. It needs keras, tensorflow and numpy only; the companion book of the thesis
uses it.

Example::

    import keras, lqs

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Flatten(),
        lqs.QDense(128, activation="relu", kernel_granularity="column", threshold=1e-9),
        lqs.QDense(10, activation="softmax"),
    ])

The public names below are imported lazily (``lqs.QDense`` loads TensorFlow on first
use), so ``import lqs`` itself is fast.
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
    "quantize_model": "lqs.convert",
    "QuantizeReport": "lqs.convert",
    "QuantizedLayer": "lqs.protocol",
    "is_quantized_layer": "lqs.protocol",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lqs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
