"""Independent study tasks and the one function that runs them.

A study (``validate``, the problem-family benchmark, ...) is a list of :class:`Task`: a key that
names it (problem, sampler, NFE, ...), a module-level function and its arguments. A task may
``need`` the values of earlier tasks (a reference solve shared by every sampler of a problem);
those values are passed first, in the order named, before ``args``.

:func:`run_tasks` runs them and returns one :class:`TaskOutcome` per task, in the order given. A
task that raises does not stop the study: its outcome carries the error text, and every task that
needs it fails with a message naming the failed task.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


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


def call_task(task: Task, *needed: Any) -> TaskOutcome:
    """Run one task with its needed values, catching any exception into the outcome."""
    started = time.perf_counter()
    try:
        value = task.fn(*needed, *task.args, **task.kwargs)
    except Exception:  # noqa: BLE001  (a failed task is reported, the study goes on)
        return TaskOutcome(task.key, error=traceback.format_exc(limit=8), seconds=time.perf_counter() - started)
    return TaskOutcome(task.key, value=value, seconds=time.perf_counter() - started)


def run_tasks(tasks: Sequence[Task], *, progress: Callable[[int, int, TaskOutcome], None] | None = None
              ) -> list[TaskOutcome]:
    """Run ``tasks`` in this process, in order; outcomes in the order of ``tasks``.

    Parameters
    ----------
    tasks : sequence of Task
        Checked by :func:`check_tasks` first.
    progress : callable, optional
        ``progress(done, total, outcome)`` after each task.
    """
    tasks = list(tasks)
    check_tasks(tasks)
    outcomes: dict[Hashable, TaskOutcome] = {}
    for i, task in enumerate(tasks):
        failed = [k for k in task.needs if not outcomes[k].ok]
        if failed:
            outcome = TaskOutcome(task.key, error=f"not run: needed task {failed[0]!r} failed")
        else:
            outcome = call_task(task, *(outcomes[k].value for k in task.needs))
        outcomes[task.key] = outcome
        if progress is not None:
            progress(i + 1, len(tasks), outcome)
    return [outcomes[t.key] for t in tasks]
