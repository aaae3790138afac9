"""Sample-quality measures: Fréchet distance against its closed form and a scipy reference; diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from damoxing.evaluation.generation import (
    MAX_DIMS,
    diversity,
    flatten_for_comparison,
    frechet_distance,
    sample_quality,
)


def test_frechet_distance_in_one_dimension_is_the_closed_form():
    a = torch.tensor([[0.0], [2.0]])  # mean 1, sample std sqrt(2)
    b = torch.tensor([[3.0], [7.0]])  # mean 5, sample std sqrt(8)
    # (m1 - m2)^2 + (s1 - s2)^2 = 16 + (sqrt(2) - sqrt(8))^2 = 16 + 2
    assert frechet_distance(a, b).item() == pytest.approx(18.0)


def test_frechet_distance_matches_scipy_sqrtm_formula():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    b = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(torch.as_tensor(a), torch.as_tensor(b)).item() == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.as_tensor(a), torch.as_tensor(a)).item() == pytest.approx(0.0, abs=1e-6)


def test_diversity_is_zero_for_a_collapsed_generator_and_one_for_the_real_data():
    real = torch.randn(50, 8)
    assert diversity(real.clone(), real).item() == pytest.approx(1.0)
    assert diversity(real[:1].repeat(50, 1), real).item() == 0.0


def test_large_images_are_pooled_below_the_dimension_cap():
    flat = flatten_for_comparison(torch.rand(3, 3, 64, 64))
    assert flat.shape[1] <= MAX_DIMS and flat.dtype == torch.float64
    quality = sample_quality(torch.rand(10, 3, 40, 40), torch.rand(10, 3, 40, 40))  # 4800 values -> 3 x 10 x 10
    assert set(quality) == {"frechet_distance", "diversity"} and all(torch.isfinite(v) for v in quality.values())
