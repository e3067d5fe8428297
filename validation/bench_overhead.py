r"""Step overhead of the sampler loop against the hand-written fused step on the same arrays.

For each backend, diffusion and state size, a second-order gDDIM plan runs with a zero-cost network
(``eps_fn`` returns a preallocated array) and its time per step is divided by the time of the
hand-written expression the step amounts to, with the plan's own coefficients, on the same arrays:

* ``vp``: ``a*x + b*e0 + c*e1`` with Python-float coefficients;
* ``cld`` (channel-split ``(B, 2C, H, W)``, ``block_axis=1``) and ``cld_trailing``
  (``(B, C, H, W, 2)``): the ``2 x 2``-block expression on the two halves, concatenated;
* ``bdm``: the DCT the step needs (the network's input ``D_H^T u D_W`` and its output
  ``D_H y D_W^T``, as matrix products) and the per-frequency multiply-add.

Both are timed interleaved, after a warm-up, and the medians are compared. The sampler's time
includes everything a call costs (table moves, checks, the finite check's per-step sum, the first
and last basis change) divided by its number of steps. Targets: ratio <= 1.5 for VP and CLD, <= 3
for BDM. Functions return plain dicts; :func:`format_report` renders one as a table.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

import gddim_numerics as gd

#: target ratio (sampler step / hand-written step) per case
TARGETS = {"vp": 1.5, "cld": 1.5, "cld_trailing": 1.5, "bdm": 3.0}
#: state sizes ``(B, C, H, W)`` of the default run (CLD doubles ``C`` or adds a trailing axis of 2)
DEFAULT_SIZES = ((64, 3, 64, 64), (8, 3, 32, 32), (1, 3, 16, 16))


def machine_info() -> dict:
    """Machine, library versions and thread counts of this process."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gddim_numerics": gd.__version__,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas_threads"] = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
    except ImportError:
        pass
    return info


def available_backends() -> list[str]:
    """Backends this machine can run: ``numpy``, ``torch`` (CPU), and ``torch_cuda``/``cupy`` with a GPU."""
    names = ["numpy"]
    try:
        import torch

        names.append("torch")
        if torch.cuda.is_available():
            names.append("torch_cuda")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            names.append("cupy")
    except Exception:  # no cupy, no driver or no device
        pass
    return names


