"""The quantized-layer protocol: what :mod:`lqs.memory` and :mod:`lqs.export` need.

Every quantized layer of the library (:class:`lqs.layers.QDense`, :class:`lqs.layers.QConv2D`, the
LSQ and fixed-bit layers of :mod:`lqs.baselines`, the results of
:func:`lqs.baselines.ptq_minmax`) implements :class:`QuantizedLayer`; a layer of your
own that implements it is accounted by :mod:`lqs.memory` and exported by
:mod:`lqs.export` like them. A quantized parameter :math:`P` is stored as integers
:math:`P_q` and scales :math:`s`, one per scale group, and used in the forward pass as
the reconstruction

.. math::

    P_{rec} = P_q \\cdot s .

The optional loader hook of :class:`IntegerLoadable` lets
:func:`lqs.export.from_integer` rebuild such a layer from its integers. Plain Keras
layers implement neither; all their weights count as 32-bit floats.

Importing this module is light (no TensorFlow): the annotations name
:class:`lqs.quantizers.IntegerTensor` for type checkers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing lqs.quantizers loads TensorFlow
    import numpy as np

    from lqs.quantizers import IntegerTensor

__all__ = [
    "QuantizedLayer",
    "IntegerLoadable",
    "is_quantized_layer",
    "is_integer_loadable",
]


@runtime_checkable
class QuantizedLayer(Protocol):
    """A layer with quantized parameters (what lqs.memory and lqs.export rely on).

    ``isinstance(layer, QuantizedLayer)`` checks that both methods exist;
    :func:`is_quantized_layer` also checks that they are callable (use it).
    """

    def integer_parameters(self) -> list[IntegerTensor]:
        """The quantized parameters in integer form, one :class:`IntegerTensor` each.

        For each quantized parameter: its integer values :math:`P_q` (NumPy int64, the
        parameter's shape), its scales (NumPy float32, broadcastable to the parameter,
        one per scale group), the parameter name (``"kernel"``, ``"bias"``) and the
        granularity name. The reconstructed (fake-quantized) value is
        ``values * scale``.
        """
        ...

    def float_parameters(self) -> dict[str, np.ndarray]:
        """Parameters of this layer kept in float32 (e.g. an unquantized bias), by name.

        Scale variables are NOT listed here (memory accounting counts them as 32 bits
        per scale).
        """
        ...


@runtime_checkable
class IntegerLoadable(QuantizedLayer, Protocol):
    """A :class:`QuantizedLayer` with the optional loader hook of :mod:`lqs.export`."""

    def set_integer_parameters(self, tensors: list[IntegerTensor]) -> None:
        """Set the layer's variables so that ``integer_parameters()`` gives ``tensors``.

        Afterwards ``integer_parameters()`` returns exactly ``tensors`` (integers and
        scales) and the forward pass uses ``values * scale``.
        :func:`lqs.export.from_integer` calls it (then checks the integers) instead of
        the nested-quantizer default (latent value = bin centre
        :math:`(P_q + 0.5)\\, s`, ``<name>_quantizer.scale`` = the scales). Float
        parameters still go to ``set_float_parameters(dict)`` if the layer defines it,
        else to the attribute of that name. LSQ layers: step = scale, weights =
        ``fl(values * scale)``; fixed-bit layers: weights = ``fl(values * scale)``.
        """
        ...


def _has_methods(obj: Any, names: tuple[str, ...]) -> bool:
    if isinstance(obj, type):  # the class itself is not a layer
        return False
    return all(callable(getattr(obj, name, None)) for name in names)


def is_quantized_layer(layer: Any) -> bool:
    """True if ``layer`` implements :class:`QuantizedLayer` (both methods, callable).

    Arguments:
        layer: any object (a Keras layer, a model, anything else: then False).
    """
    return _has_methods(layer, ("integer_parameters", "float_parameters"))


def is_integer_loadable(layer: Any) -> bool:
    """True if ``layer`` implements :class:`IntegerLoadable` (protocol plus the hook).

    Arguments:
        layer: any object.
    """
    hook = ("set_integer_parameters",)
    return is_quantized_layer(layer) and _has_methods(layer, hook)
