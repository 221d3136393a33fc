"""The ``ray`` executor: a study's tasks as Ray tasks, on a local Ray or on an existing cluster.

This is the only module of robustrec that imports :mod:`ray` (an optional extra: ``pip install -e
".[ray]"``); :func:`robustrec.studies.executors.build_executor` imports it only when ``--executor ray``
is asked for, so everything else works without Ray installed.

It carries out the same plan as the local executors, with the same jobs (top-level functions, each
idempotent and writing its outputs atomically into the study folder), so the same spec gives the same
records under both: the jobs set their own thread count, and importing robustrec in a Ray worker sets
MKL's reproducible mode before any matrix product, as in any other process.

**On a cluster** (``address``, e.g. ``ray://head:10001`` or ``auto``) a study needs

- robustrec installed, at the same version as the driver, in the Python that runs Ray's workers (the
  tasks are pickled as references to robustrec's functions, not as code);
- the study folder and the dataset folder on a shared filesystem, at the same paths as on the
  driver: tasks read the dataset and write run folders and records there, and the driver reads them
  back for selection and the report;
- the driver's Ray settings matching the cluster's: with token authentication (``RAY_AUTH_MODE=token``,
  which Ray 2.59+ turns on for the local Rays it starts) the driver needs that variable and the
  cluster's token (``~/.ray/auth_token`` or ``$RAY_AUTH_TOKEN``), or the cluster refuses it.

Locally nothing more is needed: a local Ray starts its workers with the driver's Python, which
imports robustrec from the same installation (an editable install included), so no ``runtime_env``
is set.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from robustrec.errors import ConfigError, RobustRecError, first_line
from robustrec.numerics import check_threads

T = TypeVar("T")
R = TypeVar("R")

#: Seconds to wait for a cluster's address to accept a connection before refusing it.
CONNECT_TIMEOUT = 5

#: The pip command that installs Ray for robustrec (quoted in the error when Ray is missing).
INSTALL_HINT = 'pip install -e ".[ray]"'


def import_ray() -> Any:
    """The :mod:`ray` module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """Runs ``fn(item)`` for every item as Ray tasks, at most ``workers`` at a time.

    ``address`` joins a running cluster (and leaves it running); without it a local Ray is started
    with ``workers * threads`` CPUs, enough for ``workers`` tasks at once, and shut down by
    :meth:`close` (or at the end of a ``with`` block). Each task reserves ``threads`` CPUs and
    ``gpus_per_task`` GPUs, so Ray never places more tasks on a node than its cores allow; ``threads``
    should be the thread count the jobs themselves run at (the study's ``threads``), which they set
    on their own: Ray's reservation only keeps the nodes from being oversubscribed.

    ``workers`` caps the tasks in flight on a cluster too. That keeps :meth:`run` stopping soon after
    a failure, as the local pool does: the tasks already running finish (their outputs are valid and
    reused by a rerun) and nothing new starts.
    """

    def __init__(self, workers: int, address: str | None = None, threads: int = 1, gpus_per_task: float = 0) -> None:
        self.workers = _check_workers(workers)
        self.threads = check_threads(threads, "threads")
        self.gpus_per_task = _check_gpus(gpus_per_task)
        self.address = address
        self._ray = import_ray()
        self._connected = False
        self._start()
        try:
            self._check_resources()
        except BaseException:
            self.close()
            raise
        # One remote function for every job: the job itself travels as an argument (pickled by
        # reference to its module, like the items), so any top-level function can be run.
        self._remote = self._ray.remote(_call).options(
            num_cpus=self.threads, num_gpus=self.gpus_per_task, name="robustrec-study-task"
        )

    def _start(self) -> None:
        """Join the cluster at ``address``, or start a local Ray that this executor owns."""
        ray = self._ray
        if self.address:
            _check_reachable(self.address)  # Ray itself would retry an unreachable address for minutes
        if ray.is_initialized():
            # Someone in this process (a notebook, a test) already connected: use that Ray as it is.
            return
        options = {"include_dashboard": False, "logging_level": "WARNING", "configure_logging": True}
        if self.address:
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise ConfigError(f"--ray-address {self.address}: cannot join a Ray cluster there "
                                  f"({first_line(err)})") from None
        else:
            # "local" starts a new Ray even if $RAY_ADDRESS names a cluster: without --ray-address the
            # study runs on this machine only. Worker output stays in Ray's session logs: the study
            # prints its own progress line.
            ray.init(address="local", num_cpus=self.workers * self.threads, log_to_driver=False, **options)
        self._connected = True

    def _check_resources(self) -> None:
        """ConfigError when no node can hold one task: Ray would wait for such a node forever. (An
        autoscaling cluster must therefore have one node of the kind the tasks need running.)"""
        nodes = [node.get("Resources", {}) for node in self._ray.nodes() if node.get("Alive")]
        if any(res.get("CPU", 0) >= self.threads and res.get("GPU", 0) >= self.gpus_per_task for res in nodes):
            return
        cpus = max((res.get("CPU", 0) for res in nodes), default=0)
        gpus = max((res.get("GPU", 0) for res in nodes), default=0)
        raise ConfigError(f"no Ray node can run a task that needs {self.threads} CPUs and {self.gpus_per_task:g} "
                          f"GPUs (the largest node has {cpus:g} CPUs and {gpus:g} GPUs)")

    def run(self, fn: Callable[[T], R], items: Sequence[T], on_done: Callable[[T, R], None] | None = None) -> list[R]:
        """``[fn(item) for item in items]``, computed as Ray tasks; see
        :class:`robustrec.studies.executors.Executor`.

        ``on_done(item, result)`` is called here, in the driver, as each task finishes. After the
        first failure no new task starts; the running ones finish (their ``on_done`` is called), then
        the failure is raised: a :class:`RobustRecError` as itself, with its one-line message, and
        any other error as Ray reports it (an instance of the original type, with the worker's
        traceback). Interrupting the driver cancels the tasks in flight.
        """
        ray = self._ray
        results: list[Any] = [None] * len(items)
        pending = iter(range(len(items)))
        in_flight: dict[Any, int] = {}  # object ref -> index of its item
        failure: BaseException | None = None

        def submit_next() -> None:
            index = next(pending, None)
            if index is not None:
                in_flight[self._remote.remote(fn, items[index])] = index

        try:
            for _ in range(self.workers):
                submit_next()
            while in_flight:
                [ready], _ = ray.wait(list(in_flight), num_returns=1)
                index = in_flight.pop(ready)
                try:
                    results[index] = ray.get(ready)
                except ray.exceptions.RayError as err:
                    if failure is None:
                        failure = _unwrap(err)
                    continue
                if on_done is not None:
                    on_done(items[index], results[index])
                if failure is None:
                    submit_next()
        except BaseException:
            # KeyboardInterrupt, or on_done raised: nothing is waiting for the tasks any more. The jobs
            # are idempotent, so a rerun picks up whatever a cancelled task left unfinished.
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        if failure is not None:
            raise failure
        return results

    def close(self) -> None:
        """Disconnect from Ray if this executor connected: a local Ray it started stops, a joined
        cluster keeps running. A Ray that was running in this process before is left alone."""
        if self._connected:
            self._connected = False
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _call(fn: Callable[[T], R], item: T) -> R:
    """The body of every Ray task: one job on one item."""
    return fn(item)


def _unwrap(err: BaseException) -> BaseException:
    """The error to raise in the driver for a failed task.

    Ray raises a RayTaskError that wraps the worker's exception with the remote traceback in its
    message. A user error (RobustRecError) is raised as the original exception, so that the CLI
    prints its one line; anything else keeps Ray's wrapper, which is still an instance of the
    original type and shows where in the worker it failed. Ray's own failures (a worker that died,
    a task that could not be scheduled) are raised as Ray reports them.
    """
    cause = getattr(err, "cause", None)
    if isinstance(cause, RobustRecError):
        return cause
    return err


def _check_reachable(address: str) -> None:
    """ConfigError unless ``address`` is ``auto`` (Ray finds the cluster started on this machine)
    or ``[ray://]HOST:PORT`` where something accepts a connection within a few seconds."""
    if address == "auto":
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:6379
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise ConfigError(f"--ray-address {address}: no Ray cluster answers there "
                          f"({err.strerror or type(err).__name__})") from None


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    return workers


def _check_gpus(gpus: float) -> float:
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"gpus per task must be a finite number >= 0, got {gpus!r}")
    return gpus
