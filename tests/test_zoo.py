"""The architecture zoo at the image sizes of the DD literature (28, 32, 64 px): stage shapes, the
split identity, registry layer names without a build, and which sizes each family supports."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from elf_pipeline.models import build
from elf_pipeline.models.adapter import FeatureAdapter
from elf_pipeline.models.base import HEAD
from elf_pipeline.models.registry import UnknownArchitecture, available, layer_names, resolve, torchvision_names

ZOO = available() + ["convnet-w1024-d1", "convnet-w32-d4-gn-sigmoid-maxpool", "convnet-d2-ln-leakyrelu-nopool"]
SIZES = (28, 32, 64)
# VGG11 pools five times: at 28 px the fourth pool leaves 1x1 and the fifth nothing. The ImageNet
# stem divides by 32: below 64 px ResNet18's last stage is 1x1, and instance norm over one value
# is refused (batch norm, which normalises over the batch, still runs).
TOO_SMALL = {("vgg11", 28), ("vgg11-bn", 28), ("resnet18-imagenet", 28), ("resnet18-imagenet", 32),
             ("vgg11-imagenet-l6", 28), ("vgg11-bn-imagenet-l6", 28), ("resnet18-imagenet-l4", 28),
             ("resnet18-imagenet-l4", 32)}


def _x(size: int, channels: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(size))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ZOO)
def test_every_stage_shape_and_the_split_identity(name, size):
    channels = 1 if size == 28 else 3
    if (name, size) in TOO_SMALL:
        with pytest.raises(ValueError, match=f"image_size {size} is too small|cannot run on {size}x{size} images"):
            build(name, channels, 10, size)
        return
    torch.manual_seed(0)
    model = build(name, channels, 10, size).eval()
    x = _x(size, channels)
    with torch.no_grad():
        outputs = model.layers(x)
        front = model.front(x)
        logits = model(x)
        assert logits.shape == (2, 10)
        assert torch.allclose(model.rear(front), logits, atol=1e-5)
        assert torch.equal(front, outputs[model.split])
        # every layer is a valid split: moving it keeps forward unchanged (checked at 32 px)
        for layer in model.layer_names if size == 32 else []:
            model.set_split(layer)
            assert torch.allclose(model.rear(model.front(x)), logits, atol=1e-5), layer
    assert list(outputs) == model.layer_names == layer_names(name)
    assert all(value.shape[0] == 2 and value.numel() > 0 for value in outputs.values())


@pytest.mark.parametrize("name, split, shape", [
    ("lenet", "conv2", (16, 5, 5)), ("mlp", "fc2", (128,)), ("alexnet-in", "conv5", (192, 4, 4)),
    ("vgg11", "conv5", (512, 4, 4)), ("resnet18", "layer4_0", (512, 4, 4)), ("convnet-w512", "block3", (512, 4, 4)),
])
def test_default_splits_at_32px(name, split, shape):
    model = build(name, 3, 10, 32).eval()
    assert model.split == split
    with torch.no_grad():
        assert tuple(model.front(_x(32, 3)).shape[1:]) == shape


def test_vgg11_at_64px_has_a_larger_classifier_input_and_an_8x8_split():
    small, large = build("vgg11", 3, 10, 32), build("vgg11", 3, 10, 64)
    assert large.stages[HEAD][1].in_features == 512 * 2 * 2 and small.stages[HEAD][1].in_features == 512
    with torch.no_grad():
        assert tuple(large.eval().front(_x(64, 3)).shape[1:]) == (512, 8, 8)
    assert _params(large) - _params(small) == 512 * 3 * 10


def test_lenet_and_mlp_parameter_counts_are_the_reference_ones():
    # LeNet-5 on grey images, 10 classes: the classic 61,706 parameters. The DD reference pads the
    # first conv for 1-channel data, so 28 px MNIST reaches the same 16x5x5 as 32 px RGB.
    assert _params(build("lenet", 1, 10, 28)) == 61_706
    assert _params(build("lenet", 3, 10, 32)) == 61_706 + 2 * 6 * 25  # two more input channels in conv1
    # MLP: 784 -> 128 -> 128 -> 10
    assert _params(build("mlp", 1, 10, 28)) == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_instance_norm_variants_differ_only_in_normalisation():
    plain, instance = build("alexnet", 3, 10, 32), build("alexnet-in", 3, 10, 32)
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())
    norms = [m for m in instance.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 5 and all(m.num_groups == m.num_channels for m in norms)
    convs = lambda model: [(m.in_channels, m.out_channels, m.kernel_size) for m in model.modules() if isinstance(m, nn.Conv2d)]  # noqa: E731
    assert convs(plain) == convs(instance)


def test_flat_stages_meet_spatial_teacher_features_through_a_linear_adapter():
    student = build("mlp", 1, 10, 28)
    adapter = FeatureAdapter((128,), (8, 4, 4))
    back = FeatureAdapter((8, 4, 4), (128,))
    features = student.front(_x(28, 1))
    mapped = adapter(features)
    assert mapped.shape == (2, 8, 4, 4) and not adapter.spatial
    assert back(mapped).shape == (2, 128)
    mapped.square().mean().backward()
    front_parameters = [p for name, p in student.named_parameters() if not name.startswith(f"stages.{HEAD}.")]
    assert front_parameters and all(p.grad is not None and p.grad.abs().sum() > 0 for p in front_parameters)
    assert all(p.grad is not None for p in adapter.parameters())


def test_torchvision_names_are_known_without_layer_names():
    assert "tv-mobilenet_v2" in torchvision_names() and "tv-vit_tiny" in torchvision_names()
    for name in torchvision_names():
        assert resolve(name)[0] == "tv" and layer_names(name) is None
    with pytest.raises(UnknownArchitecture, match="unknown torchvision architecture 'tv-mobilenet_v9'.*tv-mobilenet_v2"):
        resolve("tv-mobilenet_v9")
    with pytest.raises(UnknownArchitecture, match="tv-<torchvision model>"):
        resolve("mobilenet_v2")


def test_registry_stays_torch_free_for_every_family():
    code = ("import sys; import elf_pipeline.models.registry as r; "
            "assert r.layer_names('mlp') == ['fc1', 'fc2'] and r.layer_names('tv-resnet18') is None; "
            "assert r.is_known('tv-vit_tiny') and r.is_known('alexnet-in') and r.is_known('lenet'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
