"""The one place that knows where data, results, figures and the book live.

Every path is derived from the repository root. ``LQS_RESULTS`` and ``LQS_DATA`` environment
variables move the results and data folders (tests use this to stay out of the real ones).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ROOT",
    "NOTEBOOKS_DIR",
    "PROFILES_DIR",
    "BOOK_DIR",
    "GENERATED_DIR",
    "data_dir",
    "results_root",
    "runs_dir",
    "results_dir",
    "executed_dir",
    "profile_file",
]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PROFILES_DIR = ROOT / "profiles"
BOOK_DIR = ROOT / "book"
#: the profile's outputs copied here by ``make book``; book pages reference figures below it
GENERATED_DIR = BOOK_DIR / "generated"

PROFILES = ("smoke", "cpu", "full")


def data_dir() -> Path:
    """Folder holding dataset archives and TFDS caches (``data/`` unless ``LQS_DATA`` is set)."""
    return Path(os.environ.get("LQS_DATA", ROOT / "data"))


def results_root() -> Path:
    """Root of everything computed (``results/`` unless ``LQS_RESULTS`` is set)."""
    return Path(os.environ.get("LQS_RESULTS", ROOT / "results"))


def runs_dir() -> Path:
    """Run store shared by all notebooks and profiles: one record per config hash."""
    return results_root() / "runs"


def check_profile(profile: str) -> str:
    """Return ``profile`` or raise ``ValueError`` naming the allowed profiles."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    return profile


def results_dir(notebook: str, profile: str) -> Path:
    """Tidy tables and figures of one notebook under one profile: ``results/<profile>/<notebook>/``."""
    return results_root() / check_profile(profile) / notebook


def executed_dir(profile: str) -> Path:
    """Executed notebooks of one profile: ``results/<profile>/executed/``."""
    return results_root() / check_profile(profile) / "executed"


def profile_file(notebook: str, profile: str) -> Path:
    """Parameter YAML of one notebook under one profile: ``profiles/<profile>/<notebook>.yaml``."""
    return PROFILES_DIR / check_profile(profile) / f"{notebook}.yaml"
