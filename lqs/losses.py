"""The three loss terms of the thesis (section 3.2) and a Keras model that trains with them.

The loss-term networks use the nested quantizer's forward pass with a plain straight-through
estimator (``scale_gradient="ste"``): the scales get no gradient from the task loss and learn
only through penalties added to it,

.. math::

    L = L_{task} + \\sum_{t} \\rho_t \\, \\mathcal{P}_t , \\qquad \\rho_t \\ge 0 ,

with the three penalties :math:`\\mathcal{P}_t` (names as in :data:`TERMS`):

* ``"inverse"`` (3.2.1, penalty for the inverse scale magnitude): :math:`\\operatorname{mean}(1/s)`
  over the scale entries of a parameter; small scales (fine quantization) cost much.
* ``"max_bin"`` (3.2.2, constraint on the bin count): per scale group :math:`g`, the number of
  bins :math:`\\max_{i \\in g} |W_i| / s_g`, averaged over the groups of the parameter.
* ``"deviation"`` (3.2.3, deviation between quantized and original values), two forms
  (:data:`DEVIATION_FORMS`):

  - ``"implementation"`` (default; what the thesis code computed, and so what produced the
    published results): :math:`\\operatorname{mean} |W - W/s|`;
  - ``"reconstructed"`` (option; the deviation from the reconstructed value that the text's
    wording suggests): :math:`\\operatorname{mean} |W - \\lfloor W/s \\rfloor s|`. Its floor
    rounding biases it: for zero-mean weights it pushes the scales down (finer quantization)
    instead of coarsening them (gradient below).

Each penalty is first computed per quantized parameter (kernel, and the bias when it is
quantized) and then averaged over all quantized parameters of the model, weighted by their element
counts :math:`n_p`: :math:`\\mathcal{P}_t = \\sum_p n_p \\mathcal{P}_{t,p} / \\sum_p n_p`,
exactly as the thesis implementation weights its layers (by element count, not by scale count).

Gradient of the reconstructed deviation. :math:`\\lfloor\\cdot\\rfloor` is differentiated exactly
where it is differentiable, i.e. with derivative 0 (TensorFlow's own gradient of ``floor``; no
straight-through estimator inside the penalty). With :math:`q = \\lfloor W/s \\rfloor` and the
residual :math:`r = W - q s \\ge 0`, for one parameter of :math:`n` elements:

.. math::

    \\frac{\\partial \\mathcal{P}}{\\partial W_i} = \\frac{\\operatorname{sign}(r_i)}{n}, \\qquad
    \\frac{\\partial \\mathcal{P}}{\\partial s_g} = -\\frac{1}{n}\\sum_{i \\in g}
        \\operatorname{sign}(r_i)\\, q_i .

Consequences worth knowing: the weights feel a uniform downward push of size
:math:`\\rho/\\sum_p n_p` (the residual grows with :math:`W` inside a bin); the scale is pushed down
where :math:`\\operatorname{mean}(q) < 0`, which is the typical case of zero-mean weights because the
floor rounds toward :math:`-\\infty`.

The max-bin gradient is a subgradient: the whole group gradient goes to its arg-max element
(TensorFlow splits it evenly between exact ties).

References:
    A. Chinbat, "Learned Quantization Schemes for Data-centric ML Pipelines", master's thesis,
    TU Berlin, 2025, section 3.2 ("Custom Loss Functions") and chapter 4 (settings);
    https://github.com/anuunchin/learned-quantization
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import numpy as np
from keras import ops, tree

from lqs.quantizers import group_axes

__all__ = [
    "TERMS",
    "DEVIATION_FORMS",
    "DEFAULT_DEVIATION_FORM",
    "quantized_layers",
    "quantized_parameters",
    "parameter_penalties",
    "penalties",
    "check_rates",
    "LossTermsModel",
    "with_loss_terms",
]

#: penalty names, in the order they are reported
TERMS: tuple[str, ...] = ("inverse", "max_bin", "deviation")
#: forms of the deviation penalty, the reconstructed-value form the text's wording suggests (an
#: option) and the thesis implementation's (the default of every function here, because it
#: produced the published results); see :data:`DEFAULT_DEVIATION_FORM`
DEVIATION_FORMS: tuple[str, ...] = ("reconstructed", "implementation")
#: the default deviation form, the thesis implementation's :math:`|W - W/s|`
DEFAULT_DEVIATION_FORM: str = "implementation"


def _check_deviation_form(deviation_form: str) -> str:
    if deviation_form not in DEVIATION_FORMS:
        raise ValueError(
            f"unknown deviation_form {deviation_form!r}; allowed: "
            f"{', '.join(map(repr, DEVIATION_FORMS))}; leave it out for the default "
            f"{DEFAULT_DEVIATION_FORM!r} (mean|W - W/s|, the thesis implementation's form)"
        )
    return deviation_form


def quantized_layers(model_or_layers: Any) -> list[keras.layers.Layer]:
    """The quantized layers (objects with a ``kernel_quantizer``, i.e. QDense/QConv2D) in traversal order.

    Arguments:
        model_or_layers: a Keras model or layer (searched recursively, nested models included,
            a :class:`LossTermsModel` through its network) or an iterable of layers.

    Returns:
        Each quantized layer once (shared layers are not repeated).
    """
    if isinstance(model_or_layers, keras.layers.Layer):
        candidates = list(
            model_or_layers._flatten_layers(include_self=True, recursive=True)
        )
    elif isinstance(model_or_layers, Iterable):
        candidates = []
        for item in model_or_layers:
            if isinstance(item, keras.layers.Layer):
                candidates.extend(
                    item._flatten_layers(include_self=True, recursive=True)
                )
            else:
                candidates.append(item)
    else:
        raise ValueError(
            f"expected a Keras model/layer or an iterable of layers, got {type(model_or_layers).__name__}"
        )
    seen: set[int] = set()
    found = []
    for layer in candidates:
        if (
            getattr(layer, "kernel_quantizer", None) is not None
            and id(layer) not in seen
        ):
            seen.add(id(layer))
            found.append(layer)
    return found


def quantized_parameters(model_or_layers: Any) -> list[tuple[Any, Any]]:
    """``(parameter, scale)`` pairs of every quantized parameter (kernels, and biases when quantized).

    Raises:
        ValueError: no quantized layer was found, or one is not built yet.
    """
    layers = quantized_layers(model_or_layers)
    if not layers:
        raise ValueError(
            "no quantized layers found (objects with a .kernel_quantizer such as lqs.QDense/lqs.QConv2D); "
            "the loss terms need at least one"
        )
    pairs = []
    for layer in layers:
        if not layer.built or layer.kernel_quantizer.scale is None:
            raise ValueError(
                f"quantized layer {layer.name!r} is not built yet; call the model on data first"
            )
        pairs.append((layer.kernel, layer.kernel_quantizer.scale))
        bias_quantizer = getattr(layer, "bias_quantizer", None)
        if bias_quantizer is not None:
            pairs.append((layer.bias, bias_quantizer.scale))
    return pairs


def parameter_penalties(
    p, scale, deviation_form: str = DEFAULT_DEVIATION_FORM
) -> dict[str, Any]:
    """The three penalties of one parameter ``p`` with scales ``scale`` (see the module docstring).

    .. math::

        \\mathcal{P}_{inverse} = \\operatorname{mean}_{k}(1/s_k), \\quad
        \\mathcal{P}_{max\\_bin} = \\operatorname{mean}_g \\max_{i \\in g} |W_i|/s_g, \\quad
        \\mathcal{P}_{deviation} = \\operatorname{mean}_i |W_i - \\lfloor W_i/s \\rfloor s|
        \\;\\text{or}\\; \\operatorname{mean}_i |W_i - W_i/s| .

    Arguments:
        p: the float parameter (any rank).
        scale: positive scales, shape ``(1,)`` or the parameter's rank with size-1 axes.
        deviation_form: ``"implementation"`` (default, :math:`|W - W/s|`) or ``"reconstructed"``
            (:math:`|W - \\lfloor W/s \\rfloor s|`).

    Returns:
        ``{term: scalar tensor}`` for every term of :data:`TERMS`.
    """
    _check_deviation_form(deviation_form)
    p = ops.convert_to_tensor(p)
    scale = ops.cast(ops.convert_to_tensor(scale), p.dtype)
    axes = group_axes(tuple(p.shape), tuple(scale.shape))
    ratio = ops.abs(p) / scale
    max_bin = (
        ops.mean(ops.max(ratio, axis=axes, keepdims=True)) if axes else ops.mean(ratio)
    )
    inverse = ops.mean(1.0 / scale)
    if deviation_form == "reconstructed":
        deviation = ops.mean(ops.abs(p - ops.floor(p / scale) * scale))
    else:
        deviation = ops.mean(ops.abs(p - p / scale))
    return {"inverse": inverse, "max_bin": max_bin, "deviation": deviation}


def penalties(
    model_or_layers: Any, deviation_form: str = DEFAULT_DEVIATION_FORM
) -> dict[str, Any]:
    """The unweighted penalties of a model, averaged over its quantized parameters by element count.

    :math:`\\mathcal{P}_t = \\sum_p n_p \\mathcal{P}_{t,p} / \\sum_p n_p`, where :math:`p` runs over the
    kernels of all quantized layers and their biases when quantized, :math:`n_p` is the number of
    elements of :math:`p` and :math:`\\mathcal{P}_{t,p}` is :func:`parameter_penalties`.
    Differentiable with respect to the weights and the scales (gradients: module docstring).

    Arguments:
        model_or_layers: a Keras model/layer or an iterable of layers (see :func:`quantized_layers`).
        deviation_form: ``"implementation"`` (default, the thesis code's form that produced the
            published results) or ``"reconstructed"`` (the text's wording).

    Returns:
        ``{"inverse": ..., "max_bin": ..., "deviation": ...}``, float32 scalar tensors.

    Raises:
        ValueError: unknown ``deviation_form``; no (built) quantized layer.
    """
    _check_deviation_form(deviation_form)
    pairs = quantized_parameters(model_or_layers)
    counts = [int(np.prod(tuple(p.shape))) for p, _ in pairs]
    total = float(sum(counts))
    sums = {term: 0.0 for term in TERMS}
    for (p, scale), n in zip(pairs, counts):
        per = parameter_penalties(p, scale, deviation_form)
        for term in TERMS:
            sums[term] = sums[term] + ops.cast(per[term], "float32") * (n / total)
    return {term: ops.convert_to_tensor(sums[term], "float32") for term in TERMS}


def check_rates(rates: Mapping[str, float] | None) -> dict[str, float]:
    """Validate penalty rates: known term names, finite numbers >= 0; missing terms get 0.

    Raises:
        ValueError: a key not in :data:`TERMS` or a value that is negative, not finite or not a number.
    """
    if rates is None:
        rates = {}
    if not isinstance(rates, Mapping):
        raise ValueError(
            f"rates must be a dict {{term: rate}} with terms from {TERMS}, got {rates!r}"
        )
    checked = {term: 0.0 for term in TERMS}
    for key, value in rates.items():
        if key not in TERMS:
            raise ValueError(
                f"unknown loss term {key!r} in rates; allowed: {', '.join(map(repr, TERMS))}"
            )
        try:
            rate = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"rate for {key!r} must be a number >= 0, got {value!r}"
            ) from None
        if isinstance(value, bool) or not math.isfinite(rate) or rate < 0:
            raise ValueError(
                f"rate for {key!r} must be a finite number >= 0, got {value!r}"
            )
        checked[key] = rate
    return checked


@keras.saving.register_keras_serializable(package="lqs")
class LossTermsModel(keras.Model):
    """A model trained with task loss plus weighted loss-term penalties; wraps ``network``.

    The forward pass is ``network(x)``. :meth:`compute_loss` (used by ``fit``, ``evaluate``,
    ``train_on_batch``) returns

    .. math::

        L = L_{task} + \\sum_{t \\in TERMS} \\rho_t \\, \\mathcal{P}_t ,

    where :math:`L_{task}` is Keras's usual loss (compiled loss plus any layer regularization losses)
    and :math:`\\mathcal{P}_t` are :func:`penalties` of the network. Every penalty is tracked by a
    mean metric named ``penalty_<term>`` (the unweighted value, averaged over the batches of an epoch;
    logged for all terms, also those with rate 0, and as ``val_penalty_<term>`` during validation).
    The reported ``loss`` is the total :math:`L`.

    ``layers`` and ``get_layer`` see through the wrapper (they return the network's layers), so code
    that walks ``model.layers`` (memory accounting, scale plots) works on the wrapped model too.
    The rates are Python constants of the traced train step: build a new wrapper (or call
    :func:`with_loss_terms` again) to change them, rather than mutating ``rates``.

    Arguments:
        network: the Keras model with quantized layers (normally their ``scale_gradient="ste"``).
        rates: ``{term: rate}``, rates >= 0, missing terms 0 (see :func:`check_rates`).
        deviation_form: ``"implementation"`` (default) or ``"reconstructed"``.
        **kwargs: ``keras.Model`` keyword arguments (``name``, ...).
    """

    def __init__(
        self,
        network: keras.Model,
        rates: Mapping[str, float] | None = None,
        deviation_form: str = DEFAULT_DEVIATION_FORM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(network, keras.layers.Layer):
            raise ValueError(
                f"network must be a Keras model, got {type(network).__name__}"
            )
        self.rates = check_rates(rates)
        self.deviation_form = _check_deviation_form(deviation_form)
        self.network = network
        self.penalty_trackers = [
            keras.metrics.Mean(name=f"penalty_{term}") for term in TERMS
        ]
        if getattr(network, "built", False):
            self.built = True

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The wrapped network's layers (the wrapper is transparent)."""
        return list(self.network.layers)

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def build(self, input_shape) -> None:
        if not self.network.built:
            self.network.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.network.compute_output_shape(input_shape)

    def penalties(self) -> dict[str, Any]:
        """The current unweighted penalties of the network (:func:`penalties`)."""
        return penalties(self.network, self.deviation_form)

    def _penalties_after(self, y_pred) -> dict[str, Any]:
        """Penalties whose variable reads are ordered after the forward pass that gave ``y_pred``.

        Why: with ``scale_gradient="ste"`` a scale's gradient comes from the penalties alone, so
        inside a traced TensorFlow train step its optimizer update does not data-depend on the
        forward pass; without this ordering the update could run while the forward pass still
        reads the scale, and the reported loss/metrics would mix old and new weights.
        """
        deps = (
            [t for t in tree.flatten(y_pred) if t is not None]
            if y_pred is not None
            else []
        )
        if deps and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.control_dependencies(deps):
                return self.penalties()
        return self.penalties()

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Task loss plus :math:`\\sum_t \\rho_t \\mathcal{P}_t`; updates the ``penalty_<term>`` trackers."""
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        values = self._penalties_after(y_pred)
        for term, tracker in zip(TERMS, self.penalty_trackers):
            tracker.update_state(values[term])
            rate = self.rates[term]
            if rate > 0:
                loss = loss + ops.cast(rate * values[term], loss.dtype)
        return loss

    def get_config(self) -> dict:
        """Serializable config: name, trainable, the wrapped network (serialized), rates, deviation form."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "network": keras.saving.serialize_keras_object(self.network),
            "rates": dict(self.rates),
            "deviation_form": self.deviation_form,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> LossTermsModel:
        """Rebuild the wrapper from :meth:`get_config`: deserialize the network, then wrap it.

        Arguments:
            config: the dict returned by :meth:`get_config`.
            custom_objects: extra classes for deserializing the network (lqs layers are registered).
        """
        config = dict(config)
        network = keras.saving.deserialize_keras_object(
            config.pop("network"), custom_objects=custom_objects
        )
        return cls(network=network, **config)


def with_loss_terms(
    model: keras.Model,
    rates: Mapping[str, float],
    deviation_form: str = DEFAULT_DEVIATION_FORM,
) -> LossTermsModel:
    """Return a model whose training loss is the task loss plus ``rate * penalty`` per loss term.

    :math:`L = L_{task} + \\rho_{inverse}\\mathcal{P}_{inverse} + \\rho_{max\\_bin}\\mathcal{P}_{max\\_bin}
    + \\rho_{deviation}\\mathcal{P}_{deviation}` (penalties: :func:`penalties`). The result is a
    :class:`LossTermsModel` that shares its layers and weights with ``model``; compile and fit it as
    usual. ``fit`` history holds ``penalty_inverse``, ``penalty_max_bin`` and ``penalty_deviation``
    (unweighted, per-epoch means over batches) for every term, also with rate 0. It saves with
    ``model.save`` and reloads with ``keras.models.load_model``.

    Arguments:
        model: a built Keras model with quantized layers (QDense/QConv2D, normally with
            ``scale_gradient="ste"`` so the scales learn only through the loss terms). A
            :class:`LossTermsModel` is unwrapped first (its rates are replaced).
        rates: ``{term: rate}`` with terms from :data:`TERMS` and rates >= 0; missing terms get 0.
        deviation_form: ``"implementation"`` (default, the thesis code's form that produced the
            published results) or ``"reconstructed"`` (the text's wording).

    Raises:
        ValueError: unknown term, negative/non-finite rate, unknown ``deviation_form``, or a model
            without quantized layers.

    References:
        Thesis section 3.2 ("Custom Loss Functions").
    """
    checked = check_rates(rates)
    _check_deviation_form(deviation_form)
    network = model.network if isinstance(model, LossTermsModel) else model
    if not quantized_layers(network):
        raise ValueError(
            "with_loss_terms needs a model with quantized layers (lqs.QDense/lqs.QConv2D); "
            f"model {getattr(network, 'name', network)!r} has none"
        )
    return LossTermsModel(
        network, checked, deviation_form, name=f"{network.name}_loss_terms"
    )
