import functools
import subprocess
import sys

import pytest
import torch
from torch import nn

from elf_pipeline.models import UnknownArchitecture, available, build, is_known
from elf_pipeline.models.adapter import FeatureAdapter, make_adapter
from elf_pipeline.models.base import HEAD, StagedNet, make_activation, make_norm, make_pool

COMPOSED = ["convnet-d4-bn", "convnet-w32-maxpool-leakyrelu"]
ALL_NAMES = available() + COMPOSED


def _size(name: str) -> int:
    """ImageNet-stem models shrink 32 px to 1x1 before their last stage (instance norm over one
    value): they are built at 64 px, as for Tiny ImageNet."""
    return 64 if "imagenet" in name else 32


@functools.cache
def _built(name: str, channels: int = 3, size: int = 32) -> StagedNet:
    """Models are read-only in the tests that use this cache (no set_split, no training)."""
    torch.manual_seed(0)
    return build(name, channels, 10, size).eval()


def _x(n=2, channels=3, size=32):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_front_then_rear_equals_forward(name):
    model = _built(name, size=_size(name))
    x = _x(size=_size(name))
    with torch.no_grad():
        full = model(x)
        split = model.rear(model.front(x))
    assert full.shape == (2, 10)
    assert torch.allclose(split, full, atol=1e-6)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_layers_returns_every_stage_but_the_head_in_order(name):
    model = _built(name, size=_size(name))
    x = _x(size=_size(name))
    with torch.no_grad():
        outputs = model.layers(x)
        assert list(outputs) == model.layer_names == [n for n in model.stages if n != HEAD]
        assert HEAD not in outputs
        assert list(model.stages)[-1] == HEAD
        # each entry is its stage applied to the previous one
        previous = x
        for name_, module in model.stages.items():
            if name_ == HEAD:
                break
            assert torch.allclose(outputs[name_], module(previous), atol=1e-6)
            previous = outputs[name_]
        assert torch.allclose(model.stages[HEAD](outputs[model.layer_names[-1]]), model(x), atol=1e-6)
        assert torch.allclose(outputs[model.split], model.front(x), atol=1e-6)


@pytest.mark.parametrize("name, shape", [
    ("convnet", (128, 4, 4)), ("convnet-bn", (128, 4, 4)), ("convnet-w512", (512, 4, 4)),
    ("resnet18", (512, 4, 4)), ("resnet18-bn", (512, 4, 4)), ("vgg11", (512, 4, 4)), ("vgg11-bn", (512, 4, 4)),
])
def test_official_split_shapes_at_32px(name, shape):
    with torch.no_grad():
        assert tuple(_built(name).front(_x()).shape[1:]) == shape


@pytest.mark.parametrize("name, expected", [
    # kuangliu/pytorch-cifar ResNet18 (CIFAR stem, 10 classes): 11,173,962 parameters; instance norm
    # (GroupNorm(C, C) with affine) has as many parameters as batch norm.
    ("resnet18", 11_173_962), ("resnet18-bn", 11_173_962),
    # kuangliu/pytorch-cifar VGG('VGG11') with batch norm and Linear(512, 10): 9,231,114 parameters.
    ("vgg11", 9_231_114), ("vgg11-bn", 9_231_114),
])
def test_parameter_counts_match_the_standard_cifar_models(name, expected):
    assert abs(_params(_built(name)) - expected) <= 0.01 * expected


def test_convnet_parameter_count_from_its_definition():
    # 3 x [conv3x3 (+bias) + instance-norm affine] + linear(128*4*4 -> 10), 3 input channels
    width, expected = 128, 0
    in_channels = 3
    for _ in range(3):
        expected += in_channels * width * 9 + width + 2 * width
        in_channels = width
    expected += width * 4 * 4 * 10 + 10
    assert _params(_built("convnet")) == expected


def test_composed_convnet_names_build_what_they_say():
    deep = build("convnet-d4-bn", 3, 10, 32)
    assert deep.layer_names == ["block1", "block2", "block3", "block4"] and deep.split == "block4"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deep.modules()) == 4
    narrow = build("convnet-w32-maxpool-leakyrelu", 3, 10, 32)
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 32]
    assert sum(isinstance(m, nn.MaxPool2d) for m in narrow.modules()) == 3
    assert sum(isinstance(m, nn.LeakyReLU) for m in narrow.modules()) == 3
    assert not any(isinstance(m, (nn.AvgPool2d, nn.ReLU)) for m in narrow.modules())
    flat = build("convnet-nopool-d2-w8", 1, 4, 8)
    assert tuple(flat.front(torch.zeros(2, 1, 8, 8)).shape) == (2, 8, 8, 8)


