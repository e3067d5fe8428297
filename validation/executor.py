"""Independent study tasks and the one function that runs them, in this process or on Dask.

A study (``validate``, the problem-family benchmark, ...) is a list of :class:`Task`: a key that
names it (problem, sampler, NFE, ...), a module-level function and its arguments. A task may
``need`` the values of earlier tasks (a reference solve shared by every sampler of a problem);
those values are passed first, in the order named, before ``args``.

:func:`run_tasks` runs them and returns one :class:`TaskOutcome` per task, in the order given:

* serially in this process (``workers=1``, or Dask is not installed);
* on a ``dask.distributed.LocalCluster`` of ``workers`` single-threaded processes (default: one
  per core), started and closed by the call;
* on an existing Dask cluster (``scheduler="tcp://host:port"``: any deployment, SSH, Slurm via
  dask-jobqueue, Kubernetes, or ``dask scheduler`` + ``dask worker`` by hand).

The values do not depend on where or in which order the tasks run: every random stream of a
study is seeded from its seed and the task's names, never from the process, and every task runs
with one BLAS thread (:func:`one_blas_thread`), as Dask's workers do. Each task is
computed once; a needed value travels to the dependents' workers (Dask futures).

Failures: a task that raises does not stop the study: its outcome carries the error text, and
every task that needs it fails with a message naming the failed task. A task whose worker dies
(killed, out of memory) is rerun on another worker by the scheduler, at most
``distributed.scheduler.allowed-failures`` times (Dask's configuration, default 3; for a
``LocalCluster`` set it with ``dask.config.set`` around the call); after that its outcome
carries Dask's ``KilledWorker`` error and the study goes on. Ctrl-C (``KeyboardInterrupt``)
cancels every pending task, closes the client and the local cluster (no worker process is
left) and propagates: the caller writes nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
import traceback
import uuid
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from gddim_numerics.backends.dask_sampling import DASK_EXTRA

Progress = Callable[[int, int, "TaskOutcome"], None]


@dataclass(frozen=True)
class Task:
    """One unit of a study.

    Attributes
    ----------
    key : hashable
        Names the task (e.g. ``("vp", "mixture", "gddim_q3", 10)``); unique within a study.
    fn : callable
        A module-level (picklable) function; the task's value is ``fn(*needed, *args, **kwargs)``.
    args, kwargs
        Its arguments (picklable).
    needs : tuple of keys
        Tasks listed earlier whose values are passed first, in this order.
    """

    key: Hashable
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    needs: tuple = ()


@dataclass(frozen=True)
class TaskOutcome:
    """What one task gave: ``value``, or ``error`` (the formatted exception) when it raised."""

    key: Hashable
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def check_tasks(tasks: Sequence[Task]) -> None:
    """Raise ``ValueError`` for repeated keys or a ``needs`` entry that names no earlier task."""
    seen = set()
    for task in tasks:
        if task.key in seen:
            raise ValueError(f"tasks: key {task.key!r} is repeated; every task needs its own key")
        missing = [k for k in task.needs if k not in seen]
        if missing:
            raise ValueError(f"tasks: task {task.key!r} needs {missing!r}, which no earlier task provides; "
                             "list the needed tasks first")
        seen.add(task.key)


def one_blas_thread():
    """A context in which BLAS and OpenMP run one thread (``threadpoolctl``; a no-op without it).

    Dask's worker processes start with ``OMP/MKL/OPENBLAS_NUM_THREADS=1``; a multi-threaded BLAS
    may round reductions differently (measured: 4e-13 relative on the BDM stochastic errors at
    NFE 200), so every task runs single-threaded, wherever it runs, for bit-identical results.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=1)


def call_task(task: Task, *needed: Any) -> TaskOutcome:
    """Run one task with its needed values (:func:`one_blas_thread`), catching any exception into the outcome."""
    started = time.perf_counter()
    try:
        with one_blas_thread():
            value = task.fn(*needed, *task.args, **task.kwargs)
    except Exception:  # noqa: BLE001  (a failed task is reported, the study goes on)
        return TaskOutcome(task.key, error=traceback.format_exc(limit=8), seconds=time.perf_counter() - started)
    return TaskOutcome(task.key, value=value, seconds=time.perf_counter() - started)


def run_after(task: Task, *needed: TaskOutcome) -> TaskOutcome:
    """Run ``task`` on the values of its needed outcomes, or fail it naming the first needed task that failed."""
    failed = [o.key for o in needed if not o.ok]
    if failed:
        return TaskOutcome(task.key, error=f"not run: needed task {failed[0]!r} failed")
    return call_task(task, *(o.value for o in needed))


# ------------------------------------------------------------------------------------ where tasks run
def dask_installed() -> bool:
    """Whether ``dask.distributed`` can be imported (the ``dask`` extra)."""
    return importlib.util.find_spec("distributed") is not None


def machine_workers() -> int:
    """Cores this process may run on (the default number of local workers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_execution(workers: int | None = None, scheduler: str | None = None) -> None:
    """Refuse a bad execution request before any work is done.

    Raises
    ------
    ValueError
        ``workers`` not a positive integer, ``scheduler`` not a non-empty address, or both given.
    ImportError
        ``workers >= 2`` or a ``scheduler`` without Dask installed.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer (1: serial in this process); got {workers!r}")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ValueError(f"scheduler must be the address of a Dask scheduler, e.g. 'tcp://127.0.0.1:8786'; "
                             f"got {scheduler!r}")
        if workers is not None:
            raise ValueError("give either workers (a local cluster of that many processes) or scheduler (an existing "
                             "cluster, whose workers are its own), not both")
    if (scheduler is not None or (workers or 1) > 1) and not dask_installed():
        asked = f"scheduler={scheduler!r}" if scheduler is not None else f"workers={workers}"
        raise ImportError(f"{asked} needs dask.distributed: {DASK_EXTRA} (or run serially with workers=1)")


