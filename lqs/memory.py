"""Memory accounting: one definition of "how many bits does this model need", used everywhere.

For a quantized parameter with integer values :math:`P_q` and one stored scale per scale group
:math:`G`, with :math:`\\ell_G = \\min_{i \\in G} P_{q,i}` and :math:`h_G = \\max_{i \\in G} P_{q,i}`,
two widths of a group are computed from the same data:

.. math::

    b_G^{\\mathrm{sm}} = \\lceil \\log_2(\\max_{i \\in G} |P_{q,i}| + 1) \\rceil + 1
    \\qquad \\text{(sign-magnitude, symmetric: the thesis's definition, the default)}

.. math::

    b_G^{\\mathrm{2c}} = \\min \\{\\, b \\ge 1 : -2^{b-1} \\le \\ell_G \\text{ and }
    h_G \\le 2^{b-1} - 1 \\,\\}
    \\qquad \\text{(two's complement)}

and in both cases

.. math::

    \\text{bits}(P) = \\sum_G b_G \\cdot |G| + 32 \\cdot n_{groups},

i.e. the signed integer width that holds every value of the group (a group whose values are all 0
needs 1 bit under both), times the group's element count, plus one 32-bit float per stored scale.

The sign-magnitude width is symmetric in the sign: :math:`P_q = -4` needs
:math:`\\lceil\\log_2 5\\rceil + 1 = 4` bits. It is the thesis's definition and the default
(``bits``, ``total_bits``, ``compression``, ...). Two's complement fits a signed :math:`b`-bit
grid :math:`\\{-2^{b-1}, \\dots, 2^{b-1} - 1\\}` (e.g. an LSQ or min-max grid) in exactly
:math:`b` bits: :math:`-4` needs 3 bits, :math:`+4` needs 4; it is never wider than the
sign-magnitude width and at most one bit narrower. Its figures carry the suffix ``_twos``
(``bits_twos``, ``total_bits_twos``, ``compression_twos``, ...); the book shows both. Both are
evaluated with exact integer arithmetic on Python ints: :math:`\\lceil\\log_2(m+1)\\rceil` is the
bit length of :math:`m \\ge 0`, and the two's-complement width of one integer :math:`v` is the bit
length of :math:`v` (:math:`v \\ge 0`) or of :math:`-v - 1` (:math:`v < 0`), plus 1.

Every parameter that is not quantized counts 32 bits per element under both definitions: plain
Keras layers (``Dense``, ``Conv2D``, ``BatchNormalization`` including its non-trainable moving
statistics, ...) and the ``float_parameters()`` of quantized layers (e.g. an unquantized bias).
The FP32 reference counts 32 bits for every parameter element and nothing for scales (a float
model has none).

Which layers are quantized: those implementing the quantized-layer protocol (:class:`lqs.protocol.QuantizedLayer`),
``integer_parameters() -> list[IntegerTensor]`` and ``float_parameters() -> dict``. Such a layer is
accounted from the protocol only; its own weights (parameters and scale variables) and its
sublayers (the ``NestedQuantizer`` objects) are not counted again. Nested models (a functional
model holding a ``Sequential``, ...) are walked recursively; a layer or variable reached twice
(shared layers, tied weights) is counted once.

``n_params`` counts parameter elements (not scales); ``n_scales`` counts stored scales.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lqs.protocol import is_quantized_layer
from lqs.quantizers import IntegerTensor, group_axes

__all__ = [
    "FLOAT_BITS",
    "SCALE_BITS",
    "DEFINITIONS",
    "TABLE_COLUMNS",
    "LayerEntry",
    "bit_width",
    "twos_complement_width",
    "group_bits",
    "tensor_bits",
    "float_bits",
    "iter_layers",
    "layer_table",
    "model_summary",
    "layer_summary",
    "summary",
]

#: bits of one float32 element (unquantized parameters and the FP32 reference)
FLOAT_BITS: int = 32
#: bits of one stored scale
SCALE_BITS: int = 32
#: the two width definitions of :func:`group_bits`; the first (the thesis's) is the default
DEFINITIONS: tuple[str, ...] = ("sign_magnitude", "twos_complement")

#: columns of :func:`layer_table`, in order
TABLE_COLUMNS: tuple[str, ...] = (
    "path",
    "layer",
    "layer_type",
    "parameter",
    "shape",
    "granularity",
    "quantized",
    "n_params",
    "n_groups",
    "bits_min",
    "bits_max",
    "bits_mean",
    "int_bits",
    "scale_bits",
    "float_bits",
    "total_bits",
    "fp32_bits",
    "kib",
    "bits_per_param",
    "unique_values",
    "value_min",
    "value_max",
    "compression",
    "bits_min_twos",
    "bits_max_twos",
    "bits_mean_twos",
    "int_bits_twos",
    "total_bits_twos",
    "kib_twos",
    "bits_per_param_twos",
    "compression_twos",
)


# --------------------------------------------------------------------------------------------
# pure NumPy functions
# --------------------------------------------------------------------------------------------


def bit_width(max_abs: int) -> int:
    """Signed width holding integers of magnitude up to ``max_abs``: ``ceil(log2(max_abs + 1)) + 1``.

    Exact for any Python/NumPy integer (``ceil(log2(m + 1))`` is the bit length of ``m``);
    ``bit_width(0) == 1``, ``bit_width(4) == 4``, ``bit_width(127) == 8``, ``bit_width(128) == 9``.
    """
    m = int(max_abs)
    if m < 0:
        raise ValueError(f"max_abs must be >= 0, got {max_abs!r}")
    return m.bit_length() + 1


def twos_complement_width(lo: int, hi: int) -> int:
    """Smallest two's-complement width ``b`` with ``-2**(b-1) <= lo`` and ``hi <= 2**(b-1) - 1``.

    Exact for any Python/NumPy integers (no floating point): the width of one integer ``v`` is
    ``v.bit_length() + 1`` for ``v >= 0`` and ``(-v - 1).bit_length() + 1`` for ``v < 0``, and the
    range needs the wider of its two ends. ``twos_complement_width(0, 0) == 1``,
    ``(-1, 0) -> 1``, ``(0, 1) -> 2``, ``(-4, 3) -> 3`` (a 3-bit grid), ``(-5, 3) -> 4``,
    ``(-128, 127) -> 8``, ``(0, 128) -> 9``.

    Arguments:
        lo: the smallest integer to hold (a group's ``min P_q``).
        hi: the largest integer to hold (a group's ``max P_q``); ``lo <= hi``.

    Raises:
        ValueError: ``lo > hi``.
        TypeError: ``lo`` or ``hi`` is not an integer.
    """
    lo_, hi_ = operator.index(lo), operator.index(hi)
    if lo_ > hi_:
        raise ValueError(
            f"twos_complement_width needs lo <= hi, got lo={lo!r}, hi={hi!r}; "
            "pass the group's minimum as lo and its maximum as hi"
        )
    return max(_twos_width(lo_), _twos_width(hi_))


def _twos_width(v: int) -> int:
    """Two's-complement width of one Python int (``~v == -v - 1``)."""
    return (v if v >= 0 else ~v).bit_length() + 1


def _width(lo: int, hi: int, definition: str) -> int:
    if definition == "sign_magnitude":
        return bit_width(max(abs(lo), abs(hi)))
    return twos_complement_width(lo, hi)


def _check_definition(definition: str) -> str:
    if definition not in DEFINITIONS:
        raise ValueError(
            f"definition must be one of {DEFINITIONS}, got {definition!r}; "
            'use "sign_magnitude" (the thesis\'s, default) or "twos_complement"'
        )
    return definition


def _check_integer_values(values: np.ndarray) -> np.ndarray:
    """``values`` as an array of whole numbers, in its own dtype (never cast: nothing wraps).

    Accepted: integer dtypes, floats holding whole numbers, and object arrays of Python ints.
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr
    if (
        arr.dtype.kind == "f"
        and np.all(np.isfinite(arr))
        and np.all(arr == np.round(arr))
    ):
        return arr
    if arr.dtype.kind == "O" and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.flat
    ):
        return arr
    raise ValueError(
        f"values must be integers (P_q), got dtype {arr.dtype} with non-integer entries"
    )


def _group_min_max(
    values: np.ndarray, scale_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group ``(min P_q, max P_q)``, two object arrays of Python ints (exact, no int64 overflow).

    The extremes are taken in the values' own dtype (exact for every integer dtype, ``uint64``
    included, for floats holding whole numbers and for Python ints) and only then converted to
    Python ints; both arrays keep the reduced axes (size 1).
    """
    arr = _check_integer_values(values)
    axes = tuple(group_axes(arr.shape, scale_shape))
    if arr.size == 0:
        raise ValueError(
            "values is empty; a quantized parameter needs at least one element"
        )
    lo = np.min(arr, axis=axes, keepdims=True)
    hi = np.max(arr, axis=axes, keepdims=True)
    lo_out = np.empty(lo.shape, dtype=object)
    hi_out = np.empty(hi.shape, dtype=object)
    for idx in np.ndindex(lo.shape):
        lo_out[idx] = int(lo[idx])
        hi_out[idx] = int(hi[idx])
    return lo_out, hi_out


def _widths(
    lo: np.ndarray, hi: np.ndarray, scale_shape: tuple[int, ...], definition: str
) -> np.ndarray:
    """One width per group (int64 array of ``scale_shape``) from :func:`_group_min_max`."""
    bits = [_width(a, b, definition) for a, b in zip(lo.ravel(), hi.ravel())]
    return np.array(bits, dtype=np.int64).reshape(scale_shape)


def group_bits(
    values: np.ndarray,
    scale_shape: Sequence[int],
    *,
    definition: str = "sign_magnitude",
) -> np.ndarray:
    """Bits per scale group of the integer values ``P_q``, under either width definition.

    ``definition="sign_magnitude"`` (default, the thesis's): ``ceil(log2(max|P_q| + 1)) + 1``.
    ``definition="twos_complement"``: :func:`twos_complement_width` of the group's
    ``(min P_q, max P_q)``, so a signed ``b``-bit grid ``-2**(b-1) ... 2**(b-1) - 1`` needs ``b``.
    An all-zero group needs 1 bit under both.

    Arguments:
        values: the integers ``P_q`` (any integer dtype; floats holding whole numbers and object
            arrays of Python ints are accepted).
        scale_shape: shape of the scale array, ``(1,)`` for one scale or the parameter's rank with
            size-1 axes (see :func:`lqs.quantizers.group_axes`).
        definition: one of :data:`DEFINITIONS`.

    Returns:
        int64 array of the scale's shape (``scale_shape`` as given) with one width per group.
    """
    _check_definition(definition)
    scale_shape = tuple(int(d) for d in scale_shape) or (1,)  # a 0-d scale is one group
    lo, hi = _group_min_max(values, scale_shape)
    return _widths(lo, hi, scale_shape, definition)


def float_bits(n_params: int) -> dict[str, Any]:
    """Accounting of ``n_params`` float32 elements (same keys as :func:`tensor_bits`).

    A float element is 32 bits under both definitions, so the ``_twos`` keys equal the others.
    """
    n = int(n_params)
    return {
        "quantized": False,
        "n_params": n,
        "n_groups": 0,
        "bits_min": float(FLOAT_BITS),
        "bits_max": float(FLOAT_BITS),
        "bits_mean": float(FLOAT_BITS),
        "int_bits": 0,
        "scale_bits": 0,
        "float_bits": FLOAT_BITS * n,
        "total_bits": FLOAT_BITS * n,
        "fp32_bits": FLOAT_BITS * n,
        "unique_values": math.nan,
        "value_min": math.nan,
        "value_max": math.nan,
        "bits_min_twos": float(FLOAT_BITS),
        "bits_max_twos": float(FLOAT_BITS),
        "bits_mean_twos": float(FLOAT_BITS),
        "int_bits_twos": 0,
        "total_bits_twos": FLOAT_BITS * n,
    }


def tensor_bits(int_tensor: IntegerTensor) -> dict[str, Any]:
    """Accounting of one quantized parameter (an :class:`lqs.quantizers.IntegerTensor`).

    Returns a dict with ``shape``, ``scale_shape``, ``granularity``, ``quantized`` (True),
    ``n_params``, ``n_groups``, ``group_size`` (elements per group), ``bits`` (int64 array, one
    width per group, scale's shape), ``bits_min``, ``bits_max``, ``bits_mean`` (mean over the
    groups weighted by element count), ``int_bits`` (:math:`\\sum_G b_G |G|`), ``scale_bits``
    (:math:`32 n_{groups}`), ``float_bits`` (0), ``total_bits``, ``fp32_bits``
    (:math:`32 n_{params}`), ``unique_values``, ``value_min``, ``value_max`` (of :math:`P_q`),
    all under the sign-magnitude definition (the thesis's); and the same figures under the
    two's-complement definition, from the same per-group minima and maxima: ``bits_twos``,
    ``bits_min_twos``, ``bits_max_twos``, ``bits_mean_twos``, ``int_bits_twos`` and
    ``total_bits_twos`` (``int_bits_twos + scale_bits``).
    """
    values = _check_integer_values(int_tensor.values)
    scale_shape = tuple(int(d) for d in np.shape(int_tensor.scale)) or (1,)
    lo, hi = _group_min_max(values, scale_shape)
    bits = _widths(lo, hi, scale_shape, "sign_magnitude")
    bits_twos = _widths(lo, hi, scale_shape, "twos_complement")
    n_params = int(values.size)
    n_groups = int(bits.size)
    group_size = n_params // n_groups
    int_bits = int(bits.sum()) * group_size
    int_bits_twos = int(bits_twos.sum()) * group_size
    scale_bits = SCALE_BITS * n_groups
    return {
        "shape": tuple(int(d) for d in values.shape),
        "scale_shape": scale_shape,
        "granularity": int_tensor.granularity,
        "quantized": True,
        "n_params": n_params,
        "n_groups": n_groups,
        "group_size": group_size,
        "bits": bits,
        "bits_min": float(bits.min()),
        "bits_max": float(bits.max()),
        "bits_mean": int_bits / n_params,
        "int_bits": int_bits,
        "scale_bits": scale_bits,
        "float_bits": 0,
        "total_bits": int_bits + scale_bits,
        "fp32_bits": FLOAT_BITS * n_params,
        "unique_values": int(np.unique(values).size),
        "value_min": min(lo.flat),
        "value_max": max(hi.flat),
        "bits_twos": bits_twos,
        "bits_min_twos": float(bits_twos.min()),
        "bits_max_twos": float(bits_twos.max()),
        "bits_mean_twos": int_bits_twos / n_params,
        "int_bits_twos": int_bits_twos,
        "total_bits_twos": int_bits_twos + scale_bits,
    }


# --------------------------------------------------------------------------------------------
# walking a model
# --------------------------------------------------------------------------------------------


@dataclass
class LayerEntry:
    """One accounted layer, as yielded by :func:`iter_layers`.

    Attributes:
        path: names from the outermost model down to this layer joined by ``/`` (the outermost
            model's own name is left out; a model's own weights get its name or ``""``).
        layer: the Keras layer (or model).
        quantized: True for a protocol layer (then ``variables`` is empty: use the protocol).
        variables: for a plain layer, its own weights not counted before (trainable and not).
    """

    path: str
    layer: Any
    quantized: bool
    variables: list = field(default_factory=list)


def _children(layer: Any) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    if callable(flatten):
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []) or [])


