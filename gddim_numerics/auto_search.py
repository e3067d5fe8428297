r"""Scoring of :func:`~gddim_numerics.auto.auto_plan`'s candidates: the objective and the guard (:class:`Search`).

For one :class:`~gddim_numerics.statistics.DataStatistics`, :meth:`Search.error` is the objective of a
(scheme, grid) candidate — the largest log ratio of its :func:`~gddim_numerics.surrogate.surrogate_error`
to the paper's scheme's over the members of :data:`ENSEMBLE` — and :meth:`Search.probe_errors` is what
the guard compares with the paper's scheme (the switching probes :data:`PROBES`,
:class:`~gddim_numerics.probe.ProbeSet`). The tables of a candidate are built once and shared by both.

Scalar-mode diffusions with more than :data:`MAX_MODES` modes (BDM images) are scored on
:data:`MAX_MODES` representative modes (:class:`ModeSubset`: quantiles of the mode frequency; every
data mode is scored with the tables of its group's representative).
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .diffusion import ScalarModesDiffusion
from .modal import MAX_DENSE, group_problems, modal_problems
from .plans import deterministic_tables, dirac_gain
from .probe import ProbeSet
from .quadrature import KernelValues
from .statistics import DataStatistics
from .surrogate import ensemble_errors, prefetch_flows

if TYPE_CHECKING:
    from .auto import Scheme

#: Plans beyond this Dirac perturbation gain are never picked.
MAX_GAIN = 1e4
#: BDM: largest event size whose covariance the search keeps dense when it is not diagonal in DCT
#: coordinates (beyond it the search scores the power spectrum).
SEARCH_DENSE = 64
#: Largest number of diffusion modes the surrogate uses during the search.
MAX_MODES = 32
#: Problems of one mode whose excess covariances (and mean directions) agree to this relative tolerance are scored
#: as one weighted representative (:func:`~gddim_numerics.modal.group_problems`): images whose pixels or frequencies
#: have nearly equal variances cost a few problems instead of one per pixel.
GROUP_TOL = 1e-2
#: ``component_scale`` values of the ensemble members: the data's own Gaussian and mixtures of ever sharper
#: components with the same overall moments (down to nearly Dirac components, whose data prediction is nearly
#: piecewise constant in time).
ENSEMBLE = (1.0, 0.1, 0.01, 1e-3)
#: (weight, component scale) of the switching probes (:class:`~gddim_numerics.probe.ProbeSet`) that guard
#: every pick other than the paper's scheme.
PROBES = ((0.5, 0.1), (0.5, 0.01), (0.2, 0.1), (0.2, 0.01))
#: Searches kept per diffusion (by statistics fingerprint, least recently used out first): plans for other NFEs,
#: grids or options on the same statistics reuse the one-time work (modal problems, exact-flow matrices, the
#: probes and their reference solves).
SEARCH_CACHE_SIZE = 4
#: Guards the kept searches of every diffusion (a search is taken out while a choice uses it).
_KEPT = threading.Lock()
#: Multi-mode diffusions scored per mode: the probes run in the mode of largest variance of each of this many
#: frequency bands (equal numbers of modes, by the mode's rate of decay), since modes of other frequencies
#: are noised on other schedules and a plan can follow switching in one and not in another.
PROBE_BANDS = 4


def decay_rates(diffusion: ScalarModesDiffusion) -> np.ndarray:
    r"""Each mode's rate :math:`\partial_t \log \Psi_m` at the middle of the diffusion's interval (it orders the
    modes by frequency)."""
    return diffusion._dlog_mean(np.asarray(0.5 * (diffusion.t_start + diffusion.t_end)))


class ModeSubset(ScalarModesDiffusion):
    """The modes ``idx`` of a scalar-mode diffusion (the same per-mode functions)."""

    def __init__(self, base: ScalarModesDiffusion, idx: np.ndarray):
        self.base, self.idx, self.n_modes = base, idx, len(idx)
        self.time_range, self.t_start, self.t_end = base.time_range, base.t_start, base.t_end
        # a diffusion that can evaluate its per-mode functions on a subset (BDM) does; others are sliced
        self._sub = base.mode_functions(idx) if hasattr(base, "mode_functions") else None

    def _modes(self, name, t):
        if self._sub is not None:
            return getattr(self._sub, name)(t)
        return getattr(self.base, name)(t)[..., self.idx]

    def _log_mean(self, t):
        return self._modes("_log_mean", t)

    def _dlog_mean(self, t):
        return self._modes("_dlog_mean", t)

    def _variance(self, t):
        return self._modes("_variance", t)

    def _dvariance(self, t):
        return self._modes("_dvariance", t)

    def log_snr(self, t) -> np.ndarray:
        """The whole diffusion's noise-level measure: a scheme that extrapolates in log-SNR is scored on the
        subset with the variable the plan on the whole diffusion uses."""
        return self.base.log_snr(t)


class Search:
    """The surrogate of one (diffusion, statistics) pair, on representative modes where there are many."""

    def __init__(self, statistics: DataStatistics):
        diffusion = statistics.diffusion
        # BDM beyond SEARCH_DENSE pixels: score on the power spectrum (S's diagonal in DCT coordinates)
        problems = modal_problems(statistics, max_dense=SEARCH_DENSE if diffusion.n_modes > 1 else MAX_DENSE)
        self.diffusion, self.statistics = diffusion, statistics
        self.search_diffusion, self.problems = diffusion, problems
        if problems.mode is not None and diffusion.n_modes > MAX_MODES and isinstance(diffusion, ScalarModesDiffusion):
            order = np.argsort(decay_rates(diffusion), kind="stable")
            groups = np.array_split(order, MAX_MODES)
            reps = np.array([g[len(g) // 2] for g in groups])
            group_of = np.empty(diffusion.n_modes, dtype=int)
            for i, g in enumerate(groups):
                group_of[g] = i
            self.search_diffusion = ModeSubset(diffusion, reps)
            self.problems = replace(problems, mode=group_of[problems.mode])
        #: the probes run on one data problem itself; the surrogate sums over the grouped problems
        self.probe_problems = self.problems
        self.problems = group_problems(self.problems, self.search_diffusion, GROUP_TOL)
        self.search_stats = _StatsView(self.search_diffusion, statistics)
        self.probed = self._probed_problems()
        self._probes: dict = {}
        self._clear_choice()

    def _clear_choice(self) -> None:
        """Drop what one choice builds: candidate tables, the kernel values behind them, the reference, and the
        probes' blocks at the candidates' times."""
        for probe_sets in self._probes.values():
            for probes in probe_sets:
                probes.forget_times()
        self._tables: dict = {}
        #: kernel values at quadrature nodes, shared by the candidates' table builds (steps recur across schemes,
        #: predictor and corrector, and grids)
        self._kernel_values = KernelValues()
        #: member errors of the paper's scheme on the base grid (the relative objective's reference)
        self.reference: np.ndarray | None = None

    @classmethod
    def take(cls, statistics: DataStatistics) -> "Search":
        """The search kept on ``statistics.diffusion`` for these statistics (:meth:`keep`), taken out of the cache
        while a choice uses it (a concurrent choice on the same statistics makes its own), else a new one."""
        with _KEPT:
            kept = statistics.diffusion.__dict__.get("_search_cache", {}).pop(statistics.fingerprint, None)
        return cls(statistics) if kept is None else kept

    @contextmanager
    def choice(self) -> Iterator["Search"]:
        """One choice: per-choice caches start empty and are dropped afterwards (they can be large; the one-time
        work is kept)."""
        self._clear_choice()
        try:
            yield self
        finally:
            self._clear_choice()

    def keep(self) -> None:
        """Keep this search on its diffusion for later choices on the same statistics (:data:`SEARCH_CACHE_SIZE`)."""
        with _KEPT:
            cache = self.diffusion.__dict__.setdefault("_search_cache", OrderedDict())
            cache[self.statistics.fingerprint] = self
            cache.move_to_end(self.statistics.fingerprint)
            while len(cache) > SEARCH_CACHE_SIZE:
                cache.popitem(last=False)

    def _probed_problems(self) -> list[int | None]:
        """Problems the probes run in: the default (largest excess) for one mode or a dense problem; for a
        multi-mode diffusion scored per mode, the largest-variance problem of each of :data:`PROBE_BANDS`
        frequency bands."""
        diffusion, problems = self.search_diffusion, self.probe_problems
        if diffusion.n_modes == 1 or problems.mode is None or problems.size != 1:
            return [None]
        rank = np.empty(diffusion.n_modes, dtype=int)
        rank[np.argsort(decay_rates(diffusion), kind="stable")] = np.arange(diffusion.n_modes)
        band = rank[problems.mode] * PROBE_BANDS // diffusion.n_modes
        variance = problems.cov[:, 0, 0]
        picks = [int(np.flatnonzero(band == b)[np.argmax(variance[band == b])])
                 for b in range(PROBE_BANDS) if np.any(band == b)]
        return sorted(picks, key=lambda p: -variance[p])  # the largest-variance problem first

    def tables(self, scheme: Scheme, ts):
        """Tables of ``scheme`` on ``ts`` for the search diffusion (cached), or ``None`` if they cannot be built."""
        key = (scheme, np.asarray(ts).tobytes())
        if key not in self._tables:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._tables[key] = deterministic_tables(self.search_diffusion, ts, **scheme.options(),
                                                             kernel_values=self._kernel_values)
            except (ValueError, np.linalg.LinAlgError):
                self._tables[key] = None
        return self._tables[key]

    def probe_errors(self, scheme: Scheme, ts) -> np.ndarray:
        """Errors of ``scheme`` on ``ts`` on the switching probes, ``(len(probed), len(PROBES))``: one row per
        problem of :attr:`probed` (the first the largest-variance one), one column per :data:`PROBES` entry
        (``inf`` if it cannot be built)."""
        t0, t1 = float(ts[0]), float(ts[-1])
        if (t0, t1) not in self._probes:
            shared: dict = {}  # the diffusion's tables by time, for every probed problem
            self._probes[(t0, t1)] = [ProbeSet(self.search_diffusion, self.probe_problems, t0, t1, PROBES, problem=p,
                                               shared=shared) for p in self.probed]
        tables = self.tables(scheme, ts)
        if tables is None:
            return np.full((len(self.probed), len(PROBES)), np.inf)
        return np.stack([probes.errors(tables) for probes in self._probes[(t0, t1)]])

    def member_errors(self, scheme: Scheme, ts) -> np.ndarray:
        """Surrogate errors of ``scheme`` on ``ts`` at every ``component_scale`` of :data:`ENSEMBLE`
        (``inf`` where the plan cannot be built or exceeds :data:`MAX_GAIN`)."""
        tables = self.tables(scheme, ts)
        if tables is None:
            return np.full(len(ENSEMBLE), np.inf)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gain = dirac_gain(self.search_diffusion, tables, form=scheme.form)
        except (ValueError, np.linalg.LinAlgError):
            return np.full(len(ENSEMBLE), np.inf)
        if gain > MAX_GAIN:
            return np.full(len(ENSEMBLE), np.inf)
        prefetch_flows(self.search_diffusion, self.problems, ENSEMBLE, float(ts[0]), float(ts[-1]))
        errs = ensemble_errors(tables, self.search_stats, ENSEMBLE, problems=self.problems)
        return np.where(np.isfinite(errs), np.maximum(errs, 1e-300), np.inf)

    def error(self, scheme: Scheme, ts) -> tuple[float, float]:
        r"""``(objective, error)``: :math:`\max_c \log(e_c / e^{paper}_c)` over the members of :data:`ENSEMBLE`
        (:math:`e^{paper}` = :attr:`reference`; without one, :math:`\max_c \log e_c`) and the error on the
        statistics themselves (``c = 1``)."""
        errs = self.member_errors(scheme, ts)
        if not np.all(np.isfinite(errs)):
            return np.inf, np.inf
        logs = np.log(errs) if self.reference is None else np.log(errs) - np.log(self.reference)
        return float(np.max(logs)), float(errs[0])


class _StatsView(DataStatistics):
    """``statistics`` seen by another diffusion object (the mode subset); only the surrogate reads it."""

    def __init__(self, diffusion, statistics: DataStatistics):  # noqa: D107 (no validation: same data)
        self.diffusion, self.event_shape, self.dim = diffusion, statistics.event_shape, statistics.dim
        self.mean, self.dense_cov, self.mode_variances = statistics.mean, statistics.dense_cov, statistics.mode_variances