def run_tasks(tasks: Sequence[Task], *, workers: int | None = None, scheduler: str | None = None,
              progress: Progress | None = None) -> list[TaskOutcome]:
    """Run ``tasks`` (see the module docstring for where); outcomes in the order of ``tasks``.

    Parameters
    ----------
    tasks : sequence of Task
        Checked by :func:`check_tasks` first. On Dask, ``fn``, ``args``, ``kwargs`` and the values
        must be picklable (cloudpickle).
    workers : int, optional
        Processes of a local Dask cluster; ``None``: one per core (:func:`machine_workers`, at most
        one per task), or serial in this process when Dask is not installed; ``1``: serial.
    scheduler : str, optional
        Address of an existing Dask scheduler (``"tcp://host:8786"``); its workers run the tasks.
    progress : callable, optional
        ``progress(done, total, outcome)`` as each task finishes (in order of completion on Dask).

    Raises
    ------
    ValueError, ImportError
        See :func:`check_execution`.
    ConnectionError
        No scheduler answers at ``scheduler``.
    """
    tasks = list(tasks)
    check_tasks(tasks)
    check_execution(workers, scheduler)
    if not tasks or (scheduler is None and (workers == 1 or not dask_installed())):
        return _run_serial(tasks, progress)
    with _dask_client(workers or min(machine_workers(), len(tasks)), scheduler) as client:
        return _run_on(client, tasks, progress)


def _run_serial(tasks: list[Task], progress: Progress | None) -> list[TaskOutcome]:
    outcomes: dict[Hashable, TaskOutcome] = {}
    for i, task in enumerate(tasks):
        outcomes[task.key] = outcome = run_after(task, *(outcomes[k] for k in task.needs))
        if progress is not None:
            progress(i + 1, len(tasks), outcome)
    return [outcomes[t.key] for t in tasks]


@contextmanager
def _dask_client(workers: int, scheduler: str | None):
    """A client of the cluster at ``scheduler``, or of a new local cluster of ``workers`` processes (closed after)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, set_as_default=False)
        except OSError as err:
            raise ConnectionError(f"no Dask scheduler answers at {scheduler!r} ({err}); start one with "
                                  "`dask scheduler` and workers with `dask worker ADDRESS`") from err
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


def _run_on(client, tasks: list[Task], progress: Progress | None) -> list[TaskOutcome]:
    """Submit every task (its needs as futures), collect outcomes as they complete; cancel all on interrupt."""
    from distributed import as_completed

    run = uuid.uuid4().hex[:12]  # keys unique per run: a shared cluster never mixes two runs' results
    futures, task_of = {}, {}
    try:
        for i, task in enumerate(tasks):
            future = client.submit(run_after, task, *(futures[k] for k in task.needs),
                                   key=f"{getattr(task.fn, '__name__', 'task')}-{run}-{i}", pure=False)
            futures[task.key], task_of[future.key] = future, task
        outcomes: dict[Hashable, TaskOutcome] = {}
        for done, future in enumerate(as_completed(list(futures.values()), loop=client.loop), start=1):
            task = task_of[future.key]
            outcomes[task.key] = outcome = _fetch(task, future, futures, outcomes)
            if progress is not None:
                progress(done, len(tasks), outcome)
    except BaseException:
        client.cancel(list(futures.values()), force=True)
        raise
    return [outcomes[t.key] for t in tasks]


def _fetch(task: Task, future, futures: dict, outcomes: dict) -> TaskOutcome:
    """The outcome of a completed future; if Dask could not compute it (its worker died too often: ``KilledWorker``;
    it was cancelled; a needed one was), an outcome that says so. A needed task failed if its outcome says so, or,
    not collected yet, if its future erred (a value lost with its worker is recomputed: that is no failure)."""
    if future.status == "finished":
        try:
            return future.result()
        except Exception:  # noqa: BLE001  (the worker holding the value died and the rerun failed: reported below)
            pass
    failed = [k for k in task.needs if (not outcomes[k].ok if k in outcomes else futures[k].status == "error")]
    if failed:
        return TaskOutcome(task.key, error=f"not run: needed task {failed[0]!r} failed")
    if future.status == "cancelled":
        return TaskOutcome(task.key, error="cancelled by the Dask scheduler")
    exc = future.exception()
    return TaskOutcome(task.key, error=f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------ command line
def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` and ``--scheduler ADDRESS`` (read back by :func:`execution_from_args`)."""
    group = parser.add_argument_group("execution")
    group.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of a local Dask cluster (default: one per core, "
                            f"{machine_workers()} here); 1: serially in this process, as without the dask extra")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://127.0.0.1:8786 (README: 'Running on a "
                            "cluster')")


def execution_from_args(args: argparse.Namespace) -> dict:
    """``{"workers": ..., "scheduler": ...}`` of the options, checked (``ValueError``/``ImportError``)."""
    check_execution(args.workers, args.scheduler)
    return {"workers": args.workers, "scheduler": args.scheduler}
