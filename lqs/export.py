"""Integer export: write a quantized model as integers + scales, and rebuild it from them.

File format (one file, ``<name>.npz``): a ZIP archive laid out exactly like ``np.savez`` (members
stored **uncompressed**, ``ZIP_STORED``; ``compress=True`` switches to ``ZIP_DEFLATED`` like
``np.savez_compressed``) plus a ``manifest.json`` member. ``np.load(path)`` reads it: every array
by its key, and ``np.load(path)["manifest.json"]`` gives the manifest's UTF-8 bytes
(``unzip -p model.npz manifest.json`` prints it).

* each quantized parameter (``integer_parameters()`` of the quantized-layer protocol,
  :mod:`lqs.protocol`): ``<layer path>/<name>.values`` holding :math:`P_q` in the smallest signed NumPy
  integer dtype that holds its min and max (int8, int16, int32 or int64) and
  ``<layer path>/<name>.scale`` holding its scales (float32, the scale's shape);
* each float parameter (``float_parameters()`` of a quantized layer, every weight of other layers,
  including BatchNormalization's moving statistics): ``<layer path>/<name>`` as float32.

**No bit-packing**: a 3-bit group still takes one int8 byte per value, so the file is larger than
the accounted size of :mod:`lqs.memory` (which counts the exact width of every group); the report
of :func:`to_integer` gives both. The manifest holds the lqs/Keras/TensorFlow versions, the model's
Keras serialization (``model.to_json()``, without its compile config) and, per layer and parameter,
the key, dtype, shape, granularity, scale shape and accounted bits.

Rebuilding (:func:`from_integer`) recreates the model from its config (custom layers are found
through ``keras.saving.register_keras_serializable(package="lqs")``; import the module defining
them first) and sets its float weights. A quantized layer's latent float parameter is set to the
**bin centre** :math:`P = (P_q + \\tfrac12)\\, s` (computed in float64, rounded to float32), not to
:math:`P_q s`: the rebuilt layer fake-quantizes again with :math:`\\lfloor P/s \\rfloor s`, and
:math:`\\lfloor (P_q s)/s \\rfloor` in float32 is :math:`P_q - 1` for about 6 % of random values (the
product and the quotient each round), whereas the bin centre sits half a bin from both edges and
floors back to :math:`P_q` exactly for :math:`|P_q| < 2^{21}`. The rebuilt model's forward pass
therefore uses exactly :math:`P_q s` with the stored scales, so its predictions equal the
fake-quantized original's; :func:`from_integer` checks every parameter's integers after loading.
(The latent weights differ from the original's by less than one bin: continuing training from the
rebuilt model starts from the bin centres.)

Which quantized layers can be loaded: a layer that implements the optional loader hook
``set_integer_parameters(list[IntegerTensor])`` (and ``set_float_parameters(dict)`` for its float
parameters) is loaded through it, so a quantizer that rounds instead of flooring can choose its own
latent values (the LSQ and fixed-bit layers of :mod:`lqs.baselines` do). Otherwise the nested-quantizer convention is used: the variable ``layer.<name>`` gets
the bin centres and ``layer.<name>_quantizer.scale`` the scales (``QDense``/``QConv2D``, nested and
loss-term flavours). Any protocol layer can be exported; one with neither is refused on loading
with a ``ValueError`` naming the hook.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import keras
import numpy as np

import lqs
from lqs import memory
from lqs.fileio import atomic_write
from lqs.quantizers import IntegerTensor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "STORAGE_NOTE",
    "smallest_int_dtype",
    "bin_centre",
    "to_integer",
    "read_manifest",
    "from_integer",
]

FORMAT = "lqs-integer"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STORAGE_NOTE = (
    "no bit-packing: each quantized parameter stored in the smallest whole NumPy signed integer dtype "
    "(int8/int16/int32/int64) holding its min and max, scales and float parameters as float32"
)
_INT_DTYPES = (np.int8, np.int16, np.int32, np.int64)


def smallest_int_dtype(values: np.ndarray) -> np.dtype:
    """Smallest signed NumPy integer dtype (int8, int16, int32, int64) holding all of ``values``."""
    arr = np.asarray(values)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for dt in _INT_DTYPES:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"values in [{lo}, {hi}] do not fit int64")


def bin_centre(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Latent float32 parameter ``(P_q + 0.5) * s`` whose ``floor(P / s)`` is ``P_q`` in float32."""
    v = np.asarray(values, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float32).astype(np.float64)
    return ((v + 0.5) * s).astype(np.float32)


