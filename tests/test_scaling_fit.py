"""Power-law fits (analysis/pretraining/scaling): known exponents recovered from synthetic data, and the
bundled scaling study read and fitted."""

import numpy as np
import pytest

from explorer.analysis.pretraining.scaling import (
    bundled_study,
    frontier,
    loglog_fit,
    power_law_fit,
)
from explorer.core.errors import InputError


@pytest.mark.parametrize("alpha", [0.076, 0.3, 0.7])
def test_loglog_fit_recovers_a_known_exponent(alpha):
    x = np.logspace(4, 9, 9)
    rng = np.random.default_rng(0)
    y = 7.0 * x**-alpha * np.exp(rng.normal(0, 0.01, x.size))
    fit = loglog_fit(x, y)
    assert fit.alpha == pytest.approx(alpha, abs=3 * fit.alpha_sd + 1e-3)
    assert fit.alpha_interval[0] < alpha < fit.alpha_interval[1]
    assert fit.alpha_sd < 0.01


@pytest.mark.parametrize(("alpha", "floor"), [(0.34, 1.69), (0.5, 0.0), (0.2, 3.0)])
def test_power_law_with_a_floor_recovers_exponent_and_floor(alpha, floor):
    x = np.logspace(3, 8, 10)
    rng = np.random.default_rng(1)
    y = (40.0 * x**-alpha + floor) * np.exp(rng.normal(0, 0.003, x.size))
    fit = power_law_fit(x, y, n_boot=60)
    assert fit.alpha == pytest.approx(alpha, rel=0.1)
    assert fit.c == pytest.approx(floor, abs=0.1)
    assert fit.alpha_interval[0] - 0.02 < alpha < fit.alpha_interval[1] + 0.02
    assert np.allclose(fit.predict(x), y, rtol=0.02)


def test_noise_widens_the_uncertainty():
    x = np.logspace(3, 8, 10)
    rng = np.random.default_rng(2)
    clean = 40.0 * x**-0.3 + 2.0
    quiet = power_law_fit(x, clean * np.exp(rng.normal(0, 0.001, x.size)), n_boot=60)
    noisy = power_law_fit(x, clean * np.exp(rng.normal(0, 0.03, x.size)), n_boot=60)
    assert noisy.alpha_sd > quiet.alpha_sd


def test_a_fit_needs_three_scales():
    with pytest.raises(InputError):
        loglog_fit([1, 1, 2], [3, 2, 1])
    with pytest.raises(InputError):
        power_law_fit([1, 2], [3, 2])


def test_the_bundled_study_has_several_sizes_and_budgets_and_fits():
    study = bundled_study()
    assert np.unique(study.non_embedding_parameters).size >= 4 and np.unique(study.tokens).size >= 2
    assert np.allclose(study.compute, 6 * study.non_embedding_parameters * study.tokens)
    for axis in ("parameters", "tokens", "compute"):
        x, loss = frontier(study, axis)
        assert np.all(np.diff(x) > 0) and len(x) >= 3
        fit = loglog_fit(x, loss)
        assert fit.alpha > 0  # more of anything lowers the held-out loss
    with pytest.raises(InputError):
        study.axis("epochs")


def test_three_points_give_no_uncertainty_rather_than_a_false_zero():
    fit = power_law_fit([1e3, 1e4, 1e5], [5.0, 4.0, 3.5], n_boot=30)
    assert np.isnan(fit.alpha_sd) and np.isnan(fit.alpha_interval[0])
