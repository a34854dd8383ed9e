"""Fused CPU kernels for the nested quantizer: TensorFlow's numbers, in fewer passes.

:func:`lqs.quantizers.nested_quantize` spends most of its time in full-size element-wise
passes over the parameter, each a separate TensorFlow operation. Two custom operations
(``fused_kernels.cc``, next to this file) do the same work in one pass each:

* ``LqsNestedForward(p, s)``: :math:`P_q = \\lfloor P/s \\rfloor`, :math:`P_{rec} = P_q s` and,
  per scale group, :math:`m = \\max |P_q|` (TensorFlow: floordiv, mul, abs, reduce_max);
* ``LqsThresholdVote(G, P_{rec})``: :math:`\\mathrm{relu}(\\lambda - |G| / \\max(|P_{rec}|, \\epsilon))`
  (TensorFlow: abs, abs, maximum, div, sub, relu).

**Same numbers.** Every element goes through the same IEEE-754 operations as in TensorFlow's
kernels; each is exactly rounded or exact, so vectorization and evaluation order cannot change
a bit, and the build switches off contraction into fused multiply-adds. :math:`m` is a maximum
(independent of order) and NaN propagates as in ``tf.reduce_max``. The one order-dependent
step, the mean (or sum) of the votes, stays TensorFlow's ``reduce_mean``. ``tests/test_fused.py``
and ``tests/test_quantizers.py`` check the two paths bit for bit.

**Build.** On first use the kernels are compiled with the machine's C++ compiler against the
installed TensorFlow (``tf.sysconfig`` flags, a few seconds) into a cache folder, under a name
that hashes the source, the TensorFlow version and the flags; later processes load that file.

**Where they run.** Float32 on a machine without a visible GPU, with a ``min_scale`` of at
least eps, and a scale-group layout of the form (outer, groups, inner); everything else uses
TensorFlow's operations, as does every machine where the build fails.

Environment:
    ``LQS_FUSED_KERNELS``: ``auto`` (default: build and use them; if that fails, warn once and
    use TensorFlow's operations), ``on`` (fail with the build's error instead), ``off``.
    ``LQS_KERNEL_CACHE``: the cache folder (default ``$XDG_CACHE_HOME/lqs/kernels``, else
    ``~/.cache/lqs/kernels``). ``CXX``: the compiler (default ``c++``).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import shlex
import subprocess
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import tensorflow as tf

from lqs.fileio import atomic_write, file_lock

__all__ = [
    "MODES",
    "SOURCE",
    "mode",
    "kernels",
    "cache_dir",
    "group_layout",
    "forward",
    "threshold_vote",
]

#: values of ``LQS_FUSED_KERNELS``
MODES: tuple[str, ...] = ("auto", "on", "off")
#: the C++ source of the two operations
SOURCE: Path = Path(__file__).with_name("fused_kernels.cc")
#: optimize, keep every operation IEEE-exact (no FMA contraction, no fast-math; assuming no
#: floating-point traps changes no value), and silence the deprecation warnings of TF's headers
_EXACT_FLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-w")
_BUILD_TIMEOUT_S = 300

_lock = threading.Lock()
#: the kernels loaded in this process (TensorFlow registers an operation once per process)
_library: ModuleType | None = None
#: cache file -> why building or loading it failed (tried once per process)
_failures: dict[str, BaseException] = {}


def mode() -> str:
    """The value of ``LQS_FUSED_KERNELS`` (default ``"auto"``); ``ValueError`` if unknown."""
    value = os.environ.get("LQS_FUSED_KERNELS", "auto").strip().lower()
    if value not in MODES:
        raise ValueError(
            f"LQS_FUSED_KERNELS={value!r} is not one of {', '.join(map(repr, MODES))}; "
            "fix: unset it (auto) or set it to 'on' or 'off'"
        )
    return value


def kernels() -> ModuleType | None:
    """The loaded operations, or None where they are off, not applicable or failed to build.

    Raises:
        RuntimeError: ``LQS_FUSED_KERNELS=on`` and the build or load failed (with its output).
    """
    chosen = mode()
    if chosen == "off" or tf.config.list_logical_devices("GPU"):
        return None
    return _library if _library is not None else _load(chosen)


def _load(chosen: str) -> ModuleType | None:
    """Build (once) and load the kernels; on failure warn (``auto``) or raise (``on``)."""
    global _library
    target = cache_dir() / f"lqs_fused_{_cache_key()}.so"
    with _lock:
        if _library is None and str(target) not in _failures:
            try:
                _library = tf.load_op_library(str(_build(target)))
            except Exception as error:  # any build or load failure falls back
                _failures[str(target)] = error
                if chosen == "auto":
                    warnings.warn(
                        _fallback_message(error), RuntimeWarning, stacklevel=3
                    )
    if _library is not None:
        return _library
    if chosen == "on":
        error = _failures[str(target)]
        raise RuntimeError(_fallback_message(error)) from error
    return None


def _fallback_message(error: BaseException) -> str:
    return (
        f"lqs: the fused CPU kernels could not be built or loaded ({error}); using "
        "TensorFlow's operations instead (the same numbers, a slower training step). "
        "Fix: install a C++ compiler (e.g. apt-get install g++) or set CXX; "
        "LQS_FUSED_KERNELS=off silences this."
    )


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CXX", "c++"))


def _isa_flags() -> list[str]:
    """Vector instructions of this CPU that GCC may use (x86-64: AVX2 or SSE4.1)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    if "avx2" in flags:
        return ["-mavx2"]
    return ["-msse4.1"] if "sse4_1" in flags else []