def _npz_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def _model_config(model: keras.Model) -> dict[str, Any]:
    try:
        config = json.loads(model.to_json())
    except Exception as exc:  # pragma: no cover - depends on the model class
        raise ValueError(
            f"model {model.name!r} cannot be serialized with model.to_json() ({exc}); export needs a "
            "Functional or Sequential model, or a subclassed model with get_config/from_config"
        ) from exc
    config.pop("compile_config", None)
    return config


def _write_npz(
    target: Path, arrays: dict[str, np.ndarray], manifest: dict, compress: bool
) -> None:
    """Write ``arrays`` + manifest as an npz atomically (:func:`lqs.fileio.atomic_write`)."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=mode, allowZip64=True) as zf:
            for key, arr in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member, np.ascontiguousarray(arr), allow_pickle=False
                    )
            zf.writestr(MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=False))

    atomic_write(target, write)


def to_integer(
    model: keras.Model, path: str | os.PathLike, *, compress: bool = False
) -> dict[str, Any]:
    """Write ``model`` in integer form to ``<path>.npz`` (module docstring: format) and report sizes.

    Arguments:
        model: a built Keras model (Functional or Sequential; nested models are walked like
            :func:`lqs.memory.iter_layers`).
        path: target file; ``.npz`` is appended when missing. Written atomically (temp file in the
            same folder + ``os.replace``), so an interrupted export never leaves a partial file.
        compress: store the members deflated (``np.savez_compressed``) instead of uncompressed
            (``np.savez``, the default).

    Returns:
        A report with ``path``, ``file_bytes`` (size on disk of the file written), ``payload_bytes``
        (sum of the arrays' bytes, no headers/manifest), ``accounted_bytes`` (:mod:`lqs.memory`
        ``total_bits / 8``), ``fp32_bytes`` (32 bits per parameter element / 8), ``compressed``,
        ``container`` (``"np.savez"`` or ``"np.savez_compressed"`` layout), ``bit_packing`` (False),
        ``storage`` (a sentence saying so), ``dtypes`` (count of quantized parameters per dtype),
        ``n_integer_parameters``, ``n_float_parameters``.
    """
    target = _npz_path(path)
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict[str, Any]] = []
    dtypes: dict[str, int] = {}
    n_int = n_float = 0
    for entry in memory.iter_layers(model):
        params: list[dict[str, Any]] = []
        if entry.quantized:
            params += _integer_entries(entry, arrays, dtypes)
            floats = list(entry.layer.float_parameters().items())
        else:
            floats = [(v.name, keras.ops.convert_to_numpy(v)) for v in entry.variables]
        n_int += len(params)
        float_params = _float_entries(entry, floats, arrays)
        n_float += len(float_params)
        layers.append(
            {
                "path": entry.path,
                "name": entry.layer.name,
                "class": type(entry.layer).__name__,
                "quantized": entry.quantized,
                "parameters": params + float_params,
            }
        )
    totals = memory.model_summary(model)
    manifest = _manifest(model, layers, totals, compress)
    _write_npz(target, arrays, manifest, compress)
    return {
        "path": str(target),
        "file_bytes": target.stat().st_size,
        "payload_bytes": int(sum(a.nbytes for a in arrays.values())),
        "accounted_bytes": totals["total_bits"] / 8,
        "fp32_bytes": totals["fp32_bits"] / 8,
        "compressed": bool(compress),
        "container": manifest["storage"]["container"],
        "bit_packing": False,
        "storage": STORAGE_NOTE
        + ("; members deflate-compressed" if compress else "; members uncompressed"),
        "dtypes": dtypes,
        "n_integer_parameters": n_int,
        "n_float_parameters": n_float,
    }


def _integer_entries(
    entry: memory.LayerEntry, arrays: dict[str, np.ndarray], dtypes: dict[str, int]
) -> list[dict]:
    """Add a quantized layer's integers and scales to ``arrays`` (counting ``dtypes``); their manifest entries."""
    params: list[dict[str, Any]] = []
    for t in entry.layer.integer_parameters():
        acc = memory.tensor_bits(t)
        dt = smallest_int_dtype(t.values)
        key = f"{entry.path}/{t.name}"
        arrays[f"{key}.values"] = np.asarray(t.values).astype(dt)
        arrays[f"{key}.scale"] = np.asarray(t.scale, dtype=np.float32)
        dtypes[dt.name] = dtypes.get(dt.name, 0) + 1
        params.append(
            {
                "name": t.name,
                "kind": "integer",
                "key": f"{key}.values",
                "scale_key": f"{key}.scale",
                "dtype": dt.name,
                "shape": list(acc["shape"]),
                "granularity": t.granularity,
                "scale_shape": list(np.shape(t.scale)),
                "n_groups": acc["n_groups"],
                "bits_min": acc["bits_min"],
                "bits_max": acc["bits_max"],
                "value_min": acc["value_min"],
                "value_max": acc["value_max"],
                "accounted_bits": acc["total_bits"],
            }
        )
    return params


