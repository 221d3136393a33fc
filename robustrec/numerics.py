"""Reproducible numerics: the same seed, device and thread count give the same numbers, bit for bit.

Two things broke that promise on the CPU, both found by training the same seed several times:

- **Float atomics.** With more than one thread, some of torch's CPU kernels add floats from several
  threads into one place in whatever order the threads arrive: e.g. the backward pass of ``x[index]``
  (``index_put_`` with accumulation), which every model's BPR loss runs. MMGCN and GRCN trained
  three times at two threads gave three different results. :func:`reproducible` switches torch to
  its deterministic kernels (``torch.use_deterministic_algorithms``) for the duration of a training,
  and restores the previous setting afterwards. (Evaluations and audits run forward passes only,
  without such accumulations; they set the thread count alone, with :func:`using_threads`.)
- **The thread count.** MKL splits a matrix product into blocks by the number of threads, so one
  thread and two threads sum in different orders (VBPR and BM3 differed between 1 and 2 threads).
  MKL's conditional numerical reproducibility in strict mode (``MKL_CBWR=AUTO,STRICT``) fixes the
  order whatever the thread count. MKL reads the variable once, at its first call, so
  :func:`request_reproducible_libraries` sets it (unless the user set it) when :mod:`robustrec` is
  imported; it is too late if the process ran a matrix product before importing robustrec, and
  :func:`identity` then records ``mkl_cbwr: "off"``. For CUDA it sets ``CUBLAS_WORKSPACE_CONFIG``,
  which deterministic cuBLAS products need.

Measured (benchmarks/README.md, "Determinism"): with both, the five models' weights after training
are bit-identical at 1, 2 and 4 threads on ml100k-mm. This is not a guarantee for every operation:
torch's own reductions over large tensors (e.g. the global gradient norm of SAM) split the work by
thread count. So the thread count is part of a run's identity: it is recorded in ``run.json`` and in
the configuration hash, and a run is resumed only with the thread count it started with.

**The default thread count** is 1, or ``$ROBUSTREC_THREADS`` (:func:`default_threads`): the models'
operations are small, and with more threads than free cores torch slows down many-fold
(benchmarks/README.md). It lives here, not in the CLI, so that the Python API runs as the CLI does:
before, a FREEDOM run through ``robustrec.train`` used every core torch found and was 2.2x slower
than the same run through ``robustrec train``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robustrec.errors import ConfigError

#: Environment variables that make the math libraries reproducible; set only where the user has not.
LIBRARY_SETTINGS = {
    "MKL_CBWR": "AUTO,STRICT",  # MKL: the same summation order whatever the thread count
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # cuBLAS: deterministic products (required by torch)
}


#: Environment variable holding the default thread count, and the largest count accepted.
THREADS_ENV = "ROBUSTREC_THREADS"
MAX_THREADS = 1024


#: The thread count chosen for the running command (``robustrec --threads N``), see :func:`threads_default`.
_chosen_threads: int | None = None


def default_threads() -> int:
    """The thread count used when none is given: the one chosen with :func:`threads_default` (the
    CLI's ``--threads``), else ``$ROBUSTREC_THREADS``, else 1.

    ConfigError (one line) unless the variable is an integer from 1 to :data:`MAX_THREADS`. Read at
    each call rather than at import, so a bad value is reported where it is used, not as a crash
    while a module is imported.
    """
    if _chosen_threads is not None:
        return _chosen_threads
    text = os.environ.get(THREADS_ENV, "1")
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"${THREADS_ENV} must be an integer, got {text[:40]!r}") from None
    return check_threads(value, f"${THREADS_ENV}")


def check_threads(value: int, source: str = "threads") -> int:
    """``value`` if it is a usable thread count, else ConfigError naming ``source``."""
    if not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"{source} must be between 1 and {MAX_THREADS}, got {value}")
    return value


@contextlib.contextmanager
def threads_default(threads: int) -> Iterator[None]:
    """Within the block, ``threads`` is the default thread count: of every training and evaluation
    (:func:`reproducible`) and of torch itself (encoders); both are restored afterwards. The CLI
    runs each command in such a block with its ``--threads``."""
    import torch

    global _chosen_threads
    previous, previous_torch = _chosen_threads, torch.get_num_threads()
    _chosen_threads = check_threads(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        _chosen_threads = previous
        torch.set_num_threads(previous_torch)


def request_reproducible_libraries() -> None:
    """Ask MKL and cuBLAS for reproducible results (effective if they have not run yet)."""
    for name, value in LIBRARY_SETTINGS.items():
        os.environ.setdefault(name, value)


#: How many :func:`using_threads` blocks enclose the running code (they nest: an evaluation inside a
#: training).
_depth = 0


@contextlib.contextmanager
def using_threads(threads: int | None = None) -> Iterator[int]:
    """Within the block, torch uses ``threads`` CPU threads; restored afterwards. Yields the count.

    ``threads=None`` keeps the count of an enclosing block (an evaluation inside a training runs on
    the training's threads) and is :func:`default_threads` outside any block: never torch's own
    default of one thread per core.
    """
    import torch

    global _depth
    if threads is None and _depth == 0:
        threads = default_threads()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    _depth += 1
    try:
        yield torch.get_num_threads()
    finally:
        _depth -= 1
        torch.set_num_threads(previous)


@contextlib.contextmanager
def reproducible(threads: int | None = None) -> Iterator[int]:
    """Within the block, torch uses deterministic kernels and ``threads`` CPU threads (as in
    :func:`using_threads`); both are restored afterwards. Yields the thread count in use.

    Evaluations use :func:`using_threads` alone: their operations are deterministic on the CPU
    already, and torch's switch to deterministic kernels imports its compiler on first use (about
    as long as importing torch itself), which an audit would pay for nothing.
    """
    import torch

    previous_mode = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with using_threads(threads) as count:
        # warn_only: an operation without a deterministic kernel (some CUDA ones) warns instead of failing
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield count
        finally:
            torch.use_deterministic_algorithms(previous_mode, warn_only=previous_warn)


def identity(device: Any = "cpu") -> dict[str, Any]:
    """What, besides the configuration and seed, decides a run's numbers (recorded with it)."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "deterministic_kernels": torch.are_deterministic_algorithms_enabled(),
        "mkl_cbwr": mkl_cbwr(),
    }


def mkl_cbwr() -> str | None:
    """MKL's reproducibility mode as MKL reports it ("off", "strict" or another branch), or ``None``
    when torch has no MKL or it cannot be asked."""
    get = _mkl_cbwr_get()
    if get is None:
        return None
    mode = get(-1)  # MKL_CBWR_ALL: the whole setting
    if mode <= 1:  # MKL_CBWR_OFF / MKL_CBWR_BRANCH_OFF
        return "off"
    return "strict" if mode & 0x10000 else f"branch {mode}"  # MKL_CBWR_STRICT


@functools.lru_cache(maxsize=1)
def _mkl_cbwr_get():
    """MKL's ``cbwr_get``, from the MKL that torch links statically (best effort: None if absent)."""
    try:
        import torch

        if not torch.backends.mkl.is_available():
            return None
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    return get
