"""Sample-quality measures for generative models (VAE, GAN), as pure torch functions.

Both compare a set of generated samples with a set of real ones, in the space the model works in
(preprocessed pixels or table features):

* `frechet_distance`: the Fréchet distance between Gaussians fitted to the two sets, i.e. FID
  computed on the pixels themselves instead of on Inception features (there is no pretrained
  feature extractor offline). 0 for identical statistics; lower is better.
* `diversity`: the mean pairwise distance between generated samples divided by the same for the
  real ones. A generator that collapsed to one image scores 0; the real data scores about 1.

Images with more than `MAX_DIMS` values are average-pooled (2x2 at a time) first, so the
covariance stays small enough to decompose every epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_DIMS = 1024  # above this many values per image, pool 2x2 until below
MAX_SAMPLES = 2048  # sample metrics use at most this many rows of a split (pairwise distances are N^2)


def flatten_for_comparison(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images or (N, F) rows -> (N, D) float64 on the CPU, images pooled to D <= MAX_DIMS."""
    x = x.detach().float()
    if x.dim() == 4:
        while x[0].numel() > MAX_DIMS and min(x.shape[2:]) > 1:
            x = F.avg_pool2d(x, 2, ceil_mode=True)
    return x.reshape(x.shape[0], -1).cpu().double()


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) for a (N, D) and b (M, D).

    The symmetric form of the cross term has the same trace as (S_a S_b)^1/2 and needs only
    eigendecompositions of symmetric matrices. NaN when either set has fewer than 2 rows.
    """
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        return torch.tensor(float("nan"), dtype=torch.float64)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # (D, D)
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (a.mean(0) - b.mean(0)).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return distance.clamp_min(0)


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over all pairs of rows of x (N, D); 0 for fewer than 2 rows."""
    if x.shape[0] < 2:
        return torch.zeros((), dtype=x.dtype)
    return torch.pdist(x).mean()


def diversity(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean pairwise distance of generated rows relative to that of real rows (both (N, D))."""
    return mean_pairwise_distance(generated) / mean_pairwise_distance(real).clamp_min(1e-12)


def sample_quality(generated: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """frechet_distance and diversity of generated samples against real ones (same shapes, model space)."""
    g, r = flatten_for_comparison(generated[:MAX_SAMPLES]), flatten_for_comparison(real[:MAX_SAMPLES])
    return {"frechet_distance": frechet_distance(g, r), "diversity": diversity(g, r)}
