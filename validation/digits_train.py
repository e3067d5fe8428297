r"""Score networks on scikit-learn's digits: data, forward processes, training and the weight cache.

Data
    ``sklearn.datasets.load_digits`` (1797 images, 8×8, values 0..16, bundled: no download), scaled
    to :math:`[-1, 1]` by :math:`x/8 - 1` and split once (seed :data:`SPLIT_SEED`) into
    :data:`N_HELD_OUT` held-out images (the Fréchet distance's reference) and the rest for training.

Diffusions (:data:`DIFFUSIONS`) and the state of one image
    - ``vp``: ``VPSDE.discrete`` on diffusers' DDPM table (1000 linear betas 1e-4..0.02, computed as
      diffusers does, in float32): state ``(64,)``; timestep ``n`` is ``t = (n + 1)/1000``; training
      draws the 1000 table entries (a discrete DDPM).
    - ``cld``: ``CLD()``: state ``(64, 2)`` = per pixel ``[x, v]``, clean state ``[x_0, 0]``.
    - ``bdm``: ``BDM((8, 8))``: state ``(8, 8)``.

    CLD and BDM draw training times from :data:`N_TIMES` times in ``[t_end, t_start]`` equally spaced in
    :math:`\sqrt t` (the paper's sampling grid: where the samplers ask the network, and where the flow's
    sensitivity to its errors, :math:`\propto R_t^{-1}`, is largest; equally spaced in ``t`` left 3% of the
    times below ``t = 0.03``). On BDM this took the solver errors of every gDDIM scheme at NFE 50 from
    0.0137 / 0.0084 (q = 2 / gddim_auto) to 0.0123 / 0.0023 (the small-``t`` part of the flow converged at
    order ~1 before).

Training target (:attr:`DigitsDiffusion.output`)
    :math:`u_t = \Psi(t, 0)u_0 + R_t\epsilon`, :math:`\epsilon \sim N(0, I)`, loss
    :math:`\|\epsilon_\theta(u_t, t) - \epsilon\|^2` (VP: gDDIM's ε, ``output="eps_R"``, what diffusers'
    schedulers take) or :math:`\|D_\theta(u_t, t) - u_0\|^2` (CLD, BDM: ``output="data"``; an ε-network's
    errors are amplified by :math:`1/d_{min}` in BDM's high frequencies). CLD's flow multiplies a network's
    errors by :math:`R_t^{-1}` (ε) or :math:`\Sigma_t^{-1}` (data), ~1e3 and ~1e6 at ``t_end = 1e-3``: the
    flows of plain CLD networks diverged below ``t`` ≈ 0.01 whatever they predicted (RMS of the end states
    4e25 for data, 1e13 for ε; RK45 and DOP853 agree). The CLD network is therefore a
    :class:`GaussianSkip` (EDM's preconditioning carried over to CLD): the exact denoiser of Gaussian pixels
    plus the network's residual scaled by the posterior standard deviation :math:`c_t`, loss
    :math:`\|D_\theta - u_0\|^2 / c_t^2`. Its flow converges: the reference (256 start points, DOP853 at
    rtol 1e-8) takes 710 evaluations, estimated accuracy 7.6e-9 (validation/DIGITS.md;
    :func:`~.digits_runs.reference_task` still checks for divergence).
    :math:`\Psi(t, 0)` and :math:`R_t` are the library's float64 tables (``mean_coefficient``,
    ``gddim_factor``) per mode, applied in the diffusion's basis (BDM: the orthonormal 2-D DCT, :math:`V = D_H \otimes D_W`).

Network
    ``ScoreMLP``: the flattened state and smooth sinusoidal features of ``t`` and ``log t`` through residual
    SiLU blocks; trained in float32 with Adam (cosine learning rate) and an exponential moving
    average of the weights, which is the network used for sampling (in float64, so that the
    probability-flow ODE has a smooth right-hand side for the DOP853 reference).

Cache
    Weights are stored as ``<cache>/digits/<diffusion>-<key>.pt``, ``key`` a hash of the training
    configuration; written to a temporary file in the same folder and renamed (atomic), so a failed
    or interrupted run caches nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import gddim_numerics as gd
from gddim_numerics.bases import DCTBasis

N_HELD_OUT, SPLIT_SEED = 360, 0
N_TIMES = 1000
DDPM_BETAS = (1e-4, 0.02, 1000)
CACHE_VERSION = 3
DEFAULT_CACHE = Path("~/.cache/gddim-numerics").expanduser()


# ------------------------------------------------------------------------------------ data
def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train images, train labels, held-out images, held-out labels)``; images ``(n, 8, 8)`` in [-1, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64) / 8.0 - 1.0
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    held, train = order[:N_HELD_OUT], order[N_HELD_OUT:]
    return images[train], digits.target[train], images[held], digits.target[held]


def ddpm_alphas_cumprod() -> np.ndarray:
    """diffusers' default DDPM ``alphas_cumprod`` (linear betas, float32 arithmetic), as float64."""
    import torch

    lo, hi, n = DDPM_BETAS
    betas = torch.linspace(lo, hi, n, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64).numpy()


