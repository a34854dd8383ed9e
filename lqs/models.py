"""The thesis networks, buildable in every quantization flavour.

Architectures (:data:`ARCHS`; every layer has a fixed name, identical across flavours, so runs
can be compared layer by layer and weights copied by position):

* ``"mlp"`` -- the thesis MNIST net: ``Flatten -> Dense(128, relu) -> Dense(10, softmax)``, both
  dense layers quantized (weights and biases); ``784*128 + 128 + 128*10 + 10 = 101,770``
  parameters on 28x28x1 inputs. Names ``flatten, dense1, dense2``. Kernels: Glorot uniform.
* ``"cnn"`` -- the thesis CIFAR-10 net: three blocks of ``[Conv 3x3 same, ReLU -> BatchNorm] x 2``
  with 32/64/128 filters, each block followed by ``MaxPool 2`` and ``Dropout 0.2/0.3/0.4``;
  ``Flatten -> Dense(128, relu) -> BatchNorm -> Dropout 0.5 -> Dense(10, softmax)``. The six
  convolutions are quantized (thesis); the two dense layers only with ``quantize_dense=True``.
  Names ``conv{b}a, bn{b}a, conv{b}b, bn{b}b, pool{b}, drop{b}`` (b = 1..3), ``flatten, dense1,
  bn_dense, drop_dense, dense2``. Kernels: He uniform (the classic Keras CIFAR-10 recipe).
* ``"resnet"`` -- the Imagenette ResNet-like net (thesis 4.1: "an initial quantized convolutional
  block followed by four stages of residual blocks"): stem ``Conv 3x3/2 (32) -> BN -> ReLU``, then
  :data:`RESNET_STAGES` stages of :data:`RESNET_BLOCKS` basic block(s) each with 32/64/128/256
  filters, stride 2 from stage 2 on; a basic block is ``Conv 3x3 -> BN -> ReLU -> Conv 3x3 -> BN``
  plus a shortcut (identity, or ``Conv 1x1/stride -> BN`` when the shape changes), added, ReLU;
  then global average pooling and ``Dense(10, softmax)``. Every convolution (stem, blocks,
  projections) is quantized; the dense classifier only with ``quantize_dense=True``. On the
  default 64x64 Imagenette images the stages run at 32, 16, 8 and 4 pixels. Names ``stem_conv,
  stem_bn, stem_relu``, ``s{k}b{j}_{conv1,bn1,relu1,conv2,bn2,proj,proj_bn,add,out}``, ``gap, dense``.
  Kernels: He normal.

Flavours (:data:`FLAVOURS`): ``fp32`` (plain Keras ``Dense``/``Conv2D``), ``nested``
(:class:`lqs.layers.QDense`/:class:`lqs.layers.QConv2D`, ``scale_gradient="threshold"``),
``loss_terms`` (the same layers with ``scale_gradient="ste"``; the penalties are attached by the
experiment with :func:`lqs.losses.with_loss_terms`), ``lsq`` and ``fixed_bits`` (:mod:`lqs.baselines`
layers with ``bits``). Unquantized layers of a quantized flavour (the CNN's dense layers by default) are plain
Keras layers.

Granularity: ``kernel_granularity`` names the axis of the stored kernel with its own scales
(:data:`lqs.quantizers.GRANULARITY_AXES`). In the convolutional nets a quantized dense layer has
no ``channel``/``filter`` axis; it gets the dense analogue instead: ``channel`` (per input
channel) -> ``row`` (per input feature), ``filter`` (per output channel) -> ``column`` (per
output unit).

Determinism: :func:`build_model` calls ``keras.utils.set_random_seed(seed)`` and gives every
initializer and dropout layer its own seed derived from ``seed``, so the same arguments build
bit-identical models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from lqs.layers import QConv2D, QDense
from lqs.protocol import is_quantized_layer
from lqs.quantizers import DENSE_GRANULARITIES, GRANULARITIES, NestedQuantizer

__all__ = [
    "ARCHS",
    "FLAVOURS",
    "QUANTIZED_FLAVOURS",
    "RESNET_FILTERS",
    "RESNET_STAGES",
    "RESNET_BLOCKS",
    "CNN_FILTERS",
    "CNN_DROPOUT",
    "NESTED_OPTIONS",
    "WEIGHT_INITS",
    "THESIS_INIT_STDDEV",
    "allowed_kernel_granularities",
    "build_model",
    "quantized_layer_names",
    "float_param_count",
    "copy_float_weights",
]

#: network architectures (module docstring)
ARCHS: tuple[str, ...] = ("mlp", "cnn", "resnet")
#: flavours a network can be built in (post-training min-max quantization is not one: it is
#: :func:`lqs.baselines.ptq_minmax` applied to a trained ``fp32`` model)
FLAVOURS: tuple[str, ...] = ("fp32", "nested", "loss_terms", "lsq", "fixed_bits")
QUANTIZED_FLAVOURS: tuple[str, ...] = tuple(f for f in FLAVOURS if f != "fp32")
CNN_FILTERS: tuple[int, ...] = (32, 64, 128)
CNN_DROPOUT: tuple[float, ...] = (0.2, 0.3, 0.4)
RESNET_FILTERS: tuple[int, ...] = (32, 64, 128, 256)
RESNET_STAGES: int = len(RESNET_FILTERS)
RESNET_BLOCKS: int = 1
#: keyword options of the nested quantizer accepted through ``**quantizer_options``
NESTED_OPTIONS: tuple[str, ...] = (
    "aggregate",
    "all_above_vote",
    "scale_init",
    "min_scale",
    "init_bits",
)

#: weight initialisations: ``"default"`` (the architecture's usual one: Glorot uniform for the
#: MLP, He uniform/normal for the conv nets, zero biases) or ``"random_normal"`` (the thesis's
#: "weights and biases are initialized with random normal values": kernels *and* biases drawn
#: from N(0, THESIS_INIT_STDDEV^2), Keras's ``RandomNormal`` default)
WEIGHT_INITS: tuple[str, ...] = ("default", "random_normal")
#: standard deviation of the ``"random_normal"`` initialisation (Keras's ``RandomNormal`` default)
THESIS_INIT_STDDEV = 0.05

_DENSE_ANALOGUE = {"channel": "row", "filter": "column"}
_SEED_STRIDE = 10007  # per-model seed spacing; a model has far fewer seeded objects


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(
            f"unknown {kind} {value!r}; allowed: {', '.join(map(repr, allowed))}"
        )
    return value


class _Factory:
    """Creates the conv/dense/dropout layers of one model in one flavour, with derived seeds."""

    def __init__(
        self,
        flavour: str,
        *,
        kernel_granularity: str,
        bias_granularity: str,
        quantize_bias: bool,
        threshold: float,
        bits: int,
        l2: float,
        seed: int,
        kernel_init: str,
        weight_init: str,
        quantizer_options: dict[str, Any],
    ):
        self.flavour = flavour
        self.kernel_granularity = kernel_granularity
        self.bias_granularity = bias_granularity
        self.quantize_bias = bool(quantize_bias)
        self.threshold = threshold
        self.bits = bits
        self.l2 = float(l2)
        self.seed = int(seed)
        self.kernel_init = kernel_init
        self.weight_init = weight_init
        self.options = dict(quantizer_options)
        self._count = 0
        self.baselines = None
        if flavour in ("lsq", "fixed_bits"):
            from lqs import baselines  # imported here: only these flavours need it

            self.baselines = baselines
        if flavour in ("nested", "loss_terms"):
            unknown = sorted(set(self.options) - set(NESTED_OPTIONS))
            if unknown:
                raise ValueError(
                    f"unknown quantizer option(s) {', '.join(map(repr, unknown))} for flavour {flavour!r}; "
                    f"allowed: {', '.join(NESTED_OPTIONS)}"
                )
        elif flavour == "fp32" and self.options:
            raise ValueError(
                f"flavour 'fp32' takes no quantizer options, got {sorted(self.options)}"
            )

    def next_seed(self) -> int:
        self._count += 1
        return self.seed * _SEED_STRIDE + self._count

    def _initializers(self) -> tuple[Any, Any]:
        """(kernel, bias) initializers of the next layer, each with its own derived seed."""
        if self.weight_init == "random_normal":
            return tuple(
                keras.initializers.RandomNormal(
                    stddev=THESIS_INIT_STDDEV, seed=self.next_seed()
                )
                for _ in range(2)
            )
        kernel = getattr(keras.initializers, self.kernel_init)(seed=self.next_seed())
        return kernel, keras.initializers.Zeros()

    def _common(self) -> dict[str, Any]:
        kernel, bias = self._initializers()
        return {
            "kernel_initializer": kernel,
            "bias_initializer": bias,
            "kernel_regularizer": keras.regularizers.L2(self.l2)
            if self.l2 > 0
            else None,
        }

    def _quant_kwargs(self, granularity: str, cls: type) -> dict[str, Any]:
        if self.flavour in ("nested", "loss_terms"):
            scale_gradient = "threshold" if self.flavour == "nested" else "ste"

            def quantizer(
                g: str,
            ) -> NestedQuantizer:  # a template: each layer copies it
                return NestedQuantizer(
                    g, self.threshold, scale_gradient=scale_gradient, **self.options
                )

            bias = quantizer(self.bias_granularity) if self.quantize_bias else None
            return {"kernel_quantizer": quantizer(granularity), "bias_quantizer": bias}
        kwargs = {
            "bits": self.bits,
            "granularity": granularity,
            "quantize_bias": self.quantize_bias,
            **self.options,
        }
        accepted = inspect.signature(cls.__init__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown:
                raise ValueError(f"{cls.__name__} does not accept option(s) {unknown}")
        return kwargs

    def dense(
        self, units: int, activation: str | None, name: str, quantized: bool
    ) -> keras.layers.Layer:
        common = self._common()
        if not quantized or self.flavour == "fp32":
            return keras.layers.Dense(units, activation=activation, name=name, **common)
        granularity = _DENSE_ANALOGUE.get(
            self.kernel_granularity, self.kernel_granularity
        )
        cls = {
            "nested": QDense,
            "loss_terms": QDense,
            "lsq": getattr(self.baselines, "LSQDense", None),
            "fixed_bits": getattr(self.baselines, "FixedBitsDense", None),
        }[self.flavour]
        return cls(
            units,
            activation=activation,
            name=name,
            **common,
            **self._quant_kwargs(granularity, cls),
        )

    def conv(
        self,
        filters: int,
        kernel_size: int,
        name: str,
        *,
        strides: int = 1,
        activation: str | None = None,
    ) -> keras.layers.Layer:
        common = self._common()
        args = dict(
            strides=strides, padding="same", activation=activation, name=name, **common
        )
        if self.flavour == "fp32":
            return keras.layers.Conv2D(filters, kernel_size, **args)
        cls = {
            "nested": QConv2D,
            "loss_terms": QConv2D,
            "lsq": getattr(self.baselines, "LSQConv2D", None),
            "fixed_bits": getattr(self.baselines, "FixedBitsConv2D", None),
        }[self.flavour]
        return cls(
            filters,
            kernel_size,
            **args,
            **self._quant_kwargs(self.kernel_granularity, cls),
        )

    def dropout(self, rate: float, name: str) -> keras.layers.Layer:
        return keras.layers.Dropout(rate, seed=self.next_seed(), name=name)


def _mlp(f: _Factory, inputs, num_classes: int, quantize_dense: bool):
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = f.dense(128, "relu", "dense1", quantized=quantize_dense)(x)
    return f.dense(num_classes, "softmax", "dense2", quantized=quantize_dense)(x)


def _cnn(f: _Factory, inputs, num_classes: int, quantize_dense: bool):
    x = inputs
    for b, (filters, rate) in enumerate(zip(CNN_FILTERS, CNN_DROPOUT), start=1):
        for part in "ab":
            x = f.conv(filters, 3, f"conv{b}{part}", activation="relu")(x)
            x = keras.layers.BatchNormalization(name=f"bn{b}{part}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
        x = f.dropout(rate, f"drop{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = f.dense(128, "relu", "dense1", quantized=quantize_dense)(x)
    x = keras.layers.BatchNormalization(name="bn_dense")(x)
    x = f.dropout(0.5, "drop_dense")(x)
    return f.dense(num_classes, "softmax", "dense2", quantized=quantize_dense)(x)


def _basic_block(f: _Factory, x, filters: int, stride: int, name: str):
    shortcut = x
    y = f.conv(filters, 3, f"{name}_conv1", strides=stride)(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = f.conv(filters, 3, f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = f.conv(filters, 1, f"{name}_proj", strides=stride)(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _resnet(f: _Factory, inputs, num_classes: int, quantize_dense: bool):
    x = f.conv(RESNET_FILTERS[0], 3, "stem_conv", strides=2)(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for k, filters in enumerate(RESNET_FILTERS, start=1):
        for j in range(1, RESNET_BLOCKS + 1):
            stride = 2 if (k > 1 and j == 1) else 1
            x = _basic_block(f, x, filters, stride, f"s{k}b{j}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return f.dense(num_classes, "softmax", "dense", quantized=quantize_dense)(x)


_BUILDERS: dict[str, tuple[Callable, str]] = {
    "mlp": (_mlp, "GlorotUniform"),
    "cnn": (_cnn, "HeUniform"),
    "resnet": (_resnet, "HeNormal"),
}
_MIN_SIDE = {"mlp": 1, "cnn": 8, "resnet": 16}


def build_model(
    arch: str,
    flavour: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int = 10,
    kernel_granularity: str = "scalar",
    bias_granularity: str = "scalar",
    quantize_bias: bool = True,
    threshold: float = 1e-9,
    bits: int = 4,
    l2: float = 0.0,
    seed: int = 0,
    quantize_dense: bool | None = None,
    weight_init: str = "default",
    **quantizer_options: Any,
) -> keras.Model:
    """Build one thesis network (a functional ``keras.Model`` named ``<arch>_<flavour>``).

    Arguments:
        arch: ``"mlp"``, ``"cnn"`` or ``"resnet"`` (module docstring).
        flavour: ``"fp32"``, ``"nested"``, ``"loss_terms"``, ``"lsq"`` or ``"fixed_bits"``.
        input_shape: ``(H, W, C)`` of one image.
        num_classes: units of the softmax layer.
        kernel_granularity: scale granularity of quantized kernels (dense layers of the conv nets
            use the dense analogue of ``channel``/``filter``, see the module docstring).
        bias_granularity: ``"scalar"`` or ``"row"`` (nested / loss-term flavours).
        quantize_bias: quantize the biases of quantized layers.
        threshold: :math:`\\lambda` of the nested scale gradient (flavour ``nested``).
        bits: bit width of the ``lsq`` and ``fixed_bits`` layers.
        l2: coefficient of ``keras.regularizers.L2`` on every conv/dense kernel (0: none).
        seed: seeds ``keras.utils.set_random_seed`` and every initializer/dropout layer.
        quantize_dense: quantize the dense layers; ``None`` = the thesis choice (``mlp``: yes,
            ``cnn``/``resnet``: no, only the convolutions). ``False`` is not allowed for ``mlp``.
        weight_init: :data:`WEIGHT_INITS`: ``"default"`` or ``"random_normal"`` (the
            thesis's setting: kernels and biases from N(0, 0.05^2)).
        **quantizer_options: extra layer options; nested/loss-term flavours accept
            :data:`NESTED_OPTIONS` (``aggregate``, ``all_above_vote``, ``scale_init``,
            ``min_scale``, ``init_bits``), the baselines what their layers accept.

    Raises:
        ValueError: unknown arch/flavour/option, a granularity the layers do not have, an input too
            small for the network, or ``quantize_dense=False`` for the MLP.
    """
    _check("arch", arch, ARCHS)
    _check("flavour", flavour, FLAVOURS)
    _check("weight_init", weight_init, WEIGHT_INITS)
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"input_shape must be (H, W, C) with positive sizes, got {input_shape!r}"
        )
    if arch != "mlp" and min(input_shape[:2]) < _MIN_SIDE[arch]:
        raise ValueError(
            f"arch {arch!r} needs images of at least {_MIN_SIDE[arch]}x{_MIN_SIDE[arch]} pixels, got {input_shape!r}"
        )
    if quantize_dense is None:
        quantize_dense = arch == "mlp"
    if arch == "mlp" and not quantize_dense:
        raise ValueError(
            "quantize_dense=False leaves the MLP without quantized layers; allowed: True or None"
        )
    if flavour != "fp32":
        allowed = allowed_kernel_granularities(arch, flavour)
        if kernel_granularity not in allowed:
            raise ValueError(
                f"kernel_granularity {kernel_granularity!r} does not fit arch {arch!r} with flavour {flavour!r}; "
                f"allowed: {', '.join(map(repr, allowed))}"
            )
    builder, kernel_init = _BUILDERS[arch]
    keras.utils.set_random_seed(int(seed))
    factory = _Factory(
        flavour,
        kernel_granularity=kernel_granularity,
        bias_granularity=bias_granularity,
        quantize_bias=quantize_bias,
        threshold=threshold,
        bits=bits,
        l2=l2,
        seed=seed,
        kernel_init=kernel_init,
        weight_init=weight_init,
        quantizer_options=quantizer_options,
    )
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = builder(factory, inputs, int(num_classes), bool(quantize_dense))
    return keras.Model(inputs, outputs, name=f"{arch}_{flavour}")


def allowed_kernel_granularities(arch: str, flavour: str) -> tuple[str, ...]:
    """Kernel granularities that fit ``arch`` built in ``flavour``.

    The MLP's dense kernels ``(in, out)`` take ``scalar``/``row``/``column``; the convolutional nets
    also ``channel`` (per input channel) and ``filter`` (per output channel) -- their quantized
    dense layers, if any, then use ``row`` resp. ``column``. ``fp32`` has no scales: ``()``.
    """
    _check("arch", arch, ARCHS)
    _check("flavour", flavour, FLAVOURS)
    if flavour == "fp32":
        return ()
    return DENSE_GRANULARITIES if arch == "mlp" else GRANULARITIES


def quantized_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers that implement the quantized-layer protocol, in model order."""
    return [layer.name for layer in model.layers if is_quantized_layer(layer)]


def float_param_count(model: keras.Model) -> int:
    """Parameter elements of the network without quantizer scales/steps (kernels, biases, BatchNorm)."""
    total = 0
    for layer in model.layers:
        if is_quantized_layer(layer):
            total += sum(int(np.size(t.values)) for t in layer.integer_parameters())
            total += sum(int(np.size(a)) for a in layer.float_parameters().values())
        else:
            total += sum(int(np.prod(v.shape)) for v in layer.weights)
    return total


def _weight_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if layer.weights]