def _float_entries(
    entry: memory.LayerEntry,
    floats: list[tuple[str, Any]],
    arrays: dict[str, np.ndarray],
) -> list[dict]:
    """Add a layer's float parameters to ``arrays`` as float32; their manifest entries."""
    params: list[dict[str, Any]] = []
    for i, (name, arr) in enumerate(floats):
        key = f"{entry.path}/{name}"
        if (
            key in arrays
        ):  # two weights of one layer with the same name: keep both, by position
            key = f"{entry.path}/{name}#{i}"
        arr = np.asarray(arr, dtype=np.float32)
        arrays[key] = arr
        params.append(
            {
                "name": name,
                "kind": "float",
                "key": key,
                "dtype": "float32",
                "shape": list(arr.shape),
                "accounted_bits": memory.FLOAT_BITS * int(arr.size),
            }
        )
    return params


def _manifest(
    model: keras.Model,
    layers: list[dict[str, Any]],
    totals: dict[str, Any],
    compress: bool,
) -> dict:
    """The export's ``manifest.json`` content (versions, storage, memory totals, model config, layers)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lqs_version": lqs.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": _tf_version(),
        "numpy_version": np.__version__,
        "storage": {
            "bit_packing": False,
            "container": "np.savez_compressed" if compress else "np.savez",
            "compressed": bool(compress),
            "note": STORAGE_NOTE,
        },
        "latent_on_load": "bin centre (P_q + 0.5) * scale, so that floor(P / scale) == P_q in float32",
        "memory": {
            k: (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in totals.items()
        },
        "model": _model_config(model),
        "layers": layers,
    }


def _tf_version() -> str | None:
    try:
        import tensorflow as tf

        return tf.__version__
    except ImportError:  # pragma: no cover
        return None


#: what reading a truncated or corrupted ``.npz`` raises (zip, deflate, npy header, JSON, missing member)
_UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    KeyError,
    ValueError,
    UnicodeDecodeError,
)


def _unreadable(target: Path, exc: BaseException) -> ValueError:
    what = (
        f"it has no {MANIFEST_NAME}"
        if isinstance(exc, KeyError)
        else f"{type(exc).__name__}: {exc}"
    )
    return ValueError(
        f"cannot read the integer export {target}: the file is truncated or corrupted ({what}). "
        "Write it again with lqs.export.to_integer(model, path) (or copy it again, checking its size)"
    )


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export written by :func:`to_integer`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupted or has no manifest (the message names it).
    """
    target = _npz_path(path)
    if not target.exists():
        raise FileNotFoundError(
            f"no export at {target}; write one with lqs.export.to_integer(model, path)"
        )
    try:
        with np.load(target) as npz:
            return json.loads(npz[MANIFEST_NAME].decode("utf-8"))
    except _UNREADABLE as exc:
        raise _unreadable(target, exc) from exc


def _read_arrays(target: Path) -> dict[str, np.ndarray]:
    """Every array of an export but the manifest (``ValueError`` naming the file if it cannot be read)."""
    try:
        with np.load(target) as npz:
            return {k: npz[k] for k in npz.files if k != MANIFEST_NAME}
    except _UNREADABLE as exc:
        raise _unreadable(target, exc) from exc


def _variable(layer: Any, name: str, path: str):
    var = getattr(layer, name, None)
    if var is None or not hasattr(var, "assign"):
        raise ValueError(
            f"layer {path!r} ({type(layer).__name__}) has no variable attribute {name!r}; a quantized "
            "layer must expose each parameter as an attribute of that name (or implement "
            "set_integer_parameters(list[IntegerTensor]) and set_float_parameters(dict))"
        )
    return var


def _assign(var, value: np.ndarray, what: str) -> None:
    if tuple(var.shape) != tuple(value.shape):
        raise ValueError(
            f"{what}: stored shape {value.shape} does not match the rebuilt model's {tuple(var.shape)}"
        )
    var.assign(value.astype(var.dtype))


