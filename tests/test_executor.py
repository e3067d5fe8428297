"""The study task runner: values, order, shared needs, failures reported without stopping."""

import pytest

from gddim_numerics.validation.executor import Task, run_tasks


def square(x):
    return x * x


def add(a, b, c=0):
    return a + b + c


def fail(_):
    raise RuntimeError("boom")


def test_values_in_order_with_needs():
    tasks = [Task("a", square, (3,)), Task("b", add, (1,), {"c": 10}, needs=("a",)), Task("c", square, (4,))]
    out = run_tasks(tasks)
    assert [o.key for o in out] == ["a", "b", "c"]
    assert [o.value for o in out] == [9, 9 + 1 + 10, 16]
    assert all(o.ok for o in out)


def test_a_failure_is_reported_and_the_rest_runs():
    seen = []
    tasks = [Task("bad", fail, (1,)), Task("dep", square, needs=("bad",)), Task("good", square, (2,))]
    out = run_tasks(tasks, progress=lambda done, total, o: seen.append((done, total, o.key)))
    assert "RuntimeError: boom" in out[0].error
    assert out[1].error == "not run: needed task 'bad' failed"
    assert out[2].value == 4
    assert seen == [(1, 3, "bad"), (2, 3, "dep"), (3, 3, "good")]


@pytest.mark.parametrize("tasks, message", [
    ([Task("a", square, (1,)), Task("a", square, (2,))], "repeated"),
    ([Task("b", square, needs=("a",)), Task("a", square, (1,))], "needs"),
])
def test_bad_task_lists(tasks, message):
    with pytest.raises(ValueError, match=message):
        run_tasks(tasks)