@dataclass(frozen=True)
class DigitsDiffusion:
    """A diffusion of the demo: its name, title, constructor and the state shape of one image."""

    name: str
    title: str
    state_shape: tuple[int, ...]
    output: str
    #: the network is wrapped in :class:`GaussianSkip` (CLD)
    gaussian_skip: bool = False

    def make(self) -> gd.LinearDiffusion:
        """The diffusion object (a fresh one each call)."""
        if self.name == "vp":
            return gd.VPSDE.discrete(alphas_cumprod=ddpm_alphas_cumprod())
        if self.name == "cld":
            return gd.CLD()
        return gd.BDM((8, 8))

    def train_times(self, diffusion: gd.LinearDiffusion) -> np.ndarray:
        """The training times: the DDPM table's ``(n + 1)/1000`` (VP) or :data:`N_TIMES` equally spaced in ``sqrt(t)``."""
        if self.name == "vp":
            return (np.arange(DDPM_BETAS[2]) + 1.0) / DDPM_BETAS[2]
        return gd.time_grid(diffusion, N_TIMES - 1, "power", power=2.0)

    def clean_state(self, images: np.ndarray) -> np.ndarray:
        """Clean states ``u_0`` of images ``(n, 8, 8)``: VP ``(n, 64)``, CLD ``(n, 64, 2)`` (v = 0), BDM ``(n, 8, 8)``."""
        n = len(images)
        if self.name == "vp":
            return images.reshape(n, 64)
        if self.name == "cld":
            return np.stack([images.reshape(n, 64), np.zeros((n, 64))], axis=-1)
        return images.copy()

    def image_of(self, states: np.ndarray) -> np.ndarray:
        """The image part ``(n, 8, 8)`` of states (CLD: the position channel)."""
        states = np.asarray(states)
        if self.name == "cld":
            states = states[..., 0]
        return states.reshape(len(states), 8, 8)


DIFFUSIONS = {
    "vp": DigitsDiffusion("vp", "VP (discrete DDPM, 1000 linear betas 1e-4..0.02), eps-prediction", (64,), "eps_R"),
    "cld": DigitsDiffusion("cld", "CLD (M^-1 = 4, Gamma = 1, beta = 4), data-prediction of (x, v), Gaussian skip",
                           (64, 2), "data", gaussian_skip=True),
    "bdm": DigitsDiffusion("bdm", "BDM 8x8 (gDDIM schedule, sigma_B,max = 10), data-prediction", (8, 8), "data"),
}


def basis_matrix(diffusion: gd.LinearDiffusion) -> np.ndarray | None:
    """``V^T`` with mode coordinates ``y = V^T x`` of a flattened image (BDM), or ``None`` (identity basis)."""
    if isinstance(diffusion.basis, DCTBasis):
        return np.kron(diffusion.basis.matrix(0), diffusion.basis.matrix(1))
    return None


def noisy_states(diffusion: gd.LinearDiffusion, psi: np.ndarray, r: np.ndarray, u0: np.ndarray,
                 eps: np.ndarray) -> np.ndarray:
    r""":math:`u_t = \Psi(t, 0)u_0 + R_t\epsilon` per sample (float64 NumPy).

    ``psi``, ``r``: ``diffusion.mean_coefficient(t)`` and ``diffusion.gddim_factor(t)`` at each
    sample's time, ``(n, M, k, k)``; ``u0`` and ``eps`` have shape ``(n, *state)`` with ``state``
    ``(64,)``, ``(64, 2)`` or ``(8, 8)``.
    """
    n = len(u0)
    vt = basis_matrix(diffusion)
    if vt is not None:  # scalar modes in the DCT basis
        def per_mode(a, v):
            return ((v.reshape(n, -1) @ vt.T) * a[:, :, 0, 0]) @ vt
        return (per_mode(psi, u0) + per_mode(r, eps)).reshape(u0.shape)
    if diffusion.block_size == 1:
        return psi[:, 0, 0, 0, None] * u0 + r[:, 0, 0, 0, None] * eps
    return np.einsum("nij,npj->npi", psi[:, 0], u0) + np.einsum("nij,npj->npi", r[:, 0], eps)


