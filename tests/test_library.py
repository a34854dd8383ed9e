"""The library stands alone: ``lqs`` needs keras, tensorflow and numpy only, never the machinery."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parent.parent / "lqs"
#: what a Keras user who installs only the library does not have
MACHINERY_ONLY = (
    "pandas",
    "matplotlib",
    "seaborn",
    "papermill",
    "yaml",
    "tqdm",
    "companion",
)
ALLOWED_THIRD_PARTY = {"keras", "numpy", "tensorflow"}


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a source file imports (at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(LIBRARY.glob("*.py")), ids=lambda p: p.name)
def test_library_module_imports_only_keras_tensorflow_numpy(path):
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    imported = _imported_modules(path) - stdlib - {"lqs"}
    assert imported <= ALLOWED_THIRD_PARTY, (
        f"{path.name} imports {sorted(imported - ALLOWED_THIRD_PARTY)}"
    )


def test_import_lqs_pulls_in_no_machinery_package():
    """Every lqs module imports and builds a model with pandas, matplotlib, ... made unimportable."""
    blocked = ", ".join(repr(name) for name in MACHINERY_ONLY)
    script = f"""
import importlib, pkgutil, sys
for name in ({blocked},):
    sys.modules[name] = None  # `import name` now raises ImportError
import keras, lqs
for info in pkgutil.iter_modules(lqs.__path__):
    importlib.import_module("lqs." + info.name)
model = keras.Sequential([keras.Input((4,)), lqs.QDense(3, kernel_granularity="column")])
model(keras.ops.zeros((2, 4)))
loaded = sorted(n for n in ({blocked},) if sys.modules.get(n) is not None)
print("loaded:", loaded)
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=LIBRARY.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"


def test_library_has_no_repository_paths():
    """No library module knows the repository layout (results/, data/, book/, notebooks/)."""
    for path in LIBRARY.glob("*.py"):
        source = path.read_text()
        for folder in ("results/", "notebooks/", "book/", "profiles/", "data/"):
            assert f'"{folder}' not in source and f"'{folder}" not in source, (
                f"{path.name} names {folder}"
            )
