"""Power laws fitted to loss against size, data or compute, with their uncertainty.

Two fits of a loss L against a scale x (parameters N, tokens D or compute C = 6·N·D):

- ``loglog_fit``: a straight line in log-log axes, log L = log a − α · log x (no floor); α's standard
  error from the least-squares covariance.
- ``power_law_fit``: L = a · x^(−α) + c with an irreducible floor c ≥ 0. For each c on a grid below the
  smallest loss, (a, α) is the log-log line through L − c; the c with the least squared error in L wins,
  refined once on a finer grid. The uncertainty is a bootstrap: the fit repeated on points resampled
  with replacement (a fixed seed), its spread reported as a standard deviation and a 95% interval
  (NaN with fewer than four points: three parameters pass through three points exactly).

``bundled_study()`` reads the committed study (``assets/scaling/``, made by
``python -m explorer.training.scaling``); ``frontier`` picks the points a fit runs through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from explorer.core.errors import InputError

SCALING_DIR = Path(__file__).resolve().parents[3] / "assets" / "scaling"
AXES = {"parameters": "non_embedding_parameters", "tokens": "tokens", "compute": "compute"}


@dataclass(frozen=True)
class PowerLawFit:
    """L = a · x^(−α) + c (c = 0 for a log-log fit), with standard deviations and 95% intervals."""

    a: float
    alpha: float
    c: float
    alpha_sd: float
    c_sd: float
    alpha_interval: tuple[float, float]
    c_interval: tuple[float, float]
    n_points: int
    method: str  # "loglog" or "floor + bootstrap"

    def predict(self, x) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** (-self.alpha) + self.c

    def describe(self) -> str:
        floor = f" + {self.c:.2f} ± {self.c_sd:.2f}" if self.method != "loglog" else ""
        return f"L = {self.a:.3g} · x^(−{self.alpha:.3f} ± {self.alpha_sd:.3f}){floor}  ({self.n_points} points)"


def _check(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise InputError(f"The scales and losses differ in number ({x.size} and {y.size}).")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[keep]).size < 3:
        raise InputError("A power law needs at least three points at different scales with positive losses.")
    return x[keep], y[keep]


def _line(log_x: np.ndarray, log_y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(intercept, slope, 2×2 covariance) of the least-squares line log_y = b0 + b1 · log_x."""
    design = np.stack([np.ones_like(log_x), log_x], axis=1)  # (n, 2)
    coef, *_ = np.linalg.lstsq(design, log_y, rcond=None)
    residual = log_y - design @ coef
    dof = max(1, len(log_x) - 2)
    cov = np.linalg.inv(design.T @ design) * (residual @ residual) / dof
    return float(coef[0]), float(coef[1]), cov


def loglog_fit(x, y) -> PowerLawFit:
    """log L = log a − α · log x by least squares; α's standard error from the fit's covariance."""
    x, y = _check(x, y)
    b0, b1, cov = _line(np.log(x), np.log(y))
    sd = float(np.sqrt(cov[1, 1]))
    alpha = -b1
    return PowerLawFit(
        float(np.exp(b0)), alpha, 0.0, sd, 0.0, (alpha - 1.96 * sd, alpha + 1.96 * sd), (0.0, 0.0), len(x), "loglog"
    )


def _floor_fit(x: np.ndarray, y: np.ndarray, grid: int = 60) -> tuple[float, float, float]:
    """(a, α, c) of L = a · x^(−α) + c: c searched on a grid in [0, min L), (a, α) from the log-log line."""
    log_x = np.log(x)

    def sse(c: float) -> tuple[float, float, float]:
        b0, b1, _ = _line(log_x, np.log(y - c))
        a, alpha = np.exp(b0), -b1
        return float(((a * x**-alpha + c - y) ** 2).sum()), float(a), float(alpha)

    top = float(y.min()) * (1 - 1e-6)
    candidates = np.linspace(0.0, top, grid, endpoint=False)
    best = min(candidates, key=lambda c: sse(c)[0])
    step = top / grid
    fine = np.clip(np.linspace(best - step, best + step, grid), 0.0, top * (1 - 1e-9))
    c = float(min(fine, key=lambda c: sse(c)[0]))
    _, a, alpha = sse(c)
    return a, alpha, c


def power_law_fit(x, y, n_boot: int = 200, seed: int = 0) -> PowerLawFit:
    """L = a · x^(−α) + c (c ≥ 0) with bootstrap standard deviations and 95% intervals of α and c."""
    x, y = _check(x, y)
    a, alpha, c = _floor_fit(x, y)
    rng = np.random.default_rng(seed)
    alphas, floors = [], []
    for _ in range(n_boot):
        pick = rng.integers(0, len(x), len(x))
        if np.unique(x[pick]).size < 3:
            continue
        _, boot_alpha, boot_c = _floor_fit(x[pick], y[pick], grid=30)
        alphas.append(boot_alpha)
        floors.append(boot_c)
    alphas, floors = np.array(alphas), np.array(floors)
    if len(x) < 4 or len(alphas) < 10:  # three parameters through three points: no spread to measure
        alphas = floors = np.full(2, np.nan)
    return PowerLawFit(
        a, alpha, c, float(alphas.std()), float(floors.std()),
        tuple(float(v) for v in np.percentile(alphas, [2.5, 97.5])),
        tuple(float(v) for v in np.percentile(floors, [2.5, 97.5])),
        len(x), "floor + bootstrap",
    )  # fmt: skip


@dataclass(frozen=True)
class ScalingStudy:
    """The committed study's runs as columns (one entry per run) and its recipe."""

    recipe: dict
    about: str
    non_embedding_parameters: np.ndarray
    tokens: np.ndarray
    compute: np.ndarray
    held_out_loss: np.ndarray
    curves: list[dict]  # per run: {"tokens": [...], "held_out_loss": [...]}

    def axis(self, name: str) -> np.ndarray:
        """``parameters``, ``tokens`` or ``compute`` as an array."""
        if name not in AXES:
            raise InputError(f"The scale must be one of {', '.join(AXES)}, not {name!r:.30}.")
        return getattr(self, AXES[name])


def study_from_dict(data: dict) -> ScalingStudy:
    runs = data["runs"]
    column = lambda k: np.array([r[k] for r in runs], dtype=float)  # noqa: E731
    return ScalingStudy(
        data["recipe"], data.get("about", ""), column("non_embedding_parameters"), column("tokens"),
        column("compute"), column("held_out_loss"), [r.get("curve", {}) for r in runs],
    )  # fmt: skip


@cache
def bundled_study(name: str = "next_token") -> ScalingStudy:
    """The study in ``assets/scaling/<name>.json``."""
    path = SCALING_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError(f"No scaling study named {name!r:.30} is bundled.")
    return study_from_dict(json.loads(path.read_text(encoding="utf-8")))


def frontier(study: ScalingStudy, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """The points a fit against ``axis`` runs through: against parameters, each size at its largest
    budget; against tokens, each budget at the largest size; against compute, the lowest loss reached
    at or below each run's compute (the compute-efficient frontier). Returns (x, loss), x ascending."""
    x = study.axis(axis)
    loss = study.held_out_loss
    if axis == "parameters":
        pick = study.tokens == study.tokens.max()
    elif axis == "tokens":
        pick = study.non_embedding_parameters == study.non_embedding_parameters.max()
    else:
        order = np.argsort(x)
        best = np.minimum.accumulate(loss[order])
        pick = np.zeros_like(loss, dtype=bool)
        pick[order[np.r_[True, best[1:] < best[:-1]]]] = True
    order = np.argsort(x[pick])
    return x[pick][order], loss[pick][order]