def iter_layers(model: Any) -> Iterator[LayerEntry]:
    """Walk ``model`` depth-first and yield every layer that holds parameters, each once.

    Quantized (protocol) layers are yielded as a whole and not entered; for other layers, the
    children are visited first and the layer then yields its remaining own weights (a model's own
    variables, if any). A layer or variable already reached is skipped, so shared layers and tied
    weights are counted once. Layers without weights are not yielded.

    Raises:
        ValueError: the model (or a sublayer) is not built, so its weights do not exist yet.
    """
    seen_layers: set[int] = set()
    counted_vars: set[int] = set()

    def visit(layer: Any, path: str) -> Iterator[LayerEntry]:
        if id(layer) in seen_layers:
            return
        seen_layers.add(id(layer))
        if not getattr(layer, "built", True):
            raise ValueError(
                f"layer {path or layer.name!r} is not built; call the model on data or build it "
                "(model.build(input_shape) / keras.Input) before accounting its memory"
            )
        if is_quantized_layer(layer):
            counted_vars.update(id(v) for v in layer.weights)
            yield LayerEntry(path or layer.name, layer, True)
            return
        for child in _children(layer):
            yield from visit(child, f"{path}/{child.name}" if path else child.name)
        own = []
        for v in layer.weights:
            if id(v) not in counted_vars:
                counted_vars.add(id(v))
                own.append(v)
        if own:
            yield LayerEntry(path or layer.name, layer, False, own)

    yield from visit(model, "")


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _row(
    entry: LayerEntry, parameter: str, acc: dict[str, Any], shape, granularity
) -> dict[str, Any]:
    row = {
        "path": entry.path,
        "layer": entry.layer.name,
        "layer_type": type(entry.layer).__name__,
        "parameter": parameter,
        "shape": tuple(int(d) for d in shape),
        "granularity": granularity,
    }
    for key in TABLE_COLUMNS:
        if key in acc and key not in row:
            row[key] = acc[key]
    for suffix in ("", "_twos"):
        total = row[f"total_bits{suffix}"]
        row[f"kib{suffix}"] = total / 8 / 1024
        row[f"bits_per_param{suffix}"] = (
            total / row["n_params"] if row["n_params"] else math.nan
        )
        row[f"compression{suffix}"] = row["fp32_bits"] / total if total else math.nan
    return row


