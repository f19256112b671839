"""ZCA whitening of images, as MTT applies it (kornia's ``ZCAWhitening(eps=0.1)``) to CIFAR.

Fit on the normalised training images, then apply the same transform to real, synthetic and test
images: ``x_white = (x - mean) @ W`` with ``W = U diag(1 / sqrt(S + eps)) U^T`` from the
eigendecomposition ``cov = U diag(S) U^T`` of the (unbiased) pixel covariance.  The transform is a
pure function of the training split and ``eps``, so any stage can refit it from ``data.h5``
instead of storing a D x D matrix (37 MiB for 3x32x32) next to every artifact.

A synthetic set distilled in whitened space (MTT from ZCA experts) carries ``zca_eps`` in its
attrs.  Every later stage keeps the spaces consistent: students train on the whitened synthetic
images and are tested on test images whitened by the same transform; a teacher trained on
un-whitened real images sees the synthetic (or augmented) images mapped back through the exact
inverse, ``x = x_white @ W^-1 + mean`` (``eps > 0`` makes ``W`` invertible).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from elf_pipeline.infra.errors import InputError

DEFAULT_EPS = 0.1  # kornia's / MTT's value


@dataclass(frozen=True)
class ZCA:
    mean: torch.Tensor    # (D,) float32
    matrix: torch.Tensor  # (D, D) float32, symmetric
    eps: float
    inverse_matrix: torch.Tensor | None = None  # (D, D) float32: U diag(sqrt(S + eps)) U^T

    def transform(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Whiten NCHW images (any leading count) chunk by chunk; differentiable in ``images``."""
        return _affine(images, self.matrix, -self.mean, 0, chunk)

    def inverse(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Map whitened NCHW images back to the normalised pixel space: ``inverse(transform(x)) == x``."""
        if self.inverse_matrix is None:
            raise InputError("this ZCA transform was built without its inverse")
        return _affine(images, self.inverse_matrix, 0, self.mean, chunk)


def _affine(images: torch.Tensor, matrix: torch.Tensor, before: torch.Tensor | float, after: torch.Tensor | float,
            chunk: int) -> torch.Tensor:
    """``(x + before) @ matrix + after`` per flattened image, ``chunk`` images at a time."""
    shape = images.shape
    matrix = matrix.to(images.device)
    before, after = (v.to(images.device) if isinstance(v, torch.Tensor) else v for v in (before, after))
    out = [(part + before) @ matrix + after for part in images.reshape(shape[0], -1).split(chunk)]
    return torch.cat(out).reshape(shape) if out else images.clone()


def fit_zca(images: torch.Tensor, eps: float = DEFAULT_EPS, chunk: int = 4096) -> ZCA:
    """Fit the whitening transform on NCHW training images (covariance accumulated in float64, in
    chunks, so the training set is never copied as a whole)."""
    if eps <= 0:
        raise InputError(f"zca eps must be > 0, got {eps}")
    n = images.shape[0]
    if n < 2:
        raise InputError("zca needs at least two training images")
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
    inverse = (eigenvectors / scale) @ eigenvectors.T
    return ZCA(mean.float(), matrix.float(), float(eps), inverse.float())


def fit_zca_to_data(data: str | os.PathLike, eps: float) -> ZCA:
    """The transform a ZCA stage used: refit on the normalised training split of ``data.h5``."""
    from elf_pipeline.artifacts.data_file import load_split

    images, _, _ = load_split(data, "train")
    return fit_zca(images, eps)

