"""Group-sequential boundaries: alpha-spending functions and the exact recursive integration of the
crossing probabilities of a standardized statistic observed at several looks.

Model (Jennison & Turnbull 2000, section 3.1 and chapter 19): at looks with information fractions
0 < t_1 < ... < t_K = 1 the standardized statistics Z_1, ..., Z_K are jointly normal with
Cov(Z_j, Z_k) = sqrt(t_j / t_k) (the canonical joint distribution: S_k = Z_k sqrt(t_k) is a Brownian
motion observed at the t_k). Under the null, the two-sided symmetric boundary c_k at look k is chosen
so that the probability of first crossing (|Z_k| >= c_k, |Z_j| < c_j for j < k) equals the alpha the
spending function releases at t_k (Lan & DeMets 1983). The crossing probabilities are computed by the
recursion of Armitage, McPherson & Rowe (1969): the sub-density of Z_k on the paths that have not
crossed is carried from look to look by a normal convolution, integrated with Simpson's rule; the
convolution sums only the band of grid points the kernel reaches, and many designs (the levels of the
repeated p-value table) are integrated together as rows of one array, so a 91-look design with its
table costs well under a second.

* :func:`spending` — cumulative alpha spent at t: Lan-DeMets O'Brien-Fleming type, Pocock type, or
  Hwang-Shih-DeCani with parameter gamma;
* :func:`boundaries` — the critical values c_k of a design (cached per times, alpha, spending, gamma);
* :func:`crossing_probability` — P(some |Z_k| >= c_k) under the null, for any boundaries;
* :func:`repeated_p` — the repeated p-value of a path of statistics: the smallest level at which the
  design of that level would have stopped by now (Jennison & Turnbull 2000, section 9.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import special

from expkit.core.errors import InputError

Spending = Literal["obrien-fleming", "pocock", "hsd"]
SPENDING_FUNCTIONS: tuple[Spending, ...] = ("obrien-fleming", "pocock", "hsd")

#: Grid on the continuation region of each look, Simpson's rule: spacing at most _STEP times the
#: standard deviation, in units of Z_k, of the normal kernels into and out of the look (and at most
#: _STEP_MAX); the region is cut at +-_Z_MAX, beyond which the standard normal has mass below 1e-15,
#: and a kernel at _KERNEL_SD standard deviations (mass beyond it 8e-11 of the kernel's; the boundaries
#: agree with a dense integration on a grid of quarter kernel sds to 5e-5, docs/statistics.md).
_STEP, _STEP_MAX, _GRID_MIN = 0.4, 0.1, 31
_Z_MAX = 8.5
_KERNEL_SD = 6.5
#: Levels at which the boundaries are tabulated for repeated p-values (log-spaced); a repeated
#: p-value above the top level is reported as 1.
_LEVEL_LOW, _LEVEL_HIGH, _LEVELS = 1e-10, 0.9, 73


def spending(t: float, alpha: float, kind: Spending, gamma: float = -4.0) -> float:
    """Cumulative two-sided alpha spent at information fraction ``t`` (0 < t <= 1), alpha/2 per side:
    O'Brien-Fleming type 2 (2 - 2 Phi(z_{1-alpha/4} / sqrt(t))), Pocock type alpha ln(1 + (e - 1) t)
    (Lan & DeMets 1983; Kim & DeMets 1987), or Hwang-Shih-DeCani alpha (1 - e^(-gamma t)) /
    (1 - e^(-gamma)), alpha t for gamma = 0 (Hwang, Shih & DeCani 1990; ``gamma`` used by ``hsd``
    only, default -4 as gsDesign's: -4 is close to O'Brien-Fleming, 1 close to Pocock; the adaptive
    design's default is :class:`expkit.adaptive.sequential.SequentialConfig`'s); the per-side convention of R's gsDesign
    (``sfLDOF``, ``sfLDPocock``, ``sfHSD``) and ldbounds."""
    return float(_spent(float(t), np.array([float(alpha)]), kind, gamma)[0])


def _spent(t: float, alpha: np.ndarray, kind: Spending, gamma: float) -> np.ndarray:
    """:func:`spending` at one ``t`` for several levels."""
    t = min(max(t, 0.0), 1.0)
    if t <= 0.0:
        return np.zeros_like(alpha)
    if kind == "obrien-fleming":  # per side alpha/2: 2 - 2 Phi(z_{1-alpha/4} / sqrt(t)), as gsDesign's sfLDOF
        return np.asarray(4.0 * special.ndtr(-special.ndtri(1.0 - alpha / 4.0) / math.sqrt(t)))
    if kind == "pocock":
        return alpha * math.log1p((math.e - 1.0) * t)
    if kind == "hsd":
        if not math.isfinite(gamma) or abs(gamma) > 40.0:
            raise InputError(f"adaptive.gamma: {gamma!r} must be a number between -40 and 40, e.g. -4")
        if gamma == 0.0:
            return alpha * t
        return alpha * (math.expm1(-gamma * t) / math.expm1(-gamma))
    raise InputError(
        f"adaptive.spending: unknown spending function {kind!r}; use one of {', '.join(SPENDING_FUNCTIONS)}"
    )


class _Recursion:
    """The sub-densities of Z_k on the paths that have not crossed, for a batch of designs (rows)
    observed at the same information fractions, carried from look to look.

    Row r lives on an odd grid of ``size[r]`` points spanning its continuation region (-c, c) (padded
    with zero mass to a common width); the density at the new look is the normal convolution of the
    old one, evaluated only over the band of old points within _KERNEL_SD kernel standard deviations
    of each new point (the kernel is narrow when looks are close), so a look costs rows x points x
    band instead of rows x points^2."""

    def __init__(self, rows: int) -> None:
        self.t_prev = 0.0
        self.x = np.zeros((rows, 0))
        self.lo = np.zeros(rows)  # first grid point of each row
        self.h = np.ones(rows)  # grid spacing of each row
        self.mass = np.zeros((rows, 0))  # density x Simpson weight at the grid points of the last look

    def exceed(self, t: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(no crossing before this look and |Z| >= c at it) per row, and its derivative in c."""
        if self.t_prev == 0.0:
            return 2.0 * special.ndtr(-c), -2.0 * _pdf(c)
        sd = math.sqrt(t - self.t_prev)
        shift = self.x * math.sqrt(self.t_prev)
        root = (c * math.sqrt(t))[:, None]
        # the grid and the sub-density are symmetric about 0 (symmetric boundaries, null drift), so the
        # upper tail's sum equals the lower tail's: P(|Z| >= c) = 2 P(Z <= -c)
        lower = (-root - shift) / sd
        value = 2.0 * np.sum(self.mass * special.ndtr(lower), axis=1)
        slope = -2.0 * math.sqrt(t) / sd * np.sum(self.mass * _pdf(lower), axis=1)
        return value, slope

    def advance(self, t: float, c: np.ndarray, t_next: float | None) -> None:
        """Move to the look at ``t`` with boundaries ``c`` (inf: no stopping): keep the density inside
        (-c, c). ``t_next``: the next look's fraction, whose kernel the new grid must also resolve."""
        half = np.minimum(c, _Z_MAX)
        kernel_sd = math.sqrt((t - self.t_prev) / t)  # in units of Z_k: of the step into this look
        if t_next is not None:
            kernel_sd = min(kernel_sd, math.sqrt((t_next - t) / t))
        step = min(_STEP * kernel_sd, _STEP_MAX)
        size = np.maximum(_GRID_MIN, 2 * np.ceil(half / step).astype(int) + 1)
        width = int(size.max())
        h = 2.0 * half / (size - 1)
        j = np.arange(width)
        x = -half[:, None] + h[:, None] * j[None, :]
        inside = j[None, :] < size[:, None]
        w = np.where(j % 2 == 1, 4.0, 2.0)[None, :] * np.ones_like(x)
        w[:, 0] = 1.0
        w[np.arange(len(size)), size - 1] = 1.0
        w = np.where(inside, w * h[:, None] / 3.0, 0.0)
        x = np.where(inside, x, half[:, None])
        if self.t_prev == 0.0:
            density = _pdf(x)
        else:
            density = self._convolve(x, t)
        self.t_prev, self.x, self.lo, self.h, self.mass = t, x, -half, h, density * w

    def _convolve(self, x: np.ndarray, t: float) -> np.ndarray:
        """Density of Z at ``t`` at the points ``x`` (rows x points) on the paths not crossed so far.

        Old point j = first + b of a row lies at lo + h j, so the kernel's argument at new point x is
        a - b d with a the argument at the first old point of the band and d = h sqrt(t_prev) / sd:
        exp(-(a - b d)^2 / 2) = exp(-a^2 / 2) (e^(a d))^b e^(-b^2 d^2 / 2), summed over the band by
        Horner's rule (one exp per point instead of one per point and band)."""
        sd, root_prev = math.sqrt(t - self.t_prev), math.sqrt(self.t_prev)
        old = self.mass.shape[1]
        d = self.h * root_prev / sd  # kernel argument per old grid step, per row
        reach = _KERNEL_SD / d
        band = int(min(old, 2 * math.ceil(float(reach.max())) + 2))
        centre = (x * math.sqrt(t) / root_prev - self.lo[:, None]) / self.h[:, None]
        first = np.clip(np.floor(centre - reach[:, None]).astype(int), 0, old - band)
        # |a| <= 30: beyond, every term of the band is below e^-100 (the band spans <= 15 kernel sds)
        a = np.clip((x * math.sqrt(t) - (self.lo[:, None] + self.h[:, None] * first) * root_prev) / sd, -30.0, 30.0)
        power = np.exp(a * d[:, None])
        total, rows = np.zeros_like(x), np.arange(x.shape[0])[:, None]
        weights = np.exp(-0.5 * (np.arange(band)[:, None] * d[None, :]) ** 2)[:, :, None]
        for b in range(band - 1, -1, -1):
            total = total * power + self.mass[rows, first + b] * weights[b]
        return np.asarray(total * np.exp(-0.5 * a * a) * (math.sqrt(t) / (sd * math.sqrt(2 * math.pi))))


