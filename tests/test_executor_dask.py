"""Study tasks on Dask: a two-process cluster (``dask scheduler`` + ``dask worker`` on 127.0.0.1, as in the README)
gives the serial results; failing tasks and killed workers are reported; Ctrl-C leaves no process and no output;
``sample_dask`` equals ``plan.sample`` on the concatenated array."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402

import gddim_numerics as gd  # noqa: E402
from gddim_numerics.backends.dask_sampling import sample_dask  # noqa: E402
from gddim_numerics.validation import family, study  # noqa: E402
from gddim_numerics.validation.cli import main  # noqa: E402
from gddim_numerics.validation.executor import Task, run_tasks  # noqa: E402

#: seconds any single wait of these tests may take before it fails (a loaded 2-core runner starts a worker in ~5 s)
WAIT = 90


def square(x):
    return x * x


def fail():
    raise RuntimeError("boom")


def die_once(_, marker: str) -> str:
    """Kill this worker process the first time (no clean-up, as an OOM kill), return normally when rerun."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def die(_):
    os.kill(os.getpid(), signal.SIGKILL)


def _dask(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``dask ARGS`` in its own session; it imports this module (the tasks' functions are defined here)."""
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "dask", *args],
                            env={**os.environ, **(env or {}), "PYTHONPATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """End ``proc`` and its children (its own process group): SIGTERM, then SIGKILL after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The README's two-process cluster: ``dask scheduler`` and one ``dask worker`` (nanny, 1 thread) on 127.0.0.1.
    The scheduler gives up on a task after its worker died twice (allowed-failures 1)."""
    info = tmp_path_factory.mktemp("cluster") / "scheduler.json"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info),
                   env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"})]
    try:
        deadline = time.monotonic() + WAIT
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, "dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(_dask("worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                           "--no-dashboard", "--death-timeout", "60"))
        with distributed.Client(address, timeout=WAIT) as client:
            client.wait_for_workers(1, timeout=WAIT)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _json(results: dict) -> str:
    """The results as JSON without run times (the only entries that depend on the execution)."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("elapsed_s", "seconds")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return json.dumps(strip(results), sort_keys=True)


def test_two_process_cluster_gives_the_serial_results(scheduler, tmp_path):
    """A validate study and the family command (--scheduler) on the two-process cluster: the serial JSON, bit for
    bit (NaN included), run times aside."""
    config = study.StudyConfig(diffusions=("vp",), samplers=("gddim_q2", "gddim_lam1", "rk45"),
                               data=("mixture", "gaussian"), nfe=(5, 10), rk45_tolerances=(1e-3,), n_paths=6, n_mc=200)
    remote = study.run_study(config, scheduler=scheduler)
    assert not remote["failures"]
    assert _json(remote) == _json(study.run_study(config, workers=1))

    argv = ["family", "--first-seed", "1002", "--problems", "1", "--points", "4", "--methods", "paper_q3",
            "--nfe", "5", "--no-progress", "--out", str(tmp_path)]
    assert main([*argv, "--scheduler", scheduler]) == 0
    saved = json.loads((tmp_path / "family.json").read_text())
    serial = family.run_family(family.FamilyConfig(problems=1, first_seed=1002, methods=("paper_q3",), nfe=(5,),
                                                   points=4), workers=1)
    assert saved["problems"][0]["errors"]["paper_q3"][0] > 0
    assert _json({k: saved[k] for k in serial}) == _json(serial)


#: exact-score problems of the sampler test: diffusion, event shape, data mean
PROBLEMS = {"cld": (gd.CLD, (2, 2), [[0.5, 0.0], [-0.3, 0.0]]), "vp": (gd.VPSDE.linear, (3,), [0.5, -0.3, 0.2])}


def exact_data(name):
    make, shape, mean = PROBLEMS[name]
    return gd.GaussianData(make(), shape, mean=mean)


class ExactEps:
    """Picklable network factory: builds the exact eps of a ``PROBLEMS`` entry on the worker."""

    def __init__(self, name):
        self.name = name

    def __call__(self):
        return exact_data(self.name).eps_R


@pytest.mark.parametrize("name, lam", [("cld", 0.0), ("vp", 1.0)])
def test_sample_dask_equals_plan_sample_on_the_concatenated_array(scheduler, name, lam):
    """Chunks of 13, 13, 13, 1 states sampled on the cluster's worker equal one plan.sample call on all 40; the
    stochastic plan with one seed per sample too (per-sample noise does not depend on the chunking). Equal to rounding:
    BLAS may round a batch of one differently (measured: chunks of 13 bit for bit, the chunk of 1 within 1.7e-14)."""
    data = exact_data(name)
    sde = data.diffusion
    x = data.sample_prior(40, rng=np.random.default_rng(3))
    plan = gd.GDDIM(sde, gd.time_grid(sde, 8, "power", power=2), order=1 if lam else 3, lam=lam)
    seeds = np.arange(40) * 11 + 5 if lam else None
    lazy = sample_dask(plan, ExactEps(name), da.from_array(x, chunks=(13, *[1] * (x.ndim - 1))), rng=seeds)
    assert lazy.chunks[0] == (13, 13, 13, 1)
    with distributed.Client(scheduler, timeout=WAIT) as client:
        got = client.compute(lazy).result(timeout=WAIT)
    expected = plan.sample(data.eps_R, x, rng=seeds).x
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[:13], expected[:13])
    assert np.abs(expected - x).max() > 0.1  # the sampler moved the states


def test_sample_dask_refuses_one_seed_for_all_chunks():
    sde = gd.VPSDE.linear()
    plan = gd.GDDIM(sde, gd.time_grid(sde, 4, "power", power=2), order=1, lam=1.0)
    x = da.zeros((8, 3), chunks=4)
    with pytest.raises(ValueError, match="one seed per sample"):
        sample_dask(plan, ExactEps("vp"), x, rng=0)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        sample_dask(plan, ExactEps("vp"), x, rng=np.arange(7))
    with pytest.raises(TypeError, match="dask.array.from_array"):
        sample_dask(plan, ExactEps("vp"), np.zeros((8, 3)))
    with pytest.raises(ValueError, match="return_trajectory"):
        sample_dask(plan, ExactEps("vp"), x, rng=np.arange(8), return_trajectory=True)


def test_a_failing_task_is_reported_and_the_study_goes_on(scheduler):
    tasks = [Task("raises", fail), Task("after-raises", square, needs=("raises",)), Task("ok", square, (3,))]
    seen = []
    out = run_tasks(tasks, scheduler=scheduler, progress=lambda done, total, o: seen.append((total, o.key)))
    assert sorted(seen) == [(3, "after-raises"), (3, "ok"), (3, "raises")]
    assert "RuntimeError: boom" in out[0].error
    assert out[1].error == "not run: needed task 'raises' failed"
    assert out[2].value == 9


def test_killed_workers_are_retried_then_reported(scheduler, tmp_path):
    """A task that kills its worker once is rerun by the scheduler and gives its value; one that kills it twice
    (allowed-failures 1) fails with Dask's KilledWorker and its dependents are not run; the study completes. The
    tasks form a chain, so no other task is on the worker when it dies (Dask would count that death against it)."""
    tasks = [Task("ok", square, (3,)), Task("next", square, needs=("ok",)),
             Task("dies-once", die_once, (str(tmp_path / "died"),), needs=("next",)),
             Task("dies", die, needs=("dies-once",)), Task("after-dies", square, needs=("dies",))]
    out = {o.key: o for o in run_tasks(tasks, scheduler=scheduler)}
    assert out["ok"].value == 9 and out["next"].value == 81
    assert out["dies-once"].value == "survived" and (tmp_path / "died").exists()
    assert out["dies"].error.startswith("KilledWorker") and "died" in out["dies"].error
    assert out["after-dies"].error == "not run: needed task 'dies' failed"


def _session_processes(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list the processes of a session")
def test_ctrl_c_stops_the_local_cluster_and_writes_nothing(tmp_path):
    """SIGINT to the command's process group (Ctrl-C in a terminal) while its 2-process LocalCluster runs: exit
    status 130, no process of the run left, no output folder. (60 problems: far more work than the time between the
    first progress line and the signal, so the run cannot finish first.) The command starts with SIGINT's default
    action, as from a terminal: a run started from a process that ignores SIGINT (a background job of a
    non-interactive shell, ``nohup``) inherits the ignoring, and Ctrl-C cannot reach it."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gddim_numerics.validation.cli", "family", "--first-seed", "1002",
                             "--problems", "60", "--points", "4", "--methods", "paper_q3", "--nfe", "5", "10", "20",
                             "--workers", "2", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(3 * WAIT, os.killpg, (proc.pid, signal.SIGKILL))  # a hung run ends the test
    watchdog.start()
    try:
        line = " "
        while line and not line.startswith("family: "):  # the first progress line: the cluster runs tasks
            line = proc.stderr.readline()
        assert line, "the command ended before reporting progress"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(WAIT) == 130
        assert "interrupted" in proc.stderr.read()
        deadline = time.monotonic() + WAIT
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)  # the nannies' worker processes exit with their parent
        assert _session_processes(proc.pid) == []
        assert not out.exists()
    finally:
        watchdog.cancel()
        _stop(proc)