def _set_quantized(
    layer: Any, path: str, ints: list[IntegerTensor], floats: dict[str, np.ndarray]
) -> None:
    if callable(getattr(layer, "set_integer_parameters", None)):
        layer.set_integer_parameters(ints)
    else:
        for t in ints:
            quantizer = getattr(layer, f"{t.name}_quantizer", None)
            scale = getattr(quantizer, "scale", None)
            if scale is None or not hasattr(scale, "assign"):
                raise ValueError(
                    f"layer {path!r} ({type(layer).__name__}) has no {t.name}_quantizer.scale variable; "
                    "implement set_integer_parameters(list[IntegerTensor]) on it to make it loadable"
                )
            _assign(
                scale, np.asarray(t.scale, dtype=np.float32), f"{path}/{t.name} scale"
            )
            _assign(
                _variable(layer, t.name, path),
                bin_centre(t.values, t.scale),
                f"{path}/{t.name}",
            )
    if floats:
        if callable(getattr(layer, "set_float_parameters", None)):
            layer.set_float_parameters(floats)
        else:
            for name, arr in floats.items():
                _assign(_variable(layer, name, path), arr, f"{path}/{name}")


def from_integer(
    path: str | os.PathLike, custom_objects: dict[str, Any] | None = None
) -> keras.Model:
    """Rebuild the model written by :func:`to_integer` (uncompiled) and set its weights.

    Quantized parameters get their stored scales and the bin-centre latent values (module
    docstring), so the rebuilt model's forward pass uses exactly ``values * scale``; float
    parameters get their float32 values. After loading, every quantized parameter's integers are
    recomputed by the layer's ``integer_parameters()`` and compared with the stored ones.

    Arguments:
        path: the ``.npz`` written by :func:`to_integer` (``.npz`` may be left out).
        custom_objects: extra classes for deserialization (lqs layers are registered already).

    Raises:
        FileNotFoundError: no such export.
        ValueError: a truncated or corrupted file (named in the message), not an lqs export, or the
            rebuilt model does not match the stored parameters.
    """
    target = _npz_path(path)
    manifest = read_manifest(target)
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{target} is not an {FORMAT!r} export (format {manifest.get('format')!r})"
        )
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{target} has format_version {manifest['format_version']}; this lqs reads up to {FORMAT_VERSION}"
        )
    import lqs.layers  # noqa: F401  (registers the lqs layers for deserialization)

    model = keras.models.model_from_json(
        json.dumps(manifest["model"]), custom_objects=custom_objects
    )
    if not model.built:
        raise ValueError(
            f"the model rebuilt from {target} is not built; export a model with a known input shape"
        )
    stored = {layer["path"]: layer for layer in manifest["layers"]}
    arrays = _read_arrays(target)
    visited: set[str] = set()
    for entry in memory.iter_layers(model):
        record = stored.get(entry.path)
        if record is None:
            raise ValueError(
                f"layer {entry.path!r} of the rebuilt model has no stored parameters in {target}"
            )
        visited.add(entry.path)
        params = record["parameters"]
        if entry.quantized != record["quantized"]:
            raise ValueError(
                f"layer {entry.path!r}: stored quantized={record['quantized']}, rebuilt {entry.quantized}"
            )
        if entry.quantized:
            ints = [
                IntegerTensor(
                    p["name"],
                    arrays[p["key"]].astype(np.int64),
                    arrays[p["scale_key"]],
                    p["granularity"],
                )
                for p in params
                if p["kind"] == "integer"
            ]
            floats = {
                p["name"]: arrays[p["key"]] for p in params if p["kind"] == "float"
            }
            _set_quantized(entry.layer, entry.path, ints, floats)
            _verify(entry, ints, target)
        else:
            if len(params) != len(entry.variables):
                raise ValueError(
                    f"layer {entry.path!r}: {len(params)} stored weights, the rebuilt layer has {len(entry.variables)}"
                )
            for p, var in zip(params, entry.variables, strict=True):
                if p["name"] != var.name:
                    raise ValueError(
                        f"layer {entry.path!r}: stored weight {p['name']!r} but rebuilt {var.name!r}"
                    )
                _assign(var, arrays[p["key"]], f"{entry.path}/{p['name']}")
    missing = sorted(set(stored) - visited)
    if missing:
        raise ValueError(
            f"stored layers {missing} are not in the model rebuilt from {target}"
        )
    return model


def _verify(entry: memory.LayerEntry, ints: list[IntegerTensor], target: Path) -> None:
    current = {t.name: t for t in entry.layer.integer_parameters()}
    for t in ints:
        got = current.get(t.name)
        if got is None:
            raise ValueError(
                f"layer {entry.path!r} of the rebuilt model has no quantized parameter {t.name!r}"
            )
        if not np.array_equal(
            np.asarray(got.scale, np.float32), np.asarray(t.scale, np.float32)
        ):
            raise ValueError(
                f"{entry.path}/{t.name}: scales differ after loading {target}"
            )
        if not np.array_equal(got.values, t.values):
            raise ValueError(
                f"{entry.path}/{t.name}: floor(P/s) of the loaded latent values differs from the stored "
                f"integers (|P_q| up to {int(np.abs(t.values).max())}; the bin centre is exact below 2**21)"
            )
