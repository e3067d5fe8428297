r"""The one sampler loop: :class:`~gddim_numerics.tables.StepTables` executed on the caller's arrays.

Per step ``k`` (MATH.md §3.3, §4.1), in the diffusion's mode coordinates:

.. math::  y_k = \mathrm{eps\_fn}(u_k, t_k),\quad h_k = a_k u_k + b_k y_k,\quad
           u_{k+1} = A_k u_k + \sum_{j<q_k} B_{kj} h_{k-j} + N_k z_k .

The tables move to the state's namespace, device and dtype once per call; the loop makes no host
synchronisation (non-finite network outputs are detected from per-step sums stacked once at the end).
"""

from __future__ import annotations

import numpy as np

from gddim_numerics.diffusion import LinearDiffusion
from gddim_numerics.result import SampleResult, StepInfo
from gddim_numerics.tables import StepTables

from .namespace import check_real_floating, namespace_of, same_kind
from .noise import noise_source
from .operators import operator_for


def _progress(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - tqdm is an optional extra
        raise ImportError("progress=True needs tqdm: pip install 'gddim-numerics[progress]'") from exc
    return tqdm(iterable, total=total, desc="sampling", unit="step")


def _check_state_shape(diffusion: LinearDiffusion, x, block_axis: int) -> None:
    if x.ndim < 1:
        raise ValueError("x must have a leading batch axis; got a 0-d array")


def run_tables(diffusion: LinearDiffusion, tables: StepTables, eps_fn, x, *, rng=None, noise=None,
               callback=None, progress: bool = False, return_trajectory: bool = False,
               check_finite: bool = True, on_nonfinite: str = "raise", block_axis: int = -1) -> SampleResult:
    """Run ``tables`` from the state ``x`` at ``tables.ts[0]``.

    Parameters
    ----------
    eps_fn : callable
        ``eps_fn(x, t) -> array`` with ``x`` in the caller's array type and layout and a float ``t``;
        returns the network output of the plan's ``output`` type, same shape.
    x : array
        Start state of shape ``(B, *event_shape)`` (NumPy, CuPy, PyTorch, array-api-strict, ...).
    rng, noise
        Randomness for stochastic plans (see :func:`gddim_numerics.backends.noise.noise_source`).
    callback : callable, optional
        Called after each step with a :class:`~gddim_numerics.result.StepInfo`.
    progress : bool
        Show a tqdm progress bar.
    return_trajectory : bool
        Keep the state at every time of ``ts``.
    check_finite : bool
        Detect NaN/Inf network outputs (reported with step index and time).
    on_nonfinite : {"raise", "return"}
        Raise a ``FloatingPointError``, or return a result with ``success=False``.
    block_axis : int
        Axis holding the ``k``-blocks for ``k > 1`` diffusions (size ``k`` or ``k * C``).
    """
    if on_nonfinite not in ("raise", "return"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'return'; got {on_nonfinite!r}")
    if not callable(eps_fn):
        raise TypeError("eps_fn must be a callable eps_fn(x, t) -> array")
    xp = namespace_of(x, "x")
    check_real_floating(xp, x, "x")
    _check_state_shape(diffusion, x, block_axis)
    out_dtype = x.dtype
    work_dtype = x.dtype if x.dtype in (xp.float32, xp.float64) else xp.float32
    xw = xp.astype(x, work_dtype) if work_dtype != out_dtype else x
    op = operator_for(diffusion, xp, xw, work_dtype, block_axis)

    ts = tables.ts
    n = tables.n_steps
    state = op.prepare(tables.state)
    history = [op.prepare(tables.history[:, j]) for j in range(tables.max_order)]
    in_state = op.prepare(tables.input_state) if tables.input_state is not None else None
    in_out = op.prepare(tables.input_output) if tables.input_output is not None else None
    want_x0 = callback is not None
    d_state = op.prepare(tables.data_state) if want_x0 and tables.data_state is not None else None
    d_out = op.prepare(tables.data_output) if want_x0 else None
    noise_tab = op.prepare(tables.noise) if tables.noise is not None else None
    draw = noise_source(xp, xw, rng=rng, noise=noise) if tables.stochastic else None

    u = op.to_modes(xw)
    hist: list = []
    sums = []
    trajectory = [x] if return_trajectory else None
    shape = tuple(x.shape)
    for k in _progress(range(n), progress, n):
        t = float(ts[k])
        x_in = op.from_modes(u) if op.transforms else u
        if work_dtype != out_dtype:
            x_in = xp.astype(x_in, out_dtype)
        y = eps_fn(x_in, t)
        if k == 0:
            same_kind(xp, x, y, "eps_fn", "x")
        if tuple(y.shape) != shape:
            raise ValueError(f"eps_fn returned shape {tuple(y.shape)} at step {k} (t={t:g}); expected the state's shape {shape}")
        if y.dtype != work_dtype:
            y = xp.astype(y, work_dtype)
        if check_finite:
            sums.append(xp.sum(y))
        y_modes = op.to_modes(y) if op.transforms else y
        h = _history_entry(op, y_modes, u, None if in_out is None else in_out[k],
                           None if in_state is None else in_state[k])
        hist.insert(0, h)
        del hist[tables.max_order:]
        terms = [(state[k], u)] + [(history[j][k], hist[j]) for j in range(int(tables.orders[k]))]
        if draw is not None:
            z = draw(k)
            if op.transforms:
                z = op.to_modes(z)
            terms.append((noise_tab[k], z))
        u_next = op.combine(terms)
        if callback is not None:
            x0 = op.combine([(d_out[k], y_modes)] + ([(d_state[k], u)] if d_state is not None else []))
            callback(StepInfo(step=k, t=t, t_next=float(ts[k + 1]), x=_out(op, u, xp, out_dtype),
                              x0_pred=_out(op, x0, xp, out_dtype), eps=y, nfe=k + 1))
        u = u_next
        if return_trajectory:
            trajectory.append(_out(op, u, xp, out_dtype))

    result = SampleResult(x=_out(op, u, xp, out_dtype), ts=np.asarray(ts), nfe=n, trajectory=trajectory)
    if check_finite and sums:
        finite = xp.isfinite(xp.stack(sums))
        if not bool(xp.all(finite)):
            bad = int(np.argmin(np.asarray(_to_host(xp, finite))))
            msg = (f"eps_fn returned NaN or Inf at step {bad} (t={ts[bad]:.6g}); the state after it is not "
                   "meaningful. Check the network's input scaling and dtype at that time.")
            if on_nonfinite == "raise":
                raise FloatingPointError(msg)
            result.success, result.status, result.message = False, -1, msg
    return result


def _history_entry(op, y, u, b, a):
    """``h = a u + b y`` with ``b = None`` the identity and ``a = None`` zero."""
    if b is None and a is None:
        return y
    if a is None:
        return op.combine([(b, y)])
    if b is None:
        return y + op.combine([(a, u)])
    return op.combine([(b, y), (a, u)])


def _out(op, u, xp, dtype):
    x = op.from_modes(u) if op.transforms else u
    return xp.astype(x, dtype) if x.dtype != dtype else x


def _to_host(xp, a):
    """Copy a small array to NumPy (used once, after the loop)."""
    try:
        return np.asarray(a)
    except (TypeError, RuntimeError):
        return np.asarray(a.cpu()) if hasattr(a, "cpu") else np.asarray(list(a))