@pytest.mark.parametrize("name", ["resnet19", "convnet-w0", "convnet-d9", "convnet-bn-bn", "convnet-w64-w32",
                                  "convnet-xyz", "vgg", ""])
def test_unknown_architecture_lists_known_names(name):
    assert not is_known(name)
    with pytest.raises(UnknownArchitecture) as info:
        build(name, 3, 10, 32)
    message = str(info.value)
    assert repr(name) in message
    for known in available():
        assert known in message
    assert isinstance(info.value, ValueError)


def test_every_available_name_is_known():
    assert all(is_known(name) for name in ALL_NAMES)
    assert len(set(available())) == len(available())


def test_set_split_to_missing_layer_names_it():
    model = build("convnet", 1, 10, 16)
    with pytest.raises(ValueError, match="'block7'.*block1, block2, block3"):
        model.set_split("block7")
    with pytest.raises(ValueError, match="'head'"):
        model.set_split(HEAD)
    with pytest.raises(ValueError, match="'layer9_9'"):
        build("resnet18", 1, 10, 16, split="layer9_9")


@pytest.mark.parametrize("name, layer", [("convnet", "block1"), ("resnet18", "layer2_1"), ("vgg11", "conv2"),
                                         ("alexnet", "conv3")])
def test_moving_the_split_keeps_forward_unchanged(name, layer):
    model = build(name, 1, 10, 32).eval()
    x = _x(channels=1, size=32)
    with torch.no_grad():
        before = model(x)
        model.set_split(layer)
        assert model.split == layer
        features = model.front(x)
        assert torch.allclose(features, model.layers(x)[layer], atol=1e-6)
        assert torch.allclose(model.rear(features), before, atol=1e-6)
    other = build(name, 1, 10, 32, split=layer)
    assert other.split == layer


def test_staged_net_requires_a_head():
    with pytest.raises(ValueError, match="last stage must be named 'head'"):
        StagedNet([("a", nn.Identity()), ("b", nn.Identity())], "a")


def test_building_helpers_reject_unknown_kinds():
    with pytest.raises(ValueError, match="unknown norm 'weird'"):
        make_norm("weird", 4)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        make_activation("tanh")
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        make_pool("median")
    with pytest.raises(ValueError, match="unknown resnet stem"):
        from elf_pipeline.models.resnet import resnet18

        resnet18(3, 10, 32, stem="tiny")
    assert isinstance(make_norm("instance", 8), nn.GroupNorm) and make_norm("instance", 8).num_groups == 8
    assert make_norm("layer", 8).num_groups == 1 and make_norm("group", 8).num_groups == 4


@pytest.mark.parametrize("in_shape, out_shape", [
    ((64, 8, 8), (32, 4, 4)), ((32, 4, 4), (64, 8, 8)), ((128,), (32, 2, 2)), ((32, 2, 2), (128,)), ((10,), (6,)),
])
def test_feature_adapter_maps_shapes_and_learns(in_shape, out_shape):
    adapter = FeatureAdapter(in_shape, out_shape)
    x = torch.randn(3, *in_shape, generator=torch.Generator().manual_seed(0))
    y = adapter(x)
    assert tuple(y.shape) == (3, *out_shape)
    target = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    ((y - target) ** 2).mean().backward()
    params = list(adapter.parameters())
    assert params
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_feature_adapter_spatial_shrink_is_average_pool_of_projection():
    adapter = FeatureAdapter((2, 4, 4), (3, 2, 2))
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        projected = adapter.project(x)
        expected = projected.view(1, 3, 2, 2, 2, 2).mean(dim=(3, 5))
        assert torch.allclose(adapter(x), expected, atol=1e-6)


def test_make_adapter_none_when_shapes_agree():
    assert make_adapter((8, 4, 4), (8, 4, 4)) is None
    assert isinstance(make_adapter((8, 4, 4), (16, 4, 4)), FeatureAdapter)


def test_registry_import_does_not_import_torch():
    code = ("import sys; import elf_pipeline.models.registry as r; "
            "assert r.is_known('convnet-w512'); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, size", [("convnet-d4-nn", 8), ("convnet-d4", 8), ("vgg11", 16), ("alexnet", 4)])