# ------------------------------------------------------------------------------------ the network
def _score_mlp_class():
    import torch
    from torch import nn

    class ScoreMLP(nn.Module):
        r"""``eps(x, t)``: flattened state + smooth time features through residual SiLU blocks.

        Time features: :math:`\sin, \cos(f t)` and :math:`\sin, \cos(f \log(t)/5)` for ``n_freq``
        frequencies :math:`f` from 1 to 10 (so the output is smooth in ``t`` between training times,
        and small times are resolved on a log scale).
        """

        def __init__(self, dim: int, hidden: int, depth: int, n_freq: int = 8):
            super().__init__()
            self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(10.0), n_freq)))
            self.inp = nn.Linear(dim + 4 * n_freq, hidden)
            self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
            self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

        def forward(self, x, t):
            angle = torch.cat([t[:, None], torch.log(t)[:, None] / 5.0], dim=1)[:, :, None] * self.freqs
            angle = angle.reshape(len(t), -1)
            h = self.inp(torch.cat([x.reshape(len(x), -1), torch.sin(angle), torch.cos(angle)], dim=1))
            for block in self.blocks:
                h = h + block(h)
            return self.out(h).reshape(x.shape)

    return ScoreMLP


def _gaussian_skip_class():
    import torch
    from torch import nn

    class GaussianSkip(nn.Module):
        r"""CLD data prediction :math:`D(u, t) = D_G(u, t) + c_t F_\theta(u, t)`: EDM's preconditioning for CLD.

        :math:`D_G` is the exact posterior mean of :math:`x_0` for Gaussian pixels :math:`x_0 \sim N(\mu_p,
        \sigma^2)` (per-pixel mean, mean pixel variance of the training images): with
        :math:`\psi = \Psi(t, 0)e_x` (the clean state is :math:`[x_0, 0]`), :math:`g = \Sigma_t^{-1}\psi` and
        :math:`a = \psi^\top g`,

        .. math:: D_G = \mu_p + c_t^2\, g^\top (u_p - \psi\mu_p), \qquad c_t^2 = \frac{\sigma^2}{1 + \sigma^2 a},

        :math:`c_t^2` being the posterior variance of :math:`x_0` given :math:`u_t`. The velocity prediction is
        :math:`0` (the clean velocity is). The network :math:`F_\theta` (:class:`ScoreMLP`) learns the residual in
        units of :math:`c_t` (loss :math:`\|D - u_0\|^2 / c_t^2`). Near ``t_end`` the flow multiplies errors of
        :math:`D` by :math:`\Sigma_t^{-1}` (~1e6 at ``t = 1e-3``); here they are :math:`c_t \approx
        \sqrt{\Sigma_{t,xx}}` times the network's, and :math:`D_G` has the exact slope :math:`\partial D/\partial x
        \to 1` by construction.
        """

        def __init__(self, net, diffusion: gd.LinearDiffusion, n_pixels: int):
            super().__init__()
            self.net, self.diffusion = net, diffusion
            self.register_buffer("pixel_mean", torch.zeros(n_pixels))
            self.register_buffer("pixel_var", torch.ones(()))

        def coefficients(self, t):
            """``(psi, g, c^2)`` at the times ``t`` (``(B,)`` tensor), in float64 from the diffusion's tables."""
            ts = t.detach().to("cpu", torch.float64).numpy()
            psi = self.diffusion.mean_coefficient(ts)[:, 0, :, 0]
            g = np.linalg.solve(self.diffusion.covariance(ts)[:, 0], psi[..., None])[..., 0]
            var = float(self.pixel_var)
            post = var / (1.0 + var * np.sum(psi * g, axis=-1))
            return tuple(torch.as_tensor(v, dtype=t.dtype, device=t.device) for v in (psi, g, post))

        def forward(self, u, t):
            psi, g, post = self.coefficients(t)
            mean = self.pixel_mean.to(u.dtype)
            resid = u - psi[:, None, :] * mean[None, :, None]
            d_gauss = mean + post[:, None] * torch.sum(resid * g[:, None, :], dim=-1)
            d_x = d_gauss + torch.sqrt(post)[:, None] * self.net(u, t)[..., 0]
            return torch.stack([d_x, torch.zeros_like(d_x)], dim=-1)

    return GaussianSkip