def _pdf(z: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


def _check_times(times: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in times)
    if not out or any(not 0.0 < t <= 1.0 for t in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise InputError(f"adaptive: information fractions {out} must increase strictly inside (0, 1]; check the looks")
    return out


def crossing_probability(times: Sequence[float], bounds: Sequence[float]) -> float:
    """P(|Z_k| >= bounds[k] for some look k) under the null, for the canonical joint distribution at
    information fractions ``times`` (``math.inf``: no stopping at that look)."""
    ts = _check_times(times)
    rec, total = _Recursion(1), 0.0
    for k, (t, c) in enumerate(zip(ts, bounds)):
        row = np.array([float(c)])
        if math.isfinite(c):
            total += float(rec.exceed(t, row)[0][0])
        rec.advance(t, row, ts[k + 1] if k + 1 < len(ts) else None)
    return total


def _solve(rec: _Recursion, t: float, target: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Per row, the c with rec.exceed(t, c) = target: Newton's method on log exceed (nearly quadratic
    in c for a normal tail) from ``guess`` (the last look's boundaries), safeguarded by bisection on
    [0, 60]; inf where nothing is to be spent."""
    out = np.full(target.shape, math.inf)
    live = target > 1e-300
    if not live.any():
        return out
    goal = np.log(target[live])
    lo, hi = np.zeros(goal.shape), np.full(goal.shape, 60.0)
    start = np.where(np.isfinite(guess), guess, -special.ndtri(target / 2.0))[live]
    c = np.clip(start, 0.5, 59.0)
    sub = _Subset(rec, live)
    for _ in range(100):
        value, slope = sub.exceed(t, c)
        g = np.log(np.maximum(value, 1e-320)) - goal
        lo, hi = np.where(g > 0, c, lo), np.where(g > 0, hi, c)
        newton = c - g * value / np.where(slope < 0, slope, -1e-300)
        step = np.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
        done = (np.abs(step - c) < 1e-11) | (np.abs(g) < 1e-13)
        c = step
        if done.all():
            break
    out[live] = c
    return out


class _Subset:
    """The rows ``live`` of a recursion, for :meth:`_Recursion.exceed`."""

    def __init__(self, rec: _Recursion, live: np.ndarray) -> None:
        self.view = _Recursion(int(live.sum()))
        self.view.t_prev, self.view.x, self.view.mass = rec.t_prev, rec.x[live], rec.mass[live]

    def exceed(self, t: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_Recursion.exceed` on the rows kept."""
        return self.view.exceed(t, c)


def _design_table(times: tuple[float, ...], alphas: np.ndarray, kind: Spending, gamma: float) -> np.ndarray:
    """Boundaries (levels x looks) of the designs at the levels ``alphas``, all at once."""
    rec = _Recursion(len(alphas))
    spent = np.zeros(len(alphas))
    out = np.empty((len(alphas), len(times)))
    for k, t in enumerate(times):
        target = _spent(t, alphas, kind, gamma) - spent
        c = _solve(rec, t, target, out[:, k - 1] if k else np.full(len(alphas), np.inf))
        finite = np.isfinite(c)
        spent[finite] += target[finite]  # solved to 1e-13 relative
        rec.advance(t, c, times[k + 1] if k + 1 < len(times) else None)
        out[:, k] = c
    return out


def _gamma_key(kind: Spending, gamma: float) -> float:
    return float(gamma) if kind == "hsd" else 0.0


@functools.lru_cache(maxsize=256)
def _boundaries(times: tuple[float, ...], alpha: float, kind: Spending, gamma: float) -> tuple[float, ...]:
    return tuple(float(c) for c in _design_table(times, np.array([alpha]), kind, gamma)[0])


def boundaries(
    times: Sequence[float], alpha: float, kind: Spending = "obrien-fleming", gamma: float = -4.0
) -> tuple[float, ...]:
    """Two-sided critical values c_k for |Z_k| at information fractions ``times`` so that the first
    crossing at look k has null probability spending(t_k) - spending(t_{k-1}) (cached per design;
    ``gamma``: the Hwang-Shih-DeCani parameter, for ``kind='hsd'`` only)."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"adaptive.alpha: {alpha} must lie strictly between 0 and 1, e.g. 0.05")
    _spent(1.0, np.array([alpha]), kind, gamma)  # checks kind and gamma
    return _boundaries(_check_times(times), float(alpha), kind, _gamma_key(kind, gamma))


@functools.lru_cache(maxsize=64)
def _level_table(times: tuple[float, ...], kind: Spending, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """log-levels (L,) increasing and boundaries (L, K) at those levels, computed together."""
    levels = np.geomspace(_LEVEL_LOW, _LEVEL_HIGH, _LEVELS)
    return np.log(levels), _design_table(times, levels, kind, gamma)


def repeated_p(
    times: Sequence[float], looks: Sequence[int], z: Sequence[float], kind: Spending, gamma: float = -4.0
) -> float:
    """Repeated p-value of the statistics ``z`` observed at the looks with indices ``looks`` of the
    design with information fractions ``times``: the smallest level at which the two-sided design of
    that level would have crossed at one of those looks. For any stopping rule, P(repeated p <= u)
    <= u under the null, so it can be compared with any level or adjusted for multiplicity.
    Values above 0.9 are given as 1; below 1e-10 as 1e-10."""
    ts = _check_times(times)
    _spent(1.0, np.array([0.05]), kind, gamma)  # checks kind and gamma
    log_levels, table = _level_table(ts, kind, _gamma_key(kind, gamma))
    best = 1.0
    for k, value in zip(looks, z):
        if not math.isfinite(value):
            continue
        column = table[:, k]  # decreasing in the level
        if abs(value) < column[-1]:
            continue
        # log level against the squared boundary (increasing when reversed): log level is convex in c^2
        # (about -c^2/2 - log c), so the chord lies above it and the interpolated p-value is conservative
        level = float(np.exp(np.interp(value * value, column[::-1] ** 2, log_levels[::-1])))
        best = min(best, level)
    return best