def _check_protocol_layer(
    entry: LayerEntry, ints: list[IntegerTensor], floats: dict
) -> None:
    """Warn when a protocol layer holds weights that neither its parameters nor its scales explain."""
    accounted = sum(int(np.size(t.values)) + int(np.size(t.scale)) for t in ints)
    accounted += sum(int(np.size(a)) for a in floats.values())
    held = sum(int(np.prod(v.shape)) for v in entry.layer.weights)
    if held > accounted:
        warnings.warn(
            f"quantized layer {entry.path!r} holds {held} weight elements but its integer_parameters()"
            f" + scales + float_parameters() explain only {accounted}; the rest is not accounted",
            stacklevel=3,
        )


def layer_table(model: Any) -> list[dict[str, Any]]:
    """One row (a dict with the keys :data:`TABLE_COLUMNS`) per (layer, parameter) with its memory.

    ``path`` is the layer's nesting path, ``layer`` its name. Quantized parameters get their
    per-group widths (``bits_min/max/mean``, ``int_bits``), ``scale_bits = 32 * n_groups`` and
    the statistics of :math:`P_q` (``unique_values``, ``value_min``, ``value_max``); float
    parameters get ``n_groups = 0``, 32 bits, ``float_bits = 32 * n_params`` and NaN statistics.
    Always ``total_bits = int_bits + scale_bits + float_bits``; ``kib = total_bits / 8 / 1024``;
    ``compression = fp32_bits / total_bits``. The columns ending in ``_twos`` are the same figures
    under the two's-complement width (``total_bits_twos = int_bits_twos + scale_bits +
    float_bits``, ``compression_twos = fp32_bits / total_bits_twos``, ...); for float parameters
    they equal the others. ``pandas.DataFrame(rows)`` turns it into a table.
    """
    rows: list[dict[str, Any]] = []
    for entry in iter_layers(model):
        if entry.quantized:
            ints = list(entry.layer.integer_parameters())
            floats = dict(entry.layer.float_parameters())
            _check_protocol_layer(entry, ints, floats)
            for t in ints:
                acc = tensor_bits(t)
                rows.append(_row(entry, t.name, acc, acc["shape"], t.granularity))
            for name, arr in floats.items():
                rows.append(
                    _row(entry, name, float_bits(np.size(arr)), np.shape(arr), None)
                )
        else:
            for v in entry.variables:
                n = int(np.prod(v.shape))
                rows.append(_row(entry, v.name, float_bits(n), v.shape, None))
    return [{key: row.get(key, math.nan) for key in TABLE_COLUMNS} for row in rows]


