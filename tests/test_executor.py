"""The study task runner in this process: values, order, shared needs, failures reported without stopping; bad
execution requests refused (Dask execution: test_executor_dask.py)."""

import pytest

from gddim_numerics.validation import executor
from gddim_numerics.validation.cli import main
from gddim_numerics.validation.executor import Task, run_tasks


def square(x):
    return x * x


def add(a, b, c=0):
    return a + b + c


def fail(_):
    raise RuntimeError("boom")


def test_values_in_order_with_needs():
    tasks = [Task("a", square, (3,)), Task("b", add, (1,), {"c": 10}, needs=("a",)), Task("c", square, (4,))]
    out = run_tasks(tasks, workers=1)
    assert [o.key for o in out] == ["a", "b", "c"]
    assert [o.value for o in out] == [9, 9 + 1 + 10, 16]
    assert all(o.ok for o in out)


def test_a_failure_is_reported_and_the_rest_runs():
    seen = []
    tasks = [Task("bad", fail, (1,)), Task("dep", square, needs=("bad",)), Task("good", square, (2,))]
    out = run_tasks(tasks, workers=1, progress=lambda done, total, o: seen.append((done, total, o.key)))
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
        run_tasks(tasks, workers=1)


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be a positive integer"),
    ({"workers": 2.0}, "workers must be a positive integer"),
    ({"workers": True}, "workers must be a positive integer"),
    ({"scheduler": ""}, "address of a Dask scheduler"),
    ({"scheduler": "tcp://127.0.0.1:8786", "workers": 2}, "not both"),
])
def test_bad_execution_requests(options, message):
    with pytest.raises(ValueError, match=message):
        run_tasks([Task("a", square, (1,))], **options)


def test_without_dask_the_default_is_serial_and_explicit_requests_say_how_to_install(monkeypatch):
    monkeypatch.setattr(executor, "dask_installed", lambda: False)
    assert [o.value for o in run_tasks([Task("a", square, (3,))])] == [9]
    for options in ({"workers": 2}, {"scheduler": "tcp://127.0.0.1:8786"}):
        with pytest.raises(ImportError, match=r"gddim-numerics\[dask\]"):
            run_tasks([Task("a", square, (3,))], **options)


def test_no_scheduler_at_the_address_is_a_connection_error():
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ConnectionError, match="no Dask scheduler answers at 'tcp://127.0.0.1:9'"):
        run_tasks([Task("a", square, (3,))], scheduler="tcp://127.0.0.1:9")


@pytest.mark.parametrize("argv, message", [
    (["validate", "--workers", "0"], "workers must be a positive integer"),
    (["family", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
])
def test_bad_execution_options_exit_2_before_any_work(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({pool["num_threads"] for pool in threadpool_info()})


def test_tasks_run_with_one_blas_thread():
    """As in Dask's workers (OPENBLAS_NUM_THREADS=1): a multi-threaded BLAS may round a reduction differently."""
    pytest.importorskip("threadpoolctl")
    assert run_tasks([Task("t", blas_threads)], workers=1)[0].value == [1]
