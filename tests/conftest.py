"""Shared pytest setup: quiet, headless defaults for every test module.

Markers (`notebooks`, `book`, `slow`) are declared in pyproject.toml.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the thread pins of every training run (companion.engine.executors.THREADS), set before
# TensorFlow starts: runs trained in the test process match those of Ray workers bit for bit
for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where the Makefile, _config.yml and _toc.yml live)."""
    return ROOT