@dataclass(frozen=True)
class TrainConfig:
    """What defines a trained network (its cache key)."""

    diffusion: str
    hidden: int = 256
    depth: int = 3
    steps: int = 6000
    batch: int = 256
    lr: float = 2e-3
    ema: float = 0.999
    seed: int = 0

    def key(self) -> str:
        """Hash of the configuration, the data split and the cache format."""
        times = {} if self.diffusion == "vp" else {"times": "sqrt_t"}  # VP: the DDPM table (key unchanged)
        if DIFFUSIONS[self.diffusion].gaussian_skip:
            times["gaussian_skip"] = True
        text = json.dumps({**asdict(self), **times, "output": DIFFUSIONS[self.diffusion].output,
                           "split": [N_HELD_OUT, SPLIT_SEED], "n_times": N_TIMES,
                           "version": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_net(config: TrainConfig):
    """An untrained :class:`ScoreMLP` for ``config`` (float32), in a :class:`GaussianSkip` where the diffusion asks."""
    setup = DIFFUSIONS[config.diffusion]
    net = _score_mlp_class()(int(np.prod(setup.state_shape)), config.hidden, config.depth)
    if setup.gaussian_skip:
        net = _gaussian_skip_class()(net, setup.make(), setup.state_shape[0])
    return net


def train(config: TrainConfig, images: np.ndarray) -> tuple[dict, float]:
    """Train on ``images``; ``(EMA state_dict, mean loss of the last 10% of steps)``."""
    import torch

    setup = DIFFUSIONS[config.diffusion]
    diffusion = setup.make()
    times = setup.train_times(diffusion)
    psi_table, r_table = diffusion.mean_coefficient(times), diffusion.gddim_factor(times)
    u0_all = setup.clean_state(images)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    net = build_net(config)
    if setup.gaussian_skip:
        pixels = u0_all[..., 0]
        net.pixel_mean.copy_(torch.from_numpy(pixels.mean(axis=0)))
        net.pixel_var.fill_(float(pixels.var(axis=0).mean()))
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    tail = []
    for step in range(config.steps):
        pick = rng.integers(0, len(u0_all), config.batch)
        at = rng.integers(0, len(times), config.batch)
        t = times[at]
        eps = rng.standard_normal(u0_all[pick].shape)
        u = noisy_states(diffusion, psi_table[at], r_table[at], u0_all[pick], eps)
        target = eps if setup.output == "eps_R" else u0_all[pick]
        t_batch = torch.from_numpy(t).float()
        pred = net(torch.from_numpy(u).float(), t_batch)
        if setup.gaussian_skip:  # the residual in units of the posterior standard deviation
            scale = torch.sqrt(net.coefficients(t_batch)[2])[:, None]
            loss = torch.mean(((pred - torch.from_numpy(target).float())[..., 0] / scale) ** 2)
        else:
            loss = torch.mean((pred - torch.from_numpy(target).float()) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(config.ema).add_(v, alpha=1.0 - config.ema)
        if step >= config.steps - max(1, config.steps // 10):
            tail.append(float(loss.detach()))
    if not all(math.isfinite(x) for x in tail):
        raise RuntimeError(f"training the {config.diffusion} network diverged (non-finite loss); nothing cached")
    return ema, float(np.mean(tail))


def save_atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path`` (nothing left on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_or_train(config: TrainConfig, images: np.ndarray, cache: Path) -> dict:
    """The trained network of ``config`` in float64 eval mode, from ``cache`` or trained now and cached.

    Returns ``{"net", "config", "loss", "cached", "path"}``.
    """
    import torch

    folder = Path(cache) / "digits"
    path = folder / f"{config.diffusion}-{config.key()}.pt"
    cached = path.exists()
    if cached:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state, loss = saved["state"], float(saved["loss"])
    else:
        state, loss = train(config, images)
        save_atomic(path, lambda tmp: torch.save({"state": state, "loss": loss, "config": asdict(config)}, tmp))
    net = build_net(config)
    net.load_state_dict(state)
    net = net.to(torch.float64).eval()
    return {"net": net, "config": asdict(config), "loss": loss, "cached": cached, "path": str(path)}


def eps_closure(net):
    """``eps_fn(x, t)`` of a float64 network for NumPy or torch states ``(B, *state)`` and a scalar ``t``.

    The output has the input's type (NumPy in, NumPy out); torch in inference mode.
    """
    import torch

    def eps_fn(x, t):
        as_numpy = isinstance(x, np.ndarray)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) if as_numpy else x.to(torch.float64)
        with torch.inference_mode():
            out = net(xt, torch.full((len(xt),), float(t), dtype=torch.float64))
        return out.numpy() if as_numpy else out

    return eps_fn