def model_summary(model: Any) -> dict[str, Any]:
    """Model totals of :func:`layer_table`.

    Keys: ``n_params`` (parameter elements, scales excluded), ``n_scales``, ``total_bits``,
    ``fp32_bits`` (32 per parameter element), ``bytes``, ``fp32_bytes``, ``kib``, ``fp32_kib``,
    ``bits_per_param`` (``total_bits / n_params``, scales included in the numerator),
    ``compression`` (``fp32_bits / total_bits``), ``n_quantized_params``, ``quantized_fraction``
    (``n_quantized_params / n_params``), ``max_bits`` (widest group of any quantized parameter; NaN
    if none), ``q_total_bits``, ``q_fp32_bits``, ``q_bits_per_param`` and ``q_compression`` (the
    same restricted to quantized parameters and their scales; NaN if none), ``n_layers``; and
    under the two's-complement width: ``total_bits_twos``, ``bytes_twos``, ``kib_twos``,
    ``bits_per_param_twos``, ``compression_twos`` (``fp32_bits / total_bits_twos``),
    ``max_bits_twos``, ``q_total_bits_twos``, ``q_bits_per_param_twos``, ``q_compression_twos``.
    """
    return _totals(layer_table(model))


def _by_layer(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of :func:`layer_table` grouped by ``path``, in model order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["path"], []).append(row)
    return groups


