"""Executors: who carries out a study's jobs. In this process, in a local pool of processes, or on Ray.

Every executor has one method, ``run(fn, items, on_done)``: ``fn(item)`` for every item, the results
in the order of the items. ``on_done(item, result)`` is called in the driver as each job finishes
(the study's progress line). The first failure is raised once the jobs already running have
finished, so nothing is left half-done behind the error; a :class:`~robustrec.errors.RobustRecError`
keeps its type and one-line message, so the CLI still prints one line.

The jobs (:mod:`robustrec.studies.plan`) are idempotent, so an executor need not track what is done:
after an interruption the study simply runs them all again and the finished ones return at once.

Ray is an optional extra: only :mod:`robustrec.studies.ray_executor` imports it, and only when
``--executor ray`` is asked for.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from robustrec.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    workers: int

    def run(self, fn: Callable[[T], R], items: Sequence[T],
            on_done: Callable[[T, R], None] | None = None) -> list[R]:
        """Run fn(item) for every item (in parallel where it can); results in the order of items.
        on_done is called in the driver as each finishes (progress). The first failure is raised
        after the running ones finish (a RobustRecError keeps its type and one-line message)."""
        ...


class SequentialExecutor:
    """Every job in this process, one after the other (the default with one worker; easiest to debug)."""

    workers = 1

    def run(self, fn: Callable[[T], R], items: Sequence[T],
            on_done: Callable[[T, R], None] | None = None) -> list[R]:
        results = []
        for item in items:
            result = fn(item)
            if on_done is not None:
                on_done(item, result)
            results.append(result)
        return results


class LocalExecutor:
    """A pool of ``workers`` processes on this machine.

    The processes are started with "spawn", not "fork": a forked child inherits torch's thread pools
    and locks from a parent that has used them, which can deadlock, and the same start method on
    every platform gives the same behaviour. Each job sets its own torch thread count (the study's
    ``threads``), so N workers use N x threads cores.

    A failure stops new jobs from starting; the jobs already running finish (a training interrupted
    here would only be resumed later), then the first failure is raised.

    The processes are started on the first :meth:`run` and kept for the next ones (a study runs its
    trainings, then its audits: each worker imports torch once, which takes seconds); :meth:`close`
    (or leaving a ``with`` block) stops them.
    """

    def __init__(self, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (idempotent); a later :meth:`run` starts new ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _terminate(self) -> None:
        """Stop the workers without waiting for their jobs (safe: every job resumes or redoes its
        work on the next run). ``terminate_workers`` is Python 3.14's; before it, the pool's
        process table is the only handle on them."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        terminate = getattr(pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, fn: Callable[[T], R], items: Sequence[T],
            on_done: Callable[[T, R], None] | None = None) -> list[R]:
        items = list(items)
        if not items:
            return []
        results: list[R | None] = [None] * len(items)
        pool = self._started()
        futures = {pool.submit(fn, item): n for n, item in enumerate(items)}
        failure: BaseException | None = None
        try:
            for future in concurrent.futures.as_completed(futures):
                n = futures[future]
                error = future.exception()
                if error is not None:
                    if failure is None:
                        failure = error
                        for other in futures:  # not started yet: never start
                            other.cancel()
                    continue
                if failure is None:
                    results[n] = future.result()
                    if on_done is not None:
                        on_done(items[n], results[n])
        except BaseException:  # Ctrl-C in the driver: start nothing more, stop the workers now
            for other in futures:
                other.cancel()
            self._terminate()
            raise
        if isinstance(failure, concurrent.futures.process.BrokenProcessPool):
            self.close()  # a worker died (killed, out of memory): the next run starts new ones
        if failure is not None:
            raise failure
        return results  # type: ignore[return-value]


def build_executor(name: str = "local", workers: int = 1, ray_address: str | None = None,
                   threads: int = 1, gpus_per_task: float = 0) -> Executor:
    """``local`` (in process with one worker, else a pool of ``workers`` processes) or ``ray``.
    ``threads``: the torch threads of each job (the study's), which Ray reserves as CPUs per task;
    ``gpus_per_task``: the GPUs Ray reserves per task (1 for a study trained on cuda)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    if name == "local":
        if ray_address is not None:
            raise ConfigError("--ray-address is for --executor ray")
        return SequentialExecutor() if workers == 1 else LocalExecutor(workers)
    if name == "ray":
        from robustrec.studies.ray_executor import RayExecutor

        return RayExecutor(workers=workers, address=ray_address, threads=threads, gpus_per_task=gpus_per_task)
    raise ConfigError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
