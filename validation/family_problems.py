r"""The randomized problem family of the ``family`` benchmark: one exact-score problem per seed.

Every seed ``s`` gives one diffusion and one Gaussian-mixture data law (1-6 components), drawn
from ``numpy.random.default_rng([s, crc32("family")])``. The diffusion kind cycles with the seed,
``FAMILY_KINDS[s % 6]``, so any 6 consecutive seeds cover every kind:

``vp``
    ``VPSDE.linear`` (``beta_min`` ~ U(0.05, 0.2), ``beta_max`` ~ U(10, 25)) or ``VPSDE.cosine``;
    data dimension 2-32.
``ve``
    ``VESDE`` (``sigma_min`` ~ logU(0.005, 0.02), ``sigma_max`` ~ U(20, 80)); data dimension 2-32.
``cld``
    ``CLD`` with :math:`M^{-1}` ~ logU(1, 8) and :math:`\Gamma` either critical
    (:math:`\Gamma^2 M^{-1} = 4`, one problem in three) or critical × U(0.6, 1.6);
    :math:`\beta_0` ~ U(3, 5); 2-16 positions (data in the position channel, velocity mean 0).
``bdm``
    ``BDM((n, n))``, ``n`` in 4…16 (the smaller sizes more often), smooth random mean images and
    full pixel covariances (a squared-exponential kernel of random length scale plus a random
    low-rank part: not diagonal in the DCT basis).
``dense``
    ``ConstantCoefficientSDE``: a random stable ``k × k`` drift ``A`` (``k`` = 2…4, every
    eigenvalue's real part ≤ -0.5), a random positive definite ``Q``,
    :math:`\beta(t) = b_0 + b_1t`; 1-8 copies of the ``k``-block.
``linear``
    A time-varying ``LinearSDE`` (``k`` = 2, 3): :math:`F_t = \beta(t)(A_0 + \sin(\pi t)S_1)` with
    :math:`A_0 = -(PP^\top + cI) + S_0` (``S`` skew, so :math:`F_t + F_t^\top \prec 0` at every
    ``t``: contractive) and :math:`G_tG_t^\top = \beta(t)(Q_0 + tQ_1)`; 1-6 copies of the block.

Data (clean, in the data channel): ``K`` ~ U{1…6} components, weights Dirichlet(2), means
N(0, 1) per coordinate (BDM: smooth images), component scale ``σ`` ~ logU(0.05, 2) and
covariance :math:`\sigma^2 U\operatorname{diag}(U(0.3, 1.5))U^\top` (``U`` a random rotation;
BDM: the smooth full covariance above). The state law at ``t = 0`` is that plus the diffusion's
:math:`\Sigma_0` (the augmented sense of :class:`~gddim_numerics.GaussianMixture`).

Seeds ``1000…`` are the reporting family (:data:`FIRST_SEED`); nothing in the library is chosen
on them. Seeds 2000–2047 judged ``gddim_auto``'s objective, the BDM problems above 64 pixels among seeds
3000–3599 its band probes, and seeds 3000–3059 its guard margin, the number of schemes whose grids it
optimises and the log-SNR schemes of its family (:mod:`gddim_numerics.validation.auto_design`); none is ever reported.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

import gddim_numerics as gd
from gddim_numerics.layout import dense_operator

FAMILY_KINDS = ("vp", "ve", "cld", "bdm", "dense", "linear")
FIRST_SEED = 1000
MAX_COMPONENTS = 6
SCALE_RANGE = (0.05, 2.0)
BDM_SIZES = (4, 5, 6, 8, 10, 12, 16)
_BDM_SIZE_WEIGHTS = np.array([3, 2, 2, 3, 1, 1, 1], dtype=float)


@dataclass(frozen=True)
class FamilyProblem:
    """One problem of the family.

    Attributes
    ----------
    seed : int
        The seed that generated it (:func:`make_problem` rebuilds it from this alone).
    kind : str
        One of :data:`FAMILY_KINDS`.
    label : str
        A short description (diffusion parameters, shape, components, scale).
    diffusion : gddim_numerics.LinearDiffusion
    data : gddim_numerics.GaussianMixture
        The exact-score problem (``eps_R``, ``reference_flow``, ``sample_prior``).
    scale : float
        The component scale ``σ``.
    """

    seed: int
    kind: str
    label: str
    diffusion: gd.LinearDiffusion
    data: gd.GaussianMixture
    scale: float

    @property
    def dim(self) -> int:
        """Size ``D`` of the flattened state (CLD: positions and velocities)."""
        return self.data.dim


def family_seeds(n: int, first: int = FIRST_SEED) -> list[int]:
    """``n`` consecutive seeds from ``first`` (the reporting family starts at :data:`FIRST_SEED`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (number of problems); got {n!r}")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise ValueError(f"first must be a non-negative int seed; got {first!r}")
    return list(range(first, first + n))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(b"family")])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    """Random SPD matrix with eigenvalues in [0.3, 1.5] and random eigenvectors."""
    u = _rotation(rng, d)
    return (u * rng.uniform(0.3, 1.5, d)) @ u.T