class _Backend:
    """Array creation and synchronisation for one backend."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.xp, self.device, self.sync = xp, "cpu", _no_sync
        elif name in ("torch", "torch_cuda"):
            import array_api_compat.torch as xp
            import torch

            self.xp = xp
            self.device = torch.device("cuda" if name == "torch_cuda" else "cpu")
            self.sync = torch.cuda.synchronize if name == "torch_cuda" else _no_sync
        elif name == "cupy":
            import array_api_compat.cupy as xp
            import cupy

            self.xp, self.device = xp, cupy.cuda.Device()
            self.sync = self.device.synchronize
        else:
            raise ValueError(f"unknown backend {name!r}; choose from numpy, torch, torch_cuda, cupy")

    def asarray(self, a: np.ndarray, dtype: str) -> Any:
        return self.xp.asarray(np.array(a), dtype=getattr(self.xp, dtype), device=self.device)


def _no_sync() -> None:
    return None


@lru_cache(maxsize=16)
def _case(name: str, size: tuple[int, ...], n_steps: int):
    """``(order-2 plan, state shape, sample options)`` of a case on ``size = (B, C, H, W)`` (tables built once)."""
    b, c, h, w = size
    if name == "vp":
        diffusion, shape, options = gd.VPSDE.linear(), (b, c, h, w), {}
    elif name == "cld":
        diffusion, shape, options = gd.CLD(), (b, 2 * c, h, w), {"block_axis": 1}
    elif name == "cld_trailing":
        diffusion, shape, options = gd.CLD(), (b, c, h, w, 2), {}
    elif name == "bdm":
        diffusion, shape, options = gd.BDM((h, w)), (b, c, h, w), {}
    else:
        raise ValueError(f"unknown case {name!r}; choose from {sorted(TARGETS)}")
    plan = gd.GDDIM(diffusion, gd.time_grid(diffusion, n_steps), order=2)
    plan.tables  # noqa: B018 - build the tables now, outside the timings
    return plan, shape, options


def _reference_step(name: str, be: _Backend, tables, dtype: str, x: Any, y: Any, y_old: Any) -> Callable[[], Any]:
    """The hand-written fused step (second order) with the coefficients of the plan's last step."""
    k = tables.n_steps - 1
    a, b0, b1 = tables.state[k], tables.history[k, 0], tables.history[k, 1]  # (M, k, k) each
    xp = be.xp
    if name == "vp":
        ca, cb, cc = float(a[0, 0, 0]), float(b0[0, 0, 0]), float(b1[0, 0, 0])
        return lambda: ca * x + cb * y + cc * y_old
    if name in ("cld", "cld_trailing"):
        blocks = [[[float(m[0, i, j]) for j in range(2)] for i in range(2)] for m in (a, b0, b1)]
        if name == "cld":
            half = x.shape[1] // 2

            def parts(v):
                return v[:, :half], v[:, half:]

            def join(o0, o1):
                return xp.concat([o0, o1], axis=1)
        else:
            def parts(v):
                return v[..., 0], v[..., 1]

            def join(o0, o1):
                return xp.stack([o0, o1], axis=-1)

        def step():
            (x0, x1), (e0, e1), (f0, f1) = parts(x), parts(y), parts(y_old)
            m, n, p = blocks
            return join(m[0][0] * x0 + m[0][1] * x1 + n[0][0] * e0 + n[0][1] * e1 + p[0][0] * f0 + p[0][1] * f1,
                        m[1][0] * x0 + m[1][1] * x1 + n[1][0] * e0 + n[1][1] * e1 + p[1][0] * f0 + p[1][1] * f1)

        return step
    h, w = x.shape[-2:]
    ca, cb, cc = (be.asarray(c[:, 0, 0].reshape(h, w), dtype) for c in (a, b0, b1))
    basis = gd.DCTBasis((h, w))
    dh, dw = be.asarray(basis.matrix(0), dtype), be.asarray(basis.matrix(1), dtype)
    dh_t, dw_t = be.asarray(basis.matrix(0).T, dtype), be.asarray(basis.matrix(1).T, dtype)

    def step():
        x_in = (dh_t @ x) @ dw  # what the network is given
        ym = (dh @ y) @ dw_t  # its output in DCT coordinates
        return x_in, ca * x + cb * ym + cc * y_old

    return step


def bench_case(backend: str, case: str, size: Sequence[int], *, dtype: str = "float32", n_steps: int = 20,
               repeats: int = 10, warmup: int = 2, max_seconds: float = 3.0) -> dict:
    """Time one case: the sampler per step and the hand-written step, interleaved.

    Parameters
    ----------
    backend : {"numpy", "torch", "torch_cuda", "cupy"}
    case : {"vp", "cld", "cld_trailing", "bdm"}
    size : (B, C, H, W)
        Image batch size; CLD uses ``2C`` channels (``cld``) or a trailing axis of 2 (``cld_trailing``).
    dtype : str
        State dtype.
    n_steps : int
        Steps of the plan (order 2).
    repeats, warmup : int
        Timed and untimed repetitions (each: one sample call and ``n_steps`` hand-written steps).
    max_seconds : float
        Stop repeating once the timed repetitions took this long (at least 3 are kept).

    Returns
    -------
    dict
        ``sampler_ms`` and ``reference_ms`` (medians per step), ``ratio``, ``target``, ``meets_target``,
        ``repeats`` (those timed) and the case description.
    """
    be = _Backend(backend)
    plan, shape, options = _case(case, tuple(size), n_steps)
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal(shape), dtype)
    y = be.asarray(rng.standard_normal(shape), dtype)
    y_old = be.asarray(rng.standard_normal(shape), dtype)

    outputs = [y_old, y]

    def zero_cost(x_in: Any, t: float) -> Any:
        """Alternates between two preallocated arrays, as the reference's ``e0`` and ``e1``."""
        outputs.reverse()
        return outputs[0]

    reference = _reference_step(case, be, plan.tables, dtype, x, y, y_old)

    def run_sampler() -> None:
        plan.sample(zero_cost, x, **options)

    def run_reference() -> None:
        for _ in range(n_steps):
            reference()

    sampler, ref = [], []
    spent = 0.0
    for i in range(warmup + repeats):
        for fn, out in ((run_sampler, sampler), (run_reference, ref)):
            be.sync()
            start = time.perf_counter()
            fn()
            be.sync()
            if i >= warmup:
                out.append((time.perf_counter() - start) / n_steps)
                spent += out[-1] * n_steps
        if spent > max_seconds and len(sampler) >= 3:
            break
    s_ms, r_ms = 1e3 * float(np.median(sampler)), 1e3 * float(np.median(ref))
    return {
        "backend": backend, "case": case, "shape": list(shape), "dtype": dtype, "n_steps": n_steps,
        "repeats": len(sampler), "sampler_ms": s_ms, "reference_ms": r_ms, "ratio": s_ms / r_ms,
        "target": TARGETS[case], "meets_target": s_ms / r_ms <= TARGETS[case],
    }