def layer_summary(model: Any) -> list[dict[str, Any]]:
    """One row per layer (``path``, ``layer``, ``layer_type``) with the keys of :func:`model_summary`."""
    return [
        {
            "path": path,
            "layer": part[0]["layer"],
            "layer_type": part[0]["layer_type"],
            **_totals(part),
        }
        for path, part in _by_layer(layer_table(model)).items()
    ]


def _sum(rows: list[dict[str, Any]], key: str) -> int:
    return int(sum(row[key] for row in rows))


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n_params, total, fp32 = (
        _sum(rows, "n_params"),
        _sum(rows, "total_bits"),
        _sum(rows, "fp32_bits"),
    )
    q = [row for row in rows if row["quantized"]]
    q_params, q_total, q_fp32 = (
        _sum(q, "n_params"),
        _sum(q, "total_bits"),
        _sum(q, "fp32_bits"),
    )
    total_twos, q_total_twos = _sum(rows, "total_bits_twos"), _sum(q, "total_bits_twos")
    return {
        "n_params": n_params,
        "n_scales": _sum(rows, "n_groups"),
        "n_layers": len({row["path"] for row in rows}),
        "total_bits": total,
        "fp32_bits": fp32,
        "bytes": total / 8,
        "fp32_bytes": fp32 / 8,
        "kib": total / 8 / 1024,
        "fp32_kib": fp32 / 8 / 1024,
        "bits_per_param": total / n_params if n_params else math.nan,
        "compression": fp32 / total if total else math.nan,
        "n_quantized_params": q_params,
        "quantized_fraction": q_params / n_params if n_params else math.nan,
        "max_bits": float(max(row["bits_max"] for row in q)) if q else math.nan,
        "q_total_bits": q_total,
        "q_fp32_bits": q_fp32,
        "q_bits_per_param": q_total / q_params if q_params else math.nan,
        "q_compression": q_fp32 / q_total if q_total else math.nan,
        "total_bits_twos": total_twos,
        "bytes_twos": total_twos / 8,
        "kib_twos": total_twos / 8 / 1024,
        "bits_per_param_twos": total_twos / n_params if n_params else math.nan,
        "compression_twos": fp32 / total_twos if total_twos else math.nan,
        "max_bits_twos": float(max(row["bits_max_twos"] for row in q))
        if q
        else math.nan,
        "q_total_bits_twos": q_total_twos,
        "q_bits_per_param_twos": q_total_twos / q_params if q_params else math.nan,
        "q_compression_twos": q_fp32 / q_total_twos if q_total_twos else math.nan,
    }