def _skew(rng: np.random.Generator, k: int, scale: float) -> np.ndarray:
    m = scale * rng.standard_normal((k, k))
    return 0.5 * (m - m.T)


# ------------------------------------------------------------------------------------ diffusions
def _vp(rng):
    if rng.random() < 0.5:
        b0, b1 = rng.uniform(0.05, 0.2), rng.uniform(10.0, 25.0)
        return gd.VPSDE.linear(beta_min=b0, beta_max=b1), f"VP linear beta [{b0:.3g}, {b1:.3g}]"
    return gd.VPSDE.cosine(), "VP cosine"


def _ve(rng):
    lo, hi = _log_uniform(rng, 0.005, 0.02), rng.uniform(20.0, 80.0)
    return gd.VESDE(sigma_min=lo, sigma_max=hi), f"VE sigma [{lo:.3g}, {hi:.3g}]"


def _cld(rng):
    mass_inv = _log_uniform(rng, 1.0, 8.0)
    critical = 2.0 / math.sqrt(mass_inv)
    gamma = critical if rng.random() < 1.0 / 3.0 else critical * rng.uniform(0.6, 1.6)
    beta0 = rng.uniform(3.0, 5.0)
    sde = gd.CLD(mass_inv=mass_inv, gamma_friction=gamma, beta0=beta0)
    return sde, f"CLD M^-1={mass_inv:.3g} Gamma={gamma:.3g} ({gamma / critical:.2f} x critical) beta={beta0:.3g}"


def _stable_drift(rng, k: int) -> np.ndarray:
    m = 0.8 * rng.standard_normal((k, k))
    shift = np.max(np.linalg.eigvals(m).real) + rng.uniform(0.5, 1.5)
    return m - shift * np.eye(k)


def _pd(rng, k: int, floor: float) -> np.ndarray:
    g = np.tril(rng.standard_normal((k, k)))
    return g @ g.T / k + floor * np.eye(k)


def _dense(rng):
    k = int(rng.integers(2, 5))
    a, q = _stable_drift(rng, k), _pd(rng, k, 0.1)
    b0, b1 = rng.uniform(0.5, 2.0), rng.uniform(0.0, 4.0)
    sde = gd.ConstantCoefficientSDE(a, 2.0 * q, beta=lambda t: b0 + b1 * np.asarray(t, dtype=np.float64),
                                    beta_integral=lambda t: b0 * np.asarray(t) + 0.5 * b1 * np.asarray(t) ** 2,
                                    initial_covariance=1e-4 * np.eye(k), t_end=1e-3)
    return sde, f"dense {k}x{k} beta={b0:.2f}+{b1:.2f}t"


def _linear(rng):
    k = int(rng.integers(2, 4))
    p = rng.standard_normal((k, k)) / math.sqrt(k)
    a0 = -(p @ p.T + rng.uniform(0.5, 1.0) * np.eye(k)) + _skew(rng, k, 1.0)
    s1 = _skew(rng, k, 1.0)
    q0, q1 = _pd(rng, k, 0.1), _pd(rng, k, 0.0)
    b0, b1 = rng.uniform(1.0, 2.0), rng.uniform(0.0, 3.0)
    sde = gd.LinearSDE(lambda t: (b0 + b1 * t) * (a0 + math.sin(math.pi * t) * s1),
                       lambda t: (b0 + b1 * t) * 2.0 * (q0 + t * q1),
                       initial_covariance=1e-4 * np.eye(k), t_end=1e-3)
    return sde, f"LinearSDE {k}x{k} beta={b0:.2f}+{b1:.2f}t"