def _command(source: Path, target: Path) -> list[str]:
    return [
        *_compiler(),
        "-shared",
        "-fPIC",
        *_EXACT_FLAGS,
        *_isa_flags(),
        str(source),
        "-o",
        str(target),
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]


def cache_dir() -> Path:
    """Folder of the built kernels (``LQS_KERNEL_CACHE``, else the user's cache folder)."""
    if os.environ.get("LQS_KERNEL_CACHE"):
        return Path(os.environ["LQS_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lqs" / "kernels"


def _cache_key() -> str:
    """Hash of what the built file depends on: source, TensorFlow, compiler and flags."""
    parts = [SOURCE.read_bytes(), tf.__version__.encode(), tf.__file__.encode()]
    parts += [" ".join(_command(Path("src"), Path("out"))).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _build(target: Path) -> Path:
    """Compile the source into ``target`` unless it is there (atomic; one builder at a time)."""
    with file_lock(target.with_suffix(".lock")):
        if not target.exists():
            atomic_write(target, _compile_into, suffix=".so")
    return target


def _compile_into(path: Path) -> None:
    done = subprocess.run(
        _command(SOURCE, path), capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{_compiler()[0]} exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )


def group_layout(
    shape: Sequence[int], axes: Sequence[int]
) -> tuple[int, int, int] | None:
    """``(outer, groups, inner)`` if the kept (not reduced) axes of ``shape`` are contiguous.

    A parameter whose scale groups reduce over ``axes`` is then the array ``(A, K, B)`` with
    one scale per middle index; None if the kept axes are not next to each other.
    """
    shape = [int(d) for d in shape]
    kept = [i for i in range(len(shape)) if i not in set(axes)]
    if not kept:
        return 1, 1, math.prod(shape)
    first, last = kept[0], kept[-1] + 1
    if kept != list(range(first, last)):
        return None
    return (
        math.prod(shape[:first]),
        math.prod(shape[first:last]),
        math.prod(shape[last:]),
    )


def forward(
    ops: ModuleType, p: tf.Tensor, scale: tf.Tensor, layout: tuple[int, int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(P_rec, m)``: the quantized parameter (``p``'s shape) and ``max |P_q|`` per group (flat)."""
    outer, groups, inner = layout
    p_rec, m = ops.lqs_nested_forward(
        tf.reshape(p, (outer, groups, inner)), tf.reshape(scale, (groups,))
    )
    return tf.reshape(p_rec, p.shape), m


def threshold_vote(
    ops: ModuleType, upstream: tf.Tensor, p_rec: tf.Tensor, threshold: float, eps: float
) -> tf.Tensor:
    """:math:`\\mathrm{relu}(\\lambda - |G| / \\max(|P_{rec}|, \\epsilon))`, element-wise."""
    return ops.lqs_threshold_vote(upstream, p_rec, threshold=threshold, eps=eps)
