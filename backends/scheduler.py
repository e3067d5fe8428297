r"""``GDDIMScheduler``: gDDIM's exact float64 tables as a diffusers scheduler (discrete VP models).

>>> from diffusers import DDPMPipeline, UNet2DModel
>>> import gddim_numerics as gd
>>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
...                    layers_per_block=1, norm_num_groups=4,
...                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
>>> pipe = DDPMPipeline(unet=unet, scheduler=gd.GDDIMScheduler(method_options={"order": 2}))
>>> images = pipe(batch_size=2, num_inference_steps=10, output_type="np").images   # (2, 8, 8, 1)

The diffusion is ``VPSDE.discrete(alphas_cumprod)`` of the training table (built in float32 exactly
as diffusers builds it, then taken as float64), so timestep ``n`` is the knot ``t = (n + 1)/N``
where the table is reproduced exactly. :meth:`GDDIMScheduler.set_timesteps` picks diffusers'
integer timesteps (``timestep_spacing``, ``steps_offset`` as in ``DDIMScheduler``) and builds the
plan of ``method`` (any table sampler of ``gd.METHODS`` with a fixed grid: ``"gddim"`` is the
paper's scheme; options in ``method_options``, e.g. ``{"order": 3}``, ``{"form": "data"}``) on those
timesteps, with the model's ``prediction_type`` converted exactly inside its tables. Each
:meth:`~GDDIMScheduler.step` then runs one step of the tables, in the sample's dtype with float64
coefficients:

.. math::  h_k = a_k x_k + b_k y_k,\quad x_{k+1} = A_k x_k + \sum_{j<q_k} B_{kj} h_{k-j} + N_k z_k

(plus the evaluation-free correction of corrector plans, :mod:`gddim_numerics.tables`).

The last step goes to the end point DDIM goes to: with ``set_alpha_to_one`` to
:math:`\bar\alpha = 1` (``t = 0``), where every step of order 1 returns the data prediction
:math:`\hat x_0` — the step is taken with order 1, as DDIM takes it; otherwise to timestep 0 (an
identity step when the last timestep is 0 itself). Order 1 is then DDIM (η = 0) step for step.

Nothing is clipped: DDIM's ``clip_sample`` and ``thresholding`` change the sampler and are not
offered (``from_config`` of another scheduler's config ignores such keys, with diffusers' warning).
Stochastic plans (``method_options={"order": 1, "lam": 1.0}``, or ``method="ancestral"``) draw their
noise with the ``generator`` that pipelines pass to ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError as exc:  # pragma: no cover - diffusers is an optional extra
    raise ImportError("GDDIMScheduler needs diffusers: pip install 'gddim-numerics[diffusers]'") from exc

from gddim_numerics.model_time import output_type
from gddim_numerics.outputs import to_data
from gddim_numerics.sampling import METHODS
from gddim_numerics.vp import VPSDE

SPACINGS = ("leading", "trailing", "linspace")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass
class GDDIMSchedulerOutput(BaseOutput):
    """``prev_sample``: the state at the next timestep; ``pred_original_sample``: the data prediction."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def training_alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str,
                            trained_betas: Any = None) -> np.ndarray:
    r""":math:`\bar\alpha` of diffusers' training table, computed in float32 as diffusers computes it."""
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        from diffusers.schedulers.scheduling_ddim import betas_for_alpha_bar

        betas = betas_for_alpha_bar(num_train_timesteps)
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES} (or pass trained_betas); got {beta_schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0).numpy().astype(np.float64)


