"""Reproducible numerics: the same seed, device and thread count give the same numbers, bit for bit.

Two things broke that promise on the CPU, both found by training the same seed several times:

- **Float atomics.** With more than one thread, some of torch's CPU kernels add floats from several
  threads into one place in whatever order the threads arrive: e.g. the backward pass of ``x[index]``
  (``index_put_`` with accumulation), which every model's BPR loss runs. MMGCN and GRCN trained
  three times at two threads gave three different results. :func:`reproducible` switches torch to
  its deterministic kernels (``torch.use_deterministic_algorithms``) for the duration of a training,
  an evaluation or an audit, and restores the previous setting afterwards.
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
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Environment variables that make the math libraries reproducible; set only where the user has not.
LIBRARY_SETTINGS = {
    "MKL_CBWR": "AUTO,STRICT",  # MKL: the same summation order whatever the thread count
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # cuBLAS: deterministic products (required by torch)
}


def request_reproducible_libraries() -> None:
    """Ask MKL and cuBLAS for reproducible results (effective if they have not run yet)."""
    for name, value in LIBRARY_SETTINGS.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def reproducible(threads: int | None = None) -> Iterator[int]:
    """Within the block, torch uses deterministic kernels and ``threads`` CPU threads (default: the
    current number); both are restored afterwards. Yields the thread count in use."""
    import torch

    previous_threads = torch.get_num_threads()
    previous_mode = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    # warn_only: an operation without a deterministic kernel (some CUDA ones) warns instead of failing
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch.get_num_threads()
    finally:
        torch.use_deterministic_algorithms(previous_mode, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)


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
