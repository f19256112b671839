"""ZCA whitening: a symmetric transform that decorrelates the training pixels."""

from __future__ import annotations

import pytest
import torch

from elf_pipeline.engine.zca import fit_zca


@pytest.fixture(scope="module")
def correlated() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=generator)
    return (torch.randn(2000, 12, generator=generator) @ mixing + 3).reshape(2000, 3, 2, 2)


def test_whitened_training_data_has_identity_covariance(correlated) -> None:
    zca = fit_zca(correlated, eps=1e-6)
    white = zca.transform(correlated).reshape(len(correlated), -1).double()
    assert torch.allclose(white.mean(dim=0), torch.zeros(12, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(torch.cov(white.T), torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(zca.matrix, zca.matrix.T, atol=1e-5)  # ZCA (not PCA): the result stays image-like


def test_transform_is_chunk_independent_and_differentiable(correlated) -> None:
    zca = fit_zca(correlated, eps=0.1, chunk=300)
    assert torch.allclose(zca.transform(correlated, chunk=7), zca.transform(correlated), atol=1e-6)
    assert torch.allclose(fit_zca(correlated, eps=0.1).matrix, zca.matrix, atol=1e-6)
    x = correlated[:4].clone().requires_grad_(True)
    zca.transform(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_eps_must_be_positive(correlated) -> None:
    with pytest.raises(ValueError, match="eps"):
        fit_zca(correlated, eps=0)


def test_inverse_undoes_the_transform(correlated):
    zca = fit_zca(correlated, eps=0.1)
    assert torch.allclose(zca.inverse(zca.transform(correlated)), correlated, atol=1e-3)
    assert torch.allclose(zca.inverse_matrix @ zca.matrix, torch.eye(12), atol=1e-4)