def _fmt(x: float, digits: int = 2) -> str:
    return (
        "-"
        if x is None or (isinstance(x, float) and math.isnan(x))
        else f"{x:,.{digits}f}"
    )


#: column headers of :func:`summary`
SUMMARY_HEADER: tuple[str, ...] = (
    "Layer (type)",
    "Params",
    "Quant.",
    "Scales",
    "Bits/param",
    "Bits/param 2c",
    "Max bits",
    "KiB",
    "FP32 KiB",
    "Compr.",
    "Compr. 2c",
)


def _summary_cells(label: str, t: dict[str, Any]) -> tuple[str, ...]:
    """One line of :func:`summary` from the totals ``t`` of a layer (or the model)."""
    return (
        label,
        f"{t['n_params']:,}",
        f"{t['n_quantized_params']:,}",
        f"{t['n_scales']:,}",
        _fmt(t["bits_per_param"]),
        _fmt(t["bits_per_param_twos"]),
        _fmt(t["max_bits"], 0),
        _fmt(t["kib"]),
        _fmt(t["fp32_kib"]),
        _fmt(t["compression"]) + " x",
        _fmt(t["compression_twos"]) + " x",
    )


def summary(model: Any, print_fn: Callable[[str], Any] = print) -> dict[str, Any]:
    """Print a per-layer memory table (larq-like) and a totals line; return :func:`model_summary`.

    Columns: layer (type), params, quantized params, scales, bits/param (scales included),
    bits/param under two's complement ("2c"), max bits (widest group), KiB, FP32 KiB, compression
    (FP32 / accounted) and compression under two's complement. Bits, KiB and max bits are the
    sign-magnitude (thesis's) figures.
    """
    table = layer_table(model)
    tot = _totals(table)
    lines = [
        _summary_cells(f"{path} ({rows[0]['layer_type']})", _totals(rows))
        for path, rows in _by_layer(table).items()
    ]
    total_line = _summary_cells("Total", tot)
    header = SUMMARY_HEADER
    widths = [
        max(len(r[i]) for r in [header, total_line, *lines]) for i in range(len(header))
    ]

    def fmt_line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    rule = "-" * len(fmt_line(header))
    name = getattr(model, "name", type(model).__name__)
    print_fn(
        f'Memory of model "{name}" (accounted bits: integer widths per scale group + 32 per scale;'
        " widths sign-magnitude as in the thesis, 2c: two's complement)"
    )
    print_fn(rule)
    print_fn(fmt_line(header))
    print_fn(rule.replace("-", "="))
    for line in lines:
        print_fn(fmt_line(line))
    print_fn(rule)
    print_fn(fmt_line(total_line))
    print_fn(rule)
    share = tot["quantized_fraction"] * 100 if tot["n_params"] else math.nan
    print_fn(
        f"Total params: {tot['n_params']:,} ({_fmt(share, 1)} % quantized)"
        f" | bits/param: {_fmt(tot['bits_per_param'])}"
        f" | {_fmt(tot['kib'])} KiB vs FP32 {_fmt(tot['fp32_kib'])} KiB"
        f" | compression {_fmt(tot['compression'])} x"
    )
    if tot["n_quantized_params"]:
        print_fn(
            f"Quantized params only: bits/param {_fmt(tot['q_bits_per_param'])},"
            f" compression {_fmt(tot['q_compression'])} x, widest group {_fmt(tot['max_bits'], 0)} bits"
        )
    print_fn(
        f"Two's complement: bits/param {_fmt(tot['bits_per_param_twos'])},"
        f" {_fmt(tot['kib_twos'])} KiB, compression {_fmt(tot['compression_twos'])} x"
        + (
            f"; quantized params only: bits/param {_fmt(tot['q_bits_per_param_twos'])},"
            f" compression {_fmt(tot['q_compression_twos'])} x,"
            f" widest group {_fmt(tot['max_bits_twos'], 0)} bits"
            if tot["n_quantized_params"]
            else ""
        )
    )
    return tot
