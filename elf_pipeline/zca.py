"""ZCA whitening of images, as MTT applies it (kornia's ``ZCAWhitening(eps=0.1)``) to CIFAR.

Fit on the normalised training images, then apply the same transform to real, synthetic and test
images: ``x_white = (x - mean) @ W`` with ``W = U diag(1 / sqrt(S + eps)) U^T`` from the
eigendecomposition ``cov = U diag(S) U^T`` of the (unbiased) pixel covariance.  The transform is a
pure function of the training split and ``eps``, so any stage can refit it from ``data.h5``
instead of storing a D x D matrix (37 MiB for 3x32x32) next to every artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_EPS = 0.1  # kornia's / MTT's value


@dataclass(frozen=True)
class ZCA:
    mean: torch.Tensor    # (D,) float32
    matrix: torch.Tensor  # (D, D) float32, symmetric
    eps: float

    def transform(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Whiten NCHW images (any leading count) chunk by chunk; differentiable in ``images``."""
        shape = images.shape
        flat = images.reshape(shape[0], -1)
        mean, matrix = self.mean.to(images.device), self.matrix.to(images.device)
        out = [(part - mean) @ matrix for part in flat.split(chunk)]
        return torch.cat(out).reshape(shape) if out else images.clone()


def fit_zca(images: torch.Tensor, eps: float = DEFAULT_EPS, chunk: int = 4096) -> ZCA:
    """Fit the whitening transform on NCHW training images (covariance accumulated in float64, in
    chunks, so the training set is never copied as a whole)."""
    if eps <= 0:
        raise ValueError(f"zca eps must be > 0, got {eps}")
    n = images.shape[0]
    if n < 2:
        raise ValueError("zca needs at least two training images")
    flat = images.reshape(n, -1)
    mean = flat.sum(dim=0, dtype=torch.float64) / n
    cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
    for part in flat.split(chunk):
        centred = part.double() - mean
        cov += centred.T @ centred
    cov /= n - 1
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    scale = (eigenvalues.clamp_min(0) + eps).rsqrt()
    matrix = (eigenvectors * scale) @ eigenvectors.T
    return ZCA(mean.float(), matrix.float(), float(eps))
