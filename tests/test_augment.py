import math

import pytest
import torch

from elf_pipeline.engine.augment import (
    DEFAULT_STRATEGY,
    FAMILIES,
    DSAConfig,
    DSAParams,
    apply,
    dsa,
    dsa_config,
    sample_params,
)


def _batch(n=4, c=3, size=12, seed=0, grad=False):
    x = torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(grad)


def test_default_strategy_covers_every_family():
    assert DSAConfig().families == list(FAMILIES)
    assert DEFAULT_STRATEGY.split("_") == list(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_dsa_keeps_shape_and_is_differentiable(family):
    config = DSAConfig(strategy=family)
    x = _batch(grad=True)
    out = dsa(x, config, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    (out * weights).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_params_draws_the_family_with_per_sample_values(family):
    params = sample_params(DSAConfig(strategy=family), 5, 12, 12, torch.Generator().manual_seed(0))
    assert params.family == family
    for key, value in params.values.items():
        if key != "size":
            assert value.shape == (5,), key
    shared = sample_params(DSAConfig(strategy=family), 5, 12, 12, torch.Generator().manual_seed(0), shared=True)
    for key, value in shared.values.items():
        if key != "size":
            assert value.shape == (1,), key


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_params_apply_the_same_transformation_to_both_batches(family):
    """Siamese: one draw applied to a real and a synthetic batch transforms a common image identically."""
    config = DSAConfig(strategy=family)
    for seed in range(4):
        params = sample_params(config, 1, 12, 12, torch.Generator().manual_seed(seed), shared=True)
        common = _batch(n=1, seed=100)
        real = torch.cat([common, _batch(n=5, seed=101)])
        syn = torch.cat([common, _batch(n=2, seed=102) * 3])
        out_real, out_syn = apply(real, params), apply(syn, params)
        assert torch.equal(out_real[0], out_syn[0])
        # and every sample of a batch gets the same transformation
        copies = apply(common.expand(3, -1, -1, -1).contiguous(), params)
        assert torch.equal(copies[0], copies[1]) and torch.equal(copies[1], copies[2])
        assert torch.equal(copies[0], out_real[0])


def test_same_seed_same_output_and_other_seed_differs():
    x = _batch(n=6)
    config = DSAConfig()
    gen = torch.Generator().manual_seed(7)
    first = [dsa(x, config, gen) for _ in range(5)]
    gen = torch.Generator().manual_seed(7)
    second = [dsa(x, config, gen) for _ in range(5)]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(8)
    third = [dsa(x, config, gen) for _ in range(5)]
    assert any(not torch.equal(a, c) for a, c in zip(first, third, strict=True))


def test_flip_probability_extremes():
    x = _batch()
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(dsa(x, DSAConfig(strategy="flip", flip_prob=1.0), gen), x.flip(3))
    assert torch.equal(dsa(x, DSAConfig(strategy="flip", flip_prob=0.0), gen), x)


def test_crop_shift_moves_pixels_and_fills_zeros():
    x = _batch(n=2, size=6)
    params = DSAParams("crop", {"dy": torch.tensor([1, 0]), "dx": torch.tensor([0, -2])})
    out = apply(x, params)
    # sample 0: row i comes from row i + 1, last row falls outside -> zero
    assert torch.equal(out[0, :, :5], x[0, :, 1:])
    assert (out[0, :, 5] == 0).all()
    # sample 1: column j comes from column j - 2, first two columns are zero
    assert torch.equal(out[1, :, :, 2:], x[1, :, :, :4])
    assert (out[1, :, :, :2] == 0).all()
    assert torch.equal(apply(x, DSAParams("crop", {"dy": torch.tensor([0]), "dx": torch.tensor([0])})), x)


def test_cutout_zeroes_a_square_of_the_configured_size():
    x = torch.ones(1, 2, 8, 8)
    params = DSAParams("cutout", {"cy": torch.tensor([4]), "cx": torch.tensor([4]), "size": torch.tensor([4, 4])})
    out = apply(x, params)
    assert (out[0, :, 2:6, 2:6] == 0).all()
    assert int((out == 0).sum()) == 2 * 16
    sampled = sample_params(DSAConfig(strategy="cutout", cutout=0.5), 3, 8, 8, torch.Generator().manual_seed(0))
    assert sampled.values["size"].tolist() == [4, 4]


def test_identity_parameters_leave_images_unchanged():
    x = _batch(n=2)
    one = torch.ones(2)
    assert torch.allclose(apply(x, DSAParams("scale", {"sx": one, "sy": one})), x, atol=1e-5)
    assert torch.allclose(apply(x, DSAParams("rotate", {"theta": torch.zeros(2)})), x, atol=1e-5)
    color = DSAParams("color", {"brightness": torch.zeros(2), "saturation": one, "contrast": one})
    assert torch.allclose(apply(x, color), x, atol=1e-5)


def test_color_brightness_adds_offset():
    x = _batch(n=2)
    params = DSAParams("color", {"brightness": torch.tensor([0.25, -0.5]), "saturation": torch.ones(2),
                                 "contrast": torch.ones(2)})
    out = apply(x, params)
    assert torch.allclose(out[0], x[0] + 0.25, atol=1e-5)
    assert torch.allclose(out[1], x[1] - 0.5, atol=1e-5)


def test_rotate_quarter_turn_of_symmetric_grid():
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    out = apply(x, DSAParams("rotate", {"theta": torch.tensor([math.pi / 2])}))
    # a quarter turn maps the pixel grid onto itself: same multiset of values, not the identity
    assert torch.allclose(out.flatten().sort().values, x.flatten().sort().values, atol=1e-4)
    assert not torch.allclose(out, x, atol=1e-3)


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown DSA family 'blur'.*color"):
        sample_params(DSAConfig(strategy="blur"), 2, 8, 8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unknown DSA family"):
        apply(_batch(), DSAParams("blur", {}))


def test_dsa_config_from_blocks():
    assert dsa_config(None) is None
    assert dsa_config(False) is None
    assert dsa_config({}) is None
    assert dsa_config(True) == DSAConfig()
    custom = dsa_config({"strategy": "flip_rotate", "rotate": 5.0})
    assert custom.families == ["flip", "rotate"] and custom.rotate == 5.0 and custom.scale == DSAConfig().scale
    with pytest.raises(TypeError):
        dsa_config({"nonsense": 1})