def test_too_small_image_size_is_a_clear_value_error(name, size):
    with pytest.raises(ValueError, match=f"image_size {size} is too small for this architecture"):
        build(name, 1, 10, size)


def test_image_size_an_architecture_cannot_handle_fails_at_build():
    with pytest.raises(ValueError, match="architecture 'resnet18-imagenet' cannot run on 32x32 images"):
        build("resnet18-imagenet", 1, 10, 32)


# --------------------------------------------------------------------------- the official Tiny ImageNet students

# Lirui-Zhao/ELF networks.py at 64 px: ResNet18ImageNet_L4 returns layer3's output (256x4x4) as its
# feature, VGG11ImageNet_L6 the output of its 6th conv and that conv's max-pool (512x4x4), and
# ConvNetD4_L4 its 4th block (128x4x4); each equals its pool teacher's depth-4 ConvNet feature.
TINY_STUDENTS = {"convnet-d4": "convnet-d4", "convnet-d4-bn": "convnet-d4",
                 "resnet18-imagenet-l4": "convnet-w256-d4", "resnet18-bn-imagenet-l4": "convnet-w256-d4",
                 "vgg11-imagenet-l6": "convnet-w512-d4", "vgg11-bn-imagenet-l6": "convnet-w512-d4"}


@pytest.mark.parametrize("name, teacher", TINY_STUDENTS.items())
def test_tiny_imagenet_students_split_where_their_teacher_feature_has_the_same_shape(name, teacher):
    student, reference = _built(name, size=64), _built(teacher, size=64)
    x = _x(size=64)
    with torch.no_grad():
        assert student.front(x).shape == reference.front(x).shape
        assert torch.allclose(student.rear(student.front(x)), student(x), atol=1e-5)


def test_the_imagenet_students_are_the_imagenet_stem_and_mlp_variants():
    resnet, cifar_resnet = _built("resnet18-imagenet-l4", size=64), _built("resnet18", size=64)
    assert resnet.split == "layer3_1" and cifar_resnet.split == "layer4_0"
    assert resnet.layer_names == cifar_resnet.layer_names  # same stages, another split
    assert resnet.stages["stem"][0].kernel_size == (7, 7) and isinstance(resnet.stages["stem"][-1], nn.MaxPool2d)
    assert _params(resnet) == _params(_built("resnet18-imagenet", size=64))  # only the split differs
    vgg = _built("vgg11-imagenet-l6", size=64)
    linears = [m for m in vgg.stages[HEAD].modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512 * 2 * 2, 4096), (4096, 4096), (4096, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in vgg.stages[HEAD].modules()) == 2
    assert isinstance(_built("vgg11-bn-imagenet-l6", size=64).stages["conv1"][1], nn.BatchNorm2d)
    # dropout is active in training: two training-mode passes differ, eval-mode passes do not
    torch.manual_seed(0)
    vgg_train = build("vgg11-imagenet-l6", 3, 10, 64).train()
    x = _x(size=64)
    assert not torch.allclose(vgg_train(x), vgg_train(x))


def _runs_on(name: str, channels: int, size: int) -> bool:
    """Instance-norm ImageNet stems reach 1x1 maps below 40 px; VGG11 needs more than 28 px."""
    too_small_stem = "imagenet" in name and "-bn" not in name and size < 40
    return not too_small_stem and not (name.startswith("vgg11") and size < 32)


@pytest.mark.parametrize("name, channels, size", [
    (name, channels, size) for name in [*ALL_NAMES, "convnet-d4", "convnet-w256-d4", "convnet-nopool-d2"]
    for channels, size in [(3, 32), (3, 64), (1, 28), (3, 40)] if _runs_on(name, channels, size)])
def test_torch_free_shapes_and_splits_equal_the_built_models(name, channels, size):
    from elf_pipeline.models.registry import default_split
    from elf_pipeline.models.shapes import feature_shape, layer_shapes

    model = build(name, channels, 10, size).eval()
    with torch.no_grad():
        built = {layer: tuple(value.shape[1:]) for layer, value in model.layers(torch.zeros(1, channels, size, size)).items()}
    assert layer_shapes(name, channels, size) == built
    assert default_split(name) == model.split
    assert feature_shape(name, channels, size) == built[model.split]
