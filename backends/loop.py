r"""The table loop: :class:`~gddim_numerics.tables.StepTables` executed on the caller's arrays.

Per step ``k`` (docs/math §3.3, §4.1), in the diffusion's mode coordinates ``u``:

.. math::  y_k = \mathrm{eps\_fn}(x_k, t_k),\quad h_k = a_k u_k + b_k y_k,\quad
           u_{k+1} = A_k u_k + \sum_{j<q_k} B_{kj} h_{k-j} + N_k z_k ,

with ``x_k`` the state in the caller's layout (:mod:`~gddim_numerics.backends.operators`). A step
with a correction (:class:`~gddim_numerics.tables.StepTables`, ``correction_orders[k] > 0``) first
moves the state it was evaluated at and its newest history value,

.. math::  \delta_k = \Gamma_{k0}h_k + \sum_{0<i<p_k}\Gamma_{ki}h_{k-i},\quad
           u_k \leftarrow u_k + \delta_k,\quad h_k \leftarrow h_k + \rho_k\delta_k ,

without a further evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gddim_numerics.diffusion import LinearDiffusion
from gddim_numerics.result import SampleResult, StepInfo
from gddim_numerics.tables import StepTables

from .namespace import device_of
from .run import ArrayRun, check_output, progress_bar


def run_tables(diffusion: LinearDiffusion, tables: StepTables, eps_fn: Callable, x: Any, *, rng: Any = None,
               noise: Callable | None = None, callback: Callable | None = None, progress: bool = False,
               return_trajectory: bool = False, check_finite: bool = True, on_nonfinite: str = "raise",
               block_axis: int = -1) -> SampleResult:
    """Run ``tables`` from the state ``x`` at ``tables.ts[0]``, in ``x``'s own library and device.

    Parameters
    ----------
    diffusion : LinearDiffusion
        The diffusion the tables were built for (gives the layout of the state).
    tables : StepTables
        Float64 host tables of the sampler.
    eps_fn : callable
        ``eps_fn(x, t) -> array``: ``x`` in the caller's array type, device, dtype and layout, ``t``
        a Python float; returns the network output of the plan's ``output`` type, of ``x``'s shape,
        library and device. A multistep plan keeps the last outputs, so ``eps_fn`` must not
        overwrite an array it returned earlier.
    x : array
        Start state ``(B, *event_shape)``: NumPy, CuPy, PyTorch (CPU or CUDA), array-api-strict or
        any array array-api-compat serves. ``k = 1``, ``M = 1`` diffusions take any event shape;
        ``k > 1`` ones a block axis (``block_axis``); DCT-basis ones (BDM) the image axes
        ``(H, W)`` last.
    rng : int, sequence of int, or generator, optional
        Randomness of stochastic plans: a seed, one seed per sample (a sample's result then does not
        depend on the batch), or a generator of ``x``'s library (see
        :func:`gddim_numerics.backends.noise.noise_source`).
    noise : callable, optional
        ``noise(step, shape) -> array``: the standard normal draw of each step that adds noise, in
        the caller's layout, library and device (wins over ``rng``).
    callback : callable, optional
        Called after each step with a :class:`~gddim_numerics.result.StepInfo`.
    progress : bool
        Show a tqdm progress bar.
    return_trajectory : bool
        Keep the state at every time of ``ts``.
    check_finite : bool
        Detect NaN/Inf network outputs (reported with step index and time). The check sums each
        output on the device and looks at the sums once, after the loop (no host synchronisation per
        step); an output whose sum overflows the working dtype counts as non-finite.
    on_nonfinite : {"raise", "return"}
        Raise a ``FloatingPointError``, or return a result with ``success=False``.
    block_axis : int
        Axis of ``x`` holding the ``k``-blocks of ``k > 1`` diffusions: size ``k`` (e.g. ``-1`` for
        ``(B, ..., 2)`` CLD states) or ``k * C`` (channel-split, e.g. ``1`` for ``(B, 2C, H, W)``,
        component ``j`` being channels ``[j C, (j + 1) C)``).

    Returns
    -------
    SampleResult
        ``x`` of the caller's array type, device, dtype and shape.

    Notes
    -----
    *Dtypes.* float64 and float32 states are computed in their own dtype. float16 and bfloat16
    states are computed in float32: the state and every coefficient of a step are float32, the
    network sees the state cast to the caller's dtype and its output is cast to float32, and the
    results are cast back. A network output of another floating dtype is cast to the working dtype.
    The coefficient tables stay float64 on the host; each table is moved once per call to ``x``'s
    library and device in the working dtype (Python floats for ``k = M = 1`` diffusions).

    *Arrays.* No host synchronisation happens inside the loop: coefficients are Python floats or
    device arrays made before it, and non-finite outputs are found from sums looked at after it.
    Arrays the loop keeps to itself (DCT coordinates, float32 copies of half-precision states,
    converted network outputs) are recycled; an array handed to ``eps_fn`` or the caller is never
    written to afterwards.
    """
    run = ArrayRun(diffusion, eps_fn, x, block_axis=block_axis, check_finite=check_finite, on_nonfinite=on_nonfinite,
                   stochastic=tables.stochastic, rng=rng, noise=noise)
    xp, work, out_dtype, dev, shape, kern, op = (run.xp, run.work_dtype, run.out_dtype, run.device, run.shape,
                                                 run.kern, run.op)
    declared, planned = getattr(eps_fn, "output", None), tables.info.get("output")
    if isinstance(declared, str) and planned is not None and declared != planned:
        raise ValueError(f"eps_fn returns output {declared!r} but the plan was built for output={planned!r}; "
                         f"build it with output=eps_fn.output")

    if op.transforms:
        def to_modes(v: Any) -> Any:
            return op.to_modes(v, kern.buffer(shape))
    else:
        def to_modes(v: Any) -> Any:
            return v

    if op.transforms or work != out_dtype:
        to_caller = run.to_caller
        recycle = kern.release  # the loop's own state is never handed out: recycle it
    else:
        def to_caller(u: Any) -> Any:
            return u

        def recycle(u: Any) -> None:
            return None

    # Tables, moved once in the working dtype. The newest output enters a step with its conversion
    # folded in on the host (float64), u' = (A + B_0 a) u + (B_0 b) y + sum_{j>=1} B_j h_{k-j} + N z,
    # so that A u and B_0 a u never cancel in the working dtype; h_k = a u + b y is formed only when a
    # later step or this step's correction uses it. A correction delta enters as (A + B_0 rho) delta
    # (u + delta is never formed), and h_k + rho delta is formed only when a later step uses it.
    ts, orders, n, q = tables.ts.tolist(), tables.orders.tolist(), tables.n_steps, tables.max_order
    width = tables.memory
    corr_counts = tables.correction_orders.tolist() if tables.corrects else [0] * n
    newest = tables.history[:, 0]
    state = op.prepare(tables.state if tables.input_state is None else tables.state + newest @ tables.input_state)
    from_output = op.prepare(newest if tables.input_output is None else newest @ tables.input_output)
    older = [None] + [op.prepare(tables.history[:, j]) for j in range(1, q)]
    kept = [any(orders[i] > i - k or corr_counts[i] > i - k for i in range(k + 1, min(k + width, n)))
            for k in range(n)]
    converts = (tables.input_state is not None or tables.input_output is not None) and (any(kept) or
                                                                                       any(corr_counts))
    if converts:
        in_out = op.prepare(_or_identity(tables.input_output, tables.state))
        in_state = op.prepare(tables.input_state) if tables.input_state is not None else None
    if tables.corrects:
        gamma = [op.prepare(tables.correction[:, i]) for i in range(tables.correction.shape[1])]
        reanchor = tables.reanchor if tables.reanchor is not None and np.any(tables.reanchor != 0.0) else None
        from_delta = op.prepare(tables.state if reanchor is None else tables.state + newest @ reanchor)
        if reanchor is not None:
            rho = op.prepare(reanchor)
            unit = op.prepare(_or_identity(None, tables.state))
    if callback is not None:
        data_out = op.prepare(_or_identity(tables.data_output, tables.state))
        data_state = op.prepare(tables.data_state) if tables.data_state is not None else None
    if tables.stochastic:
        noise_tab = op.prepare(tables.noise)
        noisy = np.any(tables.noise != 0.0, axis=(1, 2, 3)).tolist()
        draw = run.noise

    u = run.start
    hist: dict[int, tuple[Any, bool]] = {}  # step -> (h, owned by the loop)
    trajectory = [x] if return_trajectory else None
    x_type = type(x)
    for k in progress_bar(range(n), progress):
        t = ts[k]
        x_in = to_caller(u)
        y = eps_fn(x_in, t)
        check_output(xp, x, y, f"step {k} (t={t:g})", fast=type(y) is x_type and y.dtype == work and device_of(y) == dev)
        yw = y if y.dtype == work else xp.astype(y, work)
        if check_finite:
            run.sums.append(xp.sum(yw))
        y_m = to_modes(yw)
        y_owned = y_m is not y

        # the newest history value h_k (in the loop's arrays), where a correction or a later step needs it
        h_k, h_owned = None, False
        if kept[k] or corr_counts[k]:
            if converts:
                terms = [(in_out[k], y_m)] + ([(in_state[k], u)] if in_state is not None else [])
                h_k, h_owned = op.combine(terms, kern.buffer(shape)), True
            else:
                h_k, h_owned = y_m, y_owned
        delta = None
        if corr_counts[k]:
            terms = [(gamma[0][k], h_k)] + [(gamma[i][k], hist[k - i][0]) for i in range(1, corr_counts[k])]
            delta = op.combine(terms, kern.buffer(shape))

        terms = [(state[k], u), (from_output[k], y_m)]
        if delta is not None:
            terms.append((from_delta[k], delta))
        terms += [(older[j][k], hist[k - j][0]) for j in range(1, orders[k])]
        z_m = None
        if tables.stochastic and noisy[k]:
            z_m = to_modes(draw(k))
            terms.append((noise_tab[k], z_m))
        u_next = op.combine(terms, kern.buffer(shape))
        if op.transforms and z_m is not None:
            kern.release(z_m)
        if callback is not None:
            terms = [(data_out[k], y_m)] + ([(data_state[k], u)] if data_state is not None else [])
            callback(StepInfo(step=k, t=t, t_next=ts[k + 1], x=x_in, x0_pred=to_caller(op.combine(terms)),
                              eps=y, nfe=k + 1))

        stored = None
        if kept[k]:
            if delta is not None and reanchor is not None:
                stored = (op.combine([(unit[k], h_k), (rho[k], delta)], kern.buffer(shape)), True)
            else:
                stored = (h_k, h_owned)
            hist[k] = stored
        keep = stored[0] if stored is not None else None
        if h_owned and h_k is not keep and h_k is not y_m:
            kern.release(h_k)
        if y_owned and y_m is not keep:
            kern.release(y_m)
        if delta is not None:
            kern.release(delta)
        for old in [m for m in hist if m <= k + 1 - width]:
            h, owned = hist.pop(old)
            if owned:
                kern.release(h)
        recycle(u)
        u = u_next
        if return_trajectory:
            trajectory.append(to_caller(u))

    run.nfe, run.times = n, ts
    return run.result(u, tables.ts, trajectory, unit="step")


def _or_identity(table: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """``table``, or identity blocks shaped like ``like`` when it is ``None``."""
    if table is not None:
        return table
    return np.broadcast_to(np.eye(like.shape[-1]), like.shape)