# ------------------------------------------------------------------------------------ data
def _smooth_kernel(n: int, length: float) -> np.ndarray:
    """Squared-exponential kernel over the pixels of an ``n × n`` image (C order), length in pixels."""
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    d2 = np.sum((ij[:, None, :] - ij[None, :, :]) ** 2, axis=-1)
    return np.exp(-0.5 * d2 / length**2)


def _image_law(rng, n: int, k_comp: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random mean images ``(K, n*n)`` and one full smooth pixel covariance ``(n*n, n*n)``."""
    d = n * n
    kern = _smooth_kernel(n, rng.uniform(1.0, 0.3 * n)) + 1e-6 * np.eye(d)
    root = np.linalg.cholesky(kern)
    means = rng.standard_normal((k_comp, d)) @ root.T
    rank = max(2, n // 2)
    z = root @ rng.standard_normal((d, rank))
    cov = 0.6 * _smooth_kernel(n, rng.uniform(1.0, 0.3 * n)) + 0.3 * z @ z.T / (rank * np.mean(np.diag(z @ z.T)))
    cov = cov + 0.1 * np.eye(d)
    return means, scale**2 * cov / np.mean(np.diag(cov))


def _data_layout(sde: gd.LinearDiffusion, kind: str, rng) -> tuple[tuple[int, ...], int]:
    """Event shape and the number of clean data coordinates."""
    if kind == "bdm":
        n = sde.image_shape[0]
        return (1, n, n), n * n
    if kind == "cld":
        n = int(rng.choice([2, 3, 4, 6, 8, 12, 16]))
        return (n, 2), n
    if kind in ("dense", "linear"):
        k = sde.block_size
        n = int(rng.integers(1, (9 if kind == "dense" else 7)))
        return (n, k), n * k
    d = int(rng.choice([2, 3, 4, 6, 8, 12, 16, 24, 32]))
    return (d,), d


def _embed(sde: gd.LinearDiffusion, kind: str, event_shape, means: np.ndarray, covs: np.ndarray):
    """Clean means ``(K, d)``, covariances ``(K, d, d)`` as state laws at ``t = 0`` (Σ_0 added)."""
    dim = math.prod(event_shape)
    sigma0 = dense_operator(sde, sde.initial_covariance, event_shape)
    idx = np.arange(0, dim, 2) if kind == "cld" else np.arange(dim)
    state_means = np.zeros((len(means), dim))
    state_means[:, idx] = means
    state_covs = np.repeat(sigma0[None], len(means), axis=0)
    state_covs[:, idx[:, None], idx[None, :]] += covs
    return state_means.reshape((len(means),) + tuple(event_shape)), state_covs


_DIFFUSIONS = {"vp": _vp, "ve": _ve, "cld": _cld, "dense": _dense, "linear": _linear}


@lru_cache(maxsize=8)
def make_problem(seed: int) -> FamilyProblem:
    """The problem of ``seed`` (deterministic; cached per process).

    Parameters
    ----------
    seed : int
        Non-negative; the kind is ``FAMILY_KINDS[seed % 6]``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    seed = int(seed)
    kind = FAMILY_KINDS[seed % len(FAMILY_KINDS)]
    rng = _rng(seed)
    if kind == "bdm":
        n = int(rng.choice(BDM_SIZES, p=_BDM_SIZE_WEIGHTS / _BDM_SIZE_WEIGHTS.sum()))
        sde, what = gd.BDM((n, n)), f"BDM {n}x{n}"
    else:
        sde, what = _DIFFUSIONS[kind](rng)
    event_shape, d = _data_layout(sde, kind, rng)
    n_comp = int(rng.integers(1, MAX_COMPONENTS + 1))
    weights = rng.dirichlet(2.0 * np.ones(n_comp))
    scale = _log_uniform(rng, *SCALE_RANGE)
    if kind == "bdm":
        means, cov = _image_law(rng, sde.image_shape[0], n_comp, scale)
        covs = cov * rng.uniform(0.5, 1.5, n_comp)[:, None, None]
    else:
        means = rng.standard_normal((n_comp, d))
        covs = np.stack([scale**2 * _spd(rng, d) for _ in range(n_comp)])
    state_means, state_covs = _embed(sde, kind, event_shape, means, covs)
    data = gd.GaussianMixture(sde, event_shape, weights, state_means, state_covs)
    label = f"{what}; event {event_shape}; K={n_comp}; scale {scale:.3g}"
    return FamilyProblem(seed, kind, label, sde, data, scale)