def bench_overhead(backends: Sequence[str] | None = None, cases: Sequence[str] = ("vp", "cld", "cld_trailing", "bdm"),
                   sizes: Sequence[Sequence[int]] = DEFAULT_SIZES, *, dtype: str = "float32", n_steps: int = 20,
                   repeats: int = 10, max_seconds: float = 3.0, torch_threads: int | None = None,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """The step-overhead benchmark over backends, cases and sizes.

    Parameters
    ----------
    backends : sequence of str, optional
        Default: every backend of :func:`available_backends`.
    cases : sequence of str
        Subset of ``("vp", "cld", "cld_trailing", "bdm")``.
    sizes : sequence of (B, C, H, W)
        State sizes; the first is the one the targets are stated for, ``(64, 3, 64, 64)``.
    dtype : str
        State dtype (``"float32"``).
    n_steps, repeats : int
        Steps per sample call, timed repetitions per case.
    max_seconds : float
        Time budget of each case's timed repetitions (see :func:`bench_case`).
    torch_threads : int, optional
        Set ``torch.set_num_threads`` for the run (restored afterwards).
    progress : callable, optional
        Called with each case's dict as soon as it is measured.

    Returns
    -------
    dict
        ``{"machine": machine_info(), "results": [bench_case(...), ...], "seconds": wall time}``.
    """
    backends = list(backends) if backends is not None else available_backends()
    start = time.perf_counter()
    previous_threads = None
    if torch_threads is not None:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(torch_threads)
    try:
        machine = machine_info()
        results = []
        for backend in backends:
            for size in sizes:
                for case in cases:
                    result = bench_case(backend, case, size, dtype=dtype, n_steps=n_steps, repeats=repeats,
                                        max_seconds=max_seconds)
                    results.append(result)
                    if progress is not None:
                        progress(result)
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    return {"machine": machine, "results": results, "seconds": time.perf_counter() - start}


def format_result(r: dict) -> str:
    """One result as a table row (see :func:`format_report`)."""
    verdict = "ok" if r["meets_target"] else "ABOVE TARGET"
    return (f"{r['backend']:<11} {r['case']:<13} {'x'.join(map(str, r['shape'])):<16} {r['sampler_ms']:>10.3f} "
            f"{r['reference_ms']:>10.3f} {r['ratio']:>6.2f} {r['target']:>6.1f}  {verdict}")


HEADER = (f"{'backend':<11} {'case':<13} {'shape':<16} {'step ms':>10} {'fused ms':>10} {'ratio':>6} "
          f"{'target':>6}  verdict")


def format_machine(machine: dict) -> str:
    """The machine description, one ``key: value`` per line."""
    return "\n".join(f"{k}: {v}" for k, v in machine.items())


def format_report(report: dict) -> str:
    """The benchmark as a plain-text table with the machine description above it."""
    lines = [format_machine(report["machine"]), "", HEADER, "-" * len(HEADER)]
    lines += [format_result(r) for r in report["results"]]
    lines.append(f"({report['seconds']:.0f} s; step ms = sampler time per step with a zero-cost network, "
                 "fused ms = the hand-written step, both medians)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_machine(machine_info()), "", HEADER, "-" * len(HEADER), sep="\n", flush=True)
    done = bench_overhead(progress=lambda r: print(format_result(r), flush=True))
    print(f"({done['seconds']:.0f} s; step ms = sampler time per step with a zero-cost network, fused ms = the "
          "hand-written step, both medians)")