class GDDIMScheduler(SchedulerMixin, ConfigMixin):
    """gDDIM for diffusers pipelines (see the module docstring).

    Parameters
    ----------
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas
        The training table, as in diffusers' ``DDPMScheduler``/``DDIMScheduler``.
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What the model predicts.
    timestep_spacing : {"leading", "trailing", "linspace"}
        diffusers' choice of inference timesteps.
    steps_offset : int
        Added to ``"leading"`` timesteps.
    set_alpha_to_one : bool
        End at :math:`\\bar\\alpha = 1` (the data prediction) instead of timestep 0.
    method : str
        A table sampler of ``gd.METHODS`` that takes a grid (``"gddim"``, ``"gddim_L"``, ``"em"``, ...).
    method_options : dict, optional
        Its options (``order``, ``lam``, ``form``, ``variable``, ``corrector``, ...).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str = "epsilon",
                 timestep_spacing: str = "leading", steps_offset: int = 0, set_alpha_to_one: bool = True,
                 method: str = "gddim", method_options: dict | None = None):
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {SPACINGS}; got {timestep_spacing!r}")
        if method not in METHODS or METHODS[method].steps_for_nfe is None:
            valid = sorted(name for name, m in METHODS.items() if m.steps_for_nfe is not None)
            raise ValueError(f"method must be a sampler of gd.METHODS that takes a grid ({', '.join(valid)}); got {method!r}")
        acp = training_alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        self.alphas_cumprod = torch.from_numpy(acp)
        self.diffusion = VPSDE.discrete(alphas_cumprod=acp)
        self.output = output_type(prediction_type, self.diffusion)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self.tables = None
        self._reset()

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def _reset(self) -> None:
        self._step, self._history = 0, {}

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The model input is the sample itself (VP models take :math:`x_t` unscaled)."""
        return sample

    def inference_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """diffusers' integer timesteps for ``num_inference_steps`` (as ``DDIMScheduler`` spaces them)."""
        n_train = self.config.num_train_timesteps
        if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer))
                or not 1 <= num_inference_steps <= n_train):
            raise ValueError(f"num_inference_steps must be an integer in 1..{n_train}; got {num_inference_steps!r}")
        n = int(num_inference_steps)
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            steps = np.linspace(0, n_train - 1, n).round()[::-1]
        elif spacing == "leading":
            steps = (np.arange(0, n) * (n_train // n)).round()[::-1] + self.config.steps_offset
        else:
            steps = np.round(np.arange(n_train, 0, -n_train / n)) - 1
        steps = steps.astype(np.int64)
        if steps.max() >= n_train or np.any(np.diff(steps) >= 0):
            raise ValueError(f"{spacing!r} spacing with steps_offset={self.config.steps_offset} gives timesteps "
                             f"{steps.tolist()}, not strictly decreasing inside 0..{n_train - 1}")
        return steps

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, timesteps: Any = None) -> None:
        """Choose the timesteps (or take ``timesteps``, decreasing integers) and build the plan's tables on them.

        Each step goes from one timestep of the list to the next (DDIM's ``timestep - N // n`` differs
        from that for ``"trailing"``/``"linspace"`` spacing when ``n`` does not divide ``N``).
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass either num_inference_steps or timesteps")
        if timesteps is None:
            steps = self.inference_timesteps(num_inference_steps)
        else:
            steps = np.asarray(timesteps.cpu() if isinstance(timesteps, torch.Tensor) else timesteps)
            n_train = self.config.num_train_timesteps
            if (steps.ndim != 1 or steps.size < 1 or not np.issubdtype(steps.dtype, np.integer)
                    or steps.min() < 0 or steps.max() >= n_train or np.any(np.diff(steps) >= 0)):
                raise ValueError(f"timesteps must be strictly decreasing integers in 0..{n_train - 1}; got {timesteps!r}")
            steps = steps.astype(np.int64)
        self.num_inference_steps = len(steps)
        self.timesteps = torch.from_numpy(steps.copy()).to(device)
        table = self.diffusion.schedule.table_times
        times = table[steps]
        self._to_zero = bool(self.config.set_alpha_to_one)
        grid = times if self._to_zero or steps[-1] == 0 else np.append(times, table[0])
        self.tables = None
        if len(grid) > 1:
            plan = METHODS[self.config.method].build(self.diffusion, grid, output=self.output,
                                                     **(self.config.method_options or {}))
            tables = getattr(plan, "tables", None)
            if tables is None or not np.array_equal(tables.ts, grid):
                raise ValueError(f"method {self.config.method!r} with options {self.config.method_options} does not "
                                 "give step tables on the scheduler's grid; use a table sampler such as 'gddim'")
            self.tables = tables
        c, d = to_data(self.diffusion, times, self.output)
        self._data = (np.zeros(len(times)) if c is None else c[:, 0, 0, 0], d[:, 0, 0, 0])
        self._reset()

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float | None = 0.0,
             generator: torch.Generator | None = None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True, **unused: Any) -> GDDIMSchedulerOutput | tuple:
        """One step from ``timestep`` to the next: ``prev_sample`` and ``pred_original_sample``.

        ``eta`` must be 0 or ``None``: stochasticity is the plan's (``method_options={"lam": 1}``);
        ``generator`` / ``variance_noise`` give the noise of stochastic plans.
        """
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        if eta:
            raise ValueError(f"eta={eta}: GDDIMScheduler's noise is the plan's lam; pass method_options={{'lam': ...}} "
                             "(with order 1) instead of eta")
        k = self._index_of(timestep)
        if tuple(model_output.shape) != tuple(sample.shape):
            raise ValueError(f"model output at step {k} (timestep {int(self.timesteps[k])}) has shape "
                             f"{tuple(model_output.shape)}; expected the sample's shape {tuple(sample.shape)}")
        y = model_output.to(sample.dtype)
        c, d = self._data[0][k], self._data[1][k]
        pred = d * y if c == 0 else c * sample + d * y
        if k == self.num_inference_steps - 1 and (self._to_zero or self.tables is None
                                                   or k == len(self.tables.ts) - 1):
            prev = pred if self._to_zero else sample  # order 1 to alpha_bar = 1, or a zero-length step
        else:
            prev = self._table_step(k, y, sample, generator, variance_noise)
        self._step = k + 1
        if not return_dict:
            return prev, pred
        return GDDIMSchedulerOutput(prev_sample=prev, pred_original_sample=pred)

    def _index_of(self, timestep: Any) -> int:
        value = int(timestep)
        k = self._step
        if k >= self.num_inference_steps or int(self.timesteps[k]) != value:
            if value == int(self.timesteps[0]):
                self._reset()
                return 0
            expected = int(self.timesteps[k]) if k < self.num_inference_steps else "none (the schedule is done)"
            raise ValueError(f"step() got timestep {value} but the schedule expects {expected} next; call "
                             "set_timesteps again to start over")
        return k

    def _table_step(self, k: int, y: torch.Tensor, x: torch.Tensor, generator: Any, variance_noise: Any) -> torch.Tensor:
        tab = self.tables

        def s(table: np.ndarray | None, *index: int, default: float = 0.0) -> float:
            return default if table is None else float(table[index][..., 0, 0, 0])

        a, b = s(tab.input_state, k), s(tab.input_output, k, default=1.0)
        h = b * y if a == 0.0 else b * y + a * x
        # the newest output enters with its conversion folded in (float64), as in run_tables, so that
        # A x and B_0 a x never cancel in the sample's dtype:
        # x' = (A + B_0 a) x + B_0 b y + (A + B_0 rho) delta + sum_{j>=1} B_j h_{k-j} + N z
        big_a, b0 = s(tab.state, k), s(tab.history, k, 0)
        out = (big_a + b0 * a) * x + (b0 * b) * y
        p = 0 if tab.correction_orders is None else int(tab.correction_orders[k])
        if p:
            delta = s(tab.correction, k, 0) * h
            for i in range(1, p):
                delta = delta + s(tab.correction, k, i) * self._history[k - i]
            rho = s(tab.reanchor, k)
            out = out + (big_a + b0 * rho) * delta
            h = h + rho * delta
        for j in range(1, int(tab.orders[k])):
            out = out + s(tab.history, k, j) * self._history[k - j]
        width = max(tab.history.shape[1], 0 if tab.correction is None else tab.correction.shape[1])
        self._history = {j: v for j, v in self._history.items() if j > k - width}
        self._history[k] = h
        if tab.noise is not None and s(tab.noise, k) != 0.0:
            z = variance_noise if variance_noise is not None else randn_tensor(
                x.shape, generator=generator, device=x.device, dtype=x.dtype)
            out = out + s(tab.noise, k) * z
        return out

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        r""":math:`\sqrt{\bar\alpha_n}\,x_0 + \sqrt{1 - \bar\alpha_n}\,\epsilon` per sample's timestep ``n``."""
        acp = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        a = acp[timesteps.to(original_samples.device).long()]
        a = a.reshape(a.shape + (1,) * (original_samples.ndim - a.ndim))
        return a.sqrt() * original_samples + (1.0 - a).sqrt() * noise
