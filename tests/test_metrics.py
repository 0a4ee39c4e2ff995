"""Calibration: the temperature is recovered, and the cross-fitted ECE is measured on images it was not fitted on."""

import numpy as np

from brisc.metrics import cross_fitted_ece, expected_calibration_error, fit_temperature, softmax


def _overconfident(n=4000, k=4, factor=3.0, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.7), size=n)  # the true class probabilities
    y = np.array([rng.choice(k, p=row) for row in p])
    return factor * np.log(p), y  # logits whose softmax is p**3, renormalised: overconfident


def test_temperature_undoes_overconfidence_and_cross_fitting_stays_honest():
    logits, y = _overconfident()
    t = fit_temperature(logits, y)
    assert 2.6 < t < 3.4  # the factor the logits were sharpened by
    raw = expected_calibration_error(softmax(logits), y)
    fitted = expected_calibration_error(softmax(logits, t), y)
    crossed = cross_fitted_ece(logits, y)
    assert raw > 0.1 and fitted < 0.03 and crossed < 0.04  # calibrated, also on the half it was not fitted on
    assert crossed == cross_fitted_ece(logits, y)  # seeded halves