def copy_float_weights(
    src: keras.Model, dst: keras.Model, *, init_bits: int | None = None
) -> keras.Model:
    """Copy the float weights of a trained ``fp32`` model into a model of another flavour (post-training mode).

    Layers holding weights are paired by position (the builders name and order them identically in
    every flavour; names and shapes are checked). Kernels and biases go into the quantized
    layers' float parameters; BatchNorm layers get all four of their weights (moving statistics
    included); plain layers get all their weights.

    Scales: the nested (and loss-term) quantizers keep their initial scales (``100 * eps``, the
    thesis implementation, under which the copied weights are quantized with the finest
    resolution and the threshold gradient coarsens them during training) unless ``init_bits`` is
    given, in which case every scale starts at ``max|P| / 2^(init_bits-1)`` of the copied parameter
    (:meth:`lqs.quantizers.NestedQuantizer.init_from`). Baseline layers that offer
    ``initialize_steps()`` (LSQ: step sizes from the copied weights, as the paper does) have it
    called; fixed-bit layers compute their scales from the weights at every call anyway.

    Arguments:
        src: the trained FP32 model (built by :func:`build_model` with the same arch and input).
        dst: the model to fill (a :class:`lqs.losses.LossTermsModel` is seen through).
        init_bits: optional bit width for data-driven scale initialisation of nested quantizers.

    Returns:
        ``dst``.

    Raises:
        ValueError: the two models do not have matching layers (count, names or shapes).
    """
    network = getattr(dst, "network", dst)
    src_layers, dst_layers = _weight_layers(src), _weight_layers(network)
    if len(src_layers) != len(dst_layers):
        raise ValueError(
            f"models do not match: {len(src_layers)} layers with weights in {src.name!r}, "
            f"{len(dst_layers)} in {network.name!r}; build both with the same arch and input shape"
        )
    for s, d in zip(src_layers, dst_layers):
        if s.name != d.name:
            raise ValueError(
                f"layer {s.name!r} of {src.name!r} is paired with {d.name!r} of {network.name!r}"
            )
        if isinstance(s, keras.layers.BatchNormalization) or not hasattr(s, "kernel"):
            if len(s.weights) != len(d.weights):
                raise ValueError(
                    f"layer {s.name!r}: {len(s.weights)} weights vs {len(d.weights)}"
                )
            d.set_weights(s.get_weights())
            continue
        if tuple(s.kernel.shape) != tuple(d.kernel.shape):
            raise ValueError(
                f"layer {s.name!r}: kernel shape {tuple(s.kernel.shape)} vs {tuple(d.kernel.shape)}"
            )
        d.kernel.assign(s.kernel)
        if getattr(s, "bias", None) is not None:
            if getattr(d, "bias", None) is None:
                raise ValueError(
                    f"layer {s.name!r} has a bias, {d.name!r} of {network.name!r} has none"
                )
            d.bias.assign(s.bias)
        if init_bits is not None and getattr(d, "kernel_quantizer", None) is not None:
            d.kernel_quantizer.init_from(d.kernel, init_bits)
            if getattr(d, "bias_quantizer", None) is not None:
                d.bias_quantizer.init_from(d.bias, init_bits)
        if callable(getattr(d, "initialize_steps", None)):
            d.initialize_steps()  # LSQ: steps from the copied weights (Esser et al.)
    return dst
