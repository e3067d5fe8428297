r"""Wrap a trained network ``model(x, t)`` into the samplers' ``eps_fn(x, t)``.

>>> import numpy as np, gddim_numerics as gd
>>> sde = gd.VPSDE.discrete()                       # diffusers' default DDPM table
>>> net = lambda x, n: 0.1 * x                       # a network taking integer timesteps (B,)
>>> eps_fn = gd.wrap_model(net, sde, time="index", prediction="v")
>>> plan = gd.GDDIM(sde, gd.time_grid(sde, 10), order=1, output=eps_fn.output)
>>> plan.sample(eps_fn, np.ones((2, 3))).nfe
10

The adapter converts

* the time: :class:`~gddim_numerics.model_time.TimeConvention` (continuous, scaled, training-table
  index, :math:`\sigma`, log-SNR, or a callable), handed to the model as a ``(B,)`` array of the
  input's library and device (int64 for indices, else the input's dtype) or as a Python scalar;
* the prediction: it declares :attr:`ModelAdapter.output` (ε, x₀, v, score, ...), which the plan
  converts exactly in float64 (``GDDIM(..., output=eps_fn.output)``); nothing is converted on the
  arrays;
* the layout: ``"channel_split"`` shows a ``k > 1`` state ``(B, C, *S, k)`` (CLD: ``k = 2``) to the
  model as ``(B, k C, *S)``, component ``j`` in channels ``[j C, (j + 1) C)``; ``"channels_last"``
  shows ``(B, C, *S)`` (e.g. BDM images ``(B, C, H, W)``) as ``(B, *S, C)``. (CLD states may also
  be sampled channel-split directly with ``block_axis=1``.)

PyTorch models run under ``torch.inference_mode`` (``inference=True``), optionally under
``torch.autocast``; an ``nn.Module`` gets inputs on the device and in the dtype of its parameters
(``device``/``dtype``, default ``"model"``) and its output is moved back to the state's device and
dtype; a module in training mode is switched to eval mode for the call and every submodule's
mode is restored afterwards. JAX functions take ``jax.numpy`` arrays (the sampler loop runs on
them out of place).

Every model output is checked: an array of the input's library and device, real floating, of the
input's shape; optionally finite (``check_finite``, one host synchronisation per call; the sampler
loop checks finiteness itself after the loop). Errors name the call, ``t`` and the model time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from array_api_compat import is_torch_namespace, to_device

from gddim_numerics.diffusion import LinearDiffusion
from gddim_numerics.model_time import TimeConvention, output_type

from .namespace import check_like, device_of, namespace_of

LAYOUTS = ("same", "channel_split", "channels_last")
TIME_FORMATS = ("batch", "scalar")


class ModelAdapter:
    """``eps_fn(x, t)`` that calls ``model(x_model, t_model)`` (see the module docstring).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> array`` of ``x``'s shape (a torch ``nn.Module``, a JAX function, ...).
    diffusion : LinearDiffusion
        The diffusion the model was trained on.
    time : str or callable
        Time convention (:data:`~gddim_numerics.model_time.TIME_CONVENTIONS`) or ``time(t) -> float``.
    scale : float
        Factor of ``time="scaled"``.
    rounding : {"nearest", "exact"}
        ``time="index"``: nearest table knot, or refuse a time that is not a knot.
    prediction : str
        What the model predicts: ``"eps"``, ``"x0"``, ``"v"``, ``"score"``, a library output type
        (``"eps_R"``, ``"eps_L"``, ``"data"``) or diffusers' ``"epsilon"``/``"sample"``/``"v_prediction"``.
    t_format : {"batch", "scalar"}
        Model time as a ``(B,)`` array or as a Python ``int``/``float``.
    t_dtype : dtype, optional
        dtype of the ``(B,)`` time array (default: int64 for indices, else the model input's dtype).
    layout : {"same", "channel_split", "channels_last"}
        How the model wants the state laid out.
    device, dtype : "model", None, or a device / dtype
        Torch placement of the model's input: ``"model"`` takes the first parameter's (for an
        ``nn.Module``; nothing otherwise), ``None`` leaves the input as it is.
    autocast : torch dtype, optional
        Run the model under ``torch.autocast`` in this dtype.
    inference : bool
        Run torch models under ``torch.inference_mode`` (no autograd).
    check_finite : bool
        Raise at once on a NaN/Inf model output (one host synchronisation per call).
    """

    def __init__(self, model: Callable, diffusion: LinearDiffusion, *, time: str | Callable = "t",
                 scale: float = 1.0, rounding: str = "nearest", prediction: str = "eps", t_format: str = "batch",
                 t_dtype: Any = None, layout: str = "same", device: Any = "model", dtype: Any = "model",
                 autocast: Any = None, inference: bool = True, check_finite: bool = False):
        if not callable(model):
            raise TypeError(f"model must be a callable model(x, t) -> array; got {type(model).__name__}")
        if t_format not in TIME_FORMATS:
            raise ValueError(f"t_format must be one of {TIME_FORMATS}; got {t_format!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
        if layout == "channel_split" and diffusion.block_size == 1:
            raise ValueError(f"layout='channel_split' is for diffusions with k > 1 blocks (CLD); {diffusion!r} has k = 1")
        self.model, self.diffusion = model, diffusion
        self.time = TimeConvention(diffusion, time, float(scale), rounding)
        self.prediction = prediction
        #: the output type to build plans with: ``GDDIM(..., output=adapter.output)``
        self.output = output_type(prediction, diffusion)
        self.t_format, self.t_dtype, self.layout = t_format, t_dtype, layout
        self.device, self.dtype = _placement(model, device, dtype)
        self.autocast, self.inference, self.check_finite = autocast, bool(inference), bool(check_finite)
        #: number of model calls so far (``reset`` with ``adapter.calls = 0``)
        self.calls = 0

    def __repr__(self) -> str:
        return (f"ModelAdapter({type(self.model).__name__}, time={self.time.kind!r}, prediction={self.prediction!r}, "
                f"output={self.output!r}, layout={self.layout!r})")

    def __call__(self, x: Any, t: float) -> Any:
        xp = namespace_of(x, "x")
        torch_like = is_torch_namespace(xp)
        xm = self._to_model_layout(xp, x)
        if self.device is not None and device_of(xm) != self.device:
            xm = to_device(xm, self.device)
        if self.dtype is not None and xm.dtype != self.dtype:
            xm = xp.astype(xm, self.dtype)
        tm = self.time(t)
        who = f"the model at call {self.calls} (t={t:.6g}, model time {tm:.6g})"
        t_in = self._time_input(xp, xm, tm)
        self.calls += 1
        with self._context(torch_like, device_of(xm)):
            y = self.model(xm, t_in)
        y = getattr(y, "sample", y)  # diffusers' UNet outputs
        check_like(xp, xm, y, who, "its input")
        if tuple(y.shape) != tuple(xm.shape):
            raise ValueError(f"{who} returned shape {tuple(y.shape)}; expected its input's shape {tuple(xm.shape)}")
        if self.check_finite and not bool(xp.all(xp.isfinite(y))):
            raise FloatingPointError(f"{who} returned NaN or Inf")
        y = self._from_model_layout(xp, y, x)
        if device_of(y) != device_of(x):
            y = to_device(y, device_of(x))
        return y if y.dtype == x.dtype else xp.astype(y, x.dtype)

    # ------------------------------------------------------------------ helpers
    def _time_input(self, xp: Any, xm: Any, tm: float | int) -> Any:
        if self.t_format == "scalar":
            return tm
        dtype = self.t_dtype or (xp.int64 if self.time.integer else xm.dtype)
        return xp.full((xm.shape[0],), tm, dtype=dtype, device=device_of(xm))

    def _context(self, torch_like: bool, device: Any) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if torch_like:
            import torch

            if self.inference:
                stack.enter_context(torch.inference_mode())
            if self.autocast is not None:
                stack.enter_context(torch.autocast(device_type=device.type, dtype=self.autocast))
            if isinstance(self.model, torch.nn.Module) and self.model.training:
                stack.enter_context(_eval_mode(self.model))
        return stack

    def _to_model_layout(self, xp: Any, x: Any) -> Any:
        if self.layout == "same":
            return x
        if x.ndim < 3:
            raise ValueError(f"layout={self.layout!r} needs a state (B, C, ...) with at least 3 axes; got shape {tuple(x.shape)}")
        if self.layout == "channels_last":
            return xp.permute_dims(x, (0, *range(2, x.ndim), 1))
        k = self.diffusion.block_size
        if x.shape[-1] != k:
            raise ValueError(f"layout='channel_split' needs the state's last axis to be the k = {k} block axis; "
                             f"got shape {tuple(x.shape)}")
        b, c, *space = x.shape[:-1]
        moved = xp.permute_dims(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))  # (B, k, C, *S)
        return xp.reshape(moved, (b, k * c, *space))

    def _from_model_layout(self, xp: Any, y: Any, x: Any) -> Any:
        if self.layout == "same":
            return y
        if self.layout == "channels_last":
            return xp.permute_dims(y, (0, y.ndim - 1, *range(1, y.ndim - 1)))
        k = self.diffusion.block_size
        b, c, *space = x.shape[:-1]
        split = xp.reshape(y, (b, k, c, *space))
        return xp.permute_dims(split, (0, *range(2, split.ndim), 1))


def wrap_model(model: Callable, diffusion: LinearDiffusion, **options) -> ModelAdapter:
    """``eps_fn`` for ``model``: :class:`ModelAdapter` ``(model, diffusion, **options)``."""
    return ModelAdapter(model, diffusion, **options)


def _placement(model: Any, device: Any, dtype: Any) -> tuple[Any, Any]:
    """Device and dtype of the model's input: ``"model"`` takes an ``nn.Module``'s first parameter's."""
    param = None
    if "model" in (device, dtype):
        parameters = getattr(model, "parameters", None)
        if callable(parameters):
            param = next(iter(parameters()), None)
    if device == "model":
        device = None if param is None else param.device
    if dtype == "model":
        dtype = None if param is None else param.dtype
    return device, dtype


@contextlib.contextmanager
def _eval_mode(module: Any):
    """Eval mode for the block; every submodule's own training flag is restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
